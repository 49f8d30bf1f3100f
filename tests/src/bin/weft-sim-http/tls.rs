//! `serve --tls-cert/--tls-key [--client-ca]`: the rustls server config,
//! and what a TLS connection tells the JSON body (SNI, ALPN, the client's
//! certificate).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

/// The ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What the TLS handshake of one connection established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<String>,
    /// The client's certificate, as [`describe`] puts it.
    pub client_cert: Option<String>,
}

// === impl TlsInfo ===

impl TlsInfo {
    pub fn of(conn: &ServerConnection) -> TlsInfo {
        TlsInfo {
            sni: conn.server_name().map(str::to_string),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            client_cert: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(describe),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor serving `cert` (a PEM chain, leaf first) with `key`;
/// with `client_ca`, a client certificate is required and must chain to
/// one of its certificates.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(path)? {
                roots
                    .add(ca)
                    .with_context(|| format!("a CA certificate in {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the server certificate and key")?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("parsing {}", path.display()))?
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}

/// A certificate as `SUBJECT` or `SUBJECT; SAN, SAN…`: the subject as
/// RFC 4514 text (`CN=client, O=weft`), each subject alternative name as
/// `DNS:name`, `URI:uri`, `IP:address` or `email:address`.
pub fn describe(der: &CertificateDer<'_>) -> String {
    let cert = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert,
        Err(e) => return format!("(unparsable certificate: {e})"),
    };
    let subject = cert.subject().to_string();
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().map(san).collect(),
        _ => Vec::new(),
    };
    if sans.is_empty() {
        subject
    } else {
        format!("{subject}; {}", sans.join(", "))
    }
}

fn san(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(s) => format!("DNS:{s}"),
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::RFC822Name(s) => format!("email:{s}"),
        GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => format!("IP:{}", IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => format!("IP:{}", IpAddr::from(v6)),
                Err(_) => format!("{name}"),
            },
        },
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    #[test]
    fn certificates_are_described_by_subject_and_sans() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["client.weft.test".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "egress-client");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "weft");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let text = describe(cert.der());
        assert!(text.starts_with("CN=egress-client"), "{text}");
        assert!(text.contains("O=weft"), "{text}");
        assert!(
            text.ends_with(
                "; DNS:client.weft.test, URI:spiffe://cluster.local/ns/a/sa/b, IP:10.0.0.1"
            ),
            "{text}"
        );

        let bare = CertificateParams::default().self_signed(&key).unwrap();
        assert_eq!(describe(bare.der()), "CN=rcgen self signed cert");
    }
}
