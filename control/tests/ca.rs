//! The CA over real TLS gRPC: identities only for pods on the caller's
//! node, chains that verify to the trust bundle, generated and given CAs.

mod common;

use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, UnixTime},
    server::WebPkiClientVerifier,
};
use tonic::Code;
use weft_control::{CaSource, Config};
use x509_parser::{extensions::GeneralName, prelude::*};

const WEB_ID: &str = "spiffe://cluster.local/ns/mesh/sa/web";

async fn started() -> ControlPlane {
    ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("pods.yaml", &pod("a", "node-1", "web", "10.1.0.1")),
    ])
    .await
}

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .unwrap()
}

/// Verifies `chain` (leaf first, root last) against the PEM trust bundle
/// as a client certificate, the way HBONE peers do.
fn verify(chain: &[String], bundle: &str) {
    let mut roots = RootCertStore::empty();
    roots.add(der(bundle)).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let intermediates: Vec<_> = chain[1..chain.len() - 1].iter().map(|p| der(p)).collect();
    verifier
        .verify_client_cert(&der(&chain[0]), &intermediates, UnixTime::now())
        .expect("the chain verifies to the trust bundle");
}

/// Checks the leaf: only the URI SAN, not a CA, the right usages.
fn check_leaf(pem: &str, uri: &str) {
    let der = der(pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, vec![GeneralName::URI(uri)]);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    // 1 h requested, plus the clock-skew backdate.
    assert!((3600..=3600 + 600).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn pod_on_callers_node_gets_a_verifying_chain() {
    let cp = started().await;
    let bundle = std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap();
    assert_eq!(
        cp.handle.trust_bundle_path(),
        cp.state_dir.path().join("trust-bundle.pem")
    );
    let mut ca = cp.ca_client(&cp.token("node-1")).await;
    let chain = ca
        .create_certificate(ca_request(WEB_ID, Some(WEB_ID)))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], bundle, "root last");
    check_leaf(&chain[0], WEB_ID);
    verify(&chain, &bundle);

    // Without ImpersonatedIdentity, the CSR alone names the identity.
    let chain = ca
        .create_certificate(ca_request(WEB_ID, None))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    check_leaf(&chain[0], WEB_ID);
}

#[tokio::test]
async fn pod_on_another_node_is_permission_denied() {
    let cp = started().await;
    let mut ca = cp.ca_client(&cp.token("node-2")).await;
    let err = ca
        .create_certificate(ca_request(WEB_ID, Some(WEB_ID)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("node `node-2`"), "{err:?}");
    assert!(err.message().contains("service account `web`"), "{err:?}");

    // Same node, an identity no pod there has.
    let mut ca = cp.ca_client(&cp.token("node-1")).await;
    let other = "spiffe://cluster.local/ns/mesh/sa/admin";
    let err = ca
        .create_certificate(ca_request(other, Some(other)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A pod scheduled there later: allowed once the config reloads.
    cp.write("more.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    let mut ca = cp.ca_client(&cp.token("node-2")).await;
    eventually("node-2 to be allowed after the reload", || {
        let mut ca = ca.clone();
        async move { ca.create_certificate(ca_request(WEB_ID, None)).await.ok() }
    })
    .await;
    let _ = ca
        .create_certificate(ca_request(WEB_ID, None))
        .await
        .unwrap();
}

#[tokio::test]
async fn refuses_wrong_trust_domain_mismatch_and_bad_tokens() {
    let cp = started().await;
    let mut ca = cp.ca_client(&cp.token("node-1")).await;

    let foreign = "spiffe://evil.local/ns/mesh/sa/web";
    let err = ca
        .create_certificate(ca_request(foreign, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("trust domain"), "{err:?}");

    let err = ca
        .create_certificate(ca_request(
            WEB_ID,
            Some("spiffe://cluster.local/ns/mesh/sa/other"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("ImpersonatedIdentity"), "{err:?}");

    let mut garbage = ca_request(WEB_ID, None);
    garbage.csr = "not a csr".into();
    let err = ca.create_certificate(garbage).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let forged = cp.token("node-2").replace("node-2.", "node-1.");
    let mut ca = cp.ca_client(&forged).await;
    let err = ca
        .create_certificate(ca_request(WEB_ID, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn generated_root_and_secret_survive_a_restart() {
    let cp = started().await;
    let bundle = std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap();
    let token = cp.token("node-1");
    let root_cert = cp.state_dir.path().join("root-cert.pem");
    assert_eq!(std::fs::read_to_string(&root_cert).unwrap(), bundle);
    let root_der = der(&bundle);
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    assert!(root.is_ca());
    assert!(
        root.subject().to_string().contains("CN=weft root CA"),
        "{}",
        root.subject()
    );
    assert!(
        root.subject().to_string().contains("O=cluster.local"),
        "{}",
        root.subject()
    );

    let ControlPlane {
        handle,
        config_dir,
        state_dir,
    } = cp;
    handle.shutdown().await;
    let config = Config::for_tests(config_dir.path(), state_dir.path());
    let cp = ControlPlane::start_with(config, config_dir, state_dir).await;
    assert_eq!(
        std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap(),
        bundle
    );
    let mut ca = cp.ca_client(&token).await;
    let chain = ca
        .create_certificate(ca_request(WEB_ID, None))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    verify(&chain, &bundle);
}

#[tokio::test]
async fn given_intermediate_ca_with_chain() {
    // An operator's root and intermediate, Istio "plugin CA" style.
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "corp root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let mut inter_params = CertificateParams::default();
    inter_params
        .distinguished_name
        .push(DnType::CommonName, "weft intermediate");
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let inter = inter_params
        .signed_by(&inter_key, &Issuer::new(root_params, &root_key))
        .unwrap();

    let certs = tempfile::tempdir().unwrap();
    let path = |n: &str| certs.path().join(n);
    std::fs::write(path("ca-cert.pem"), inter.pem()).unwrap();
    std::fs::write(path("ca-key.pem"), inter_key.serialize_pem()).unwrap();
    std::fs::write(
        path("cert-chain.pem"),
        format!("{}{}", inter.pem(), root.pem()),
    )
    .unwrap();

    let config_dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    write(
        config_dir.path(),
        "all.yaml",
        &format!("{MESH_NS}---\n{}", pod("a", "node-1", "web", "10.1.0.1")),
    );
    let config = Config {
        ca: CaSource::Files {
            cert: path("ca-cert.pem"),
            key: path("ca-key.pem"),
            chain: Some(path("cert-chain.pem")),
        },
        ..Config::for_tests(config_dir.path(), state_dir.path())
    };
    // The agent's channel verifies the serving certificate through the
    // intermediate to the root in the bundle.
    let cp = ControlPlane::start_with(config, config_dir, state_dir).await;
    let bundle = std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap();
    assert_eq!(bundle, root.pem());
    assert!(!cp.state_dir.path().join("root-key.pem").exists());

    let mut ca = cp.ca_client(&cp.token("node-1")).await;
    let chain = ca
        .create_certificate(ca_request(WEB_ID, Some(WEB_ID)))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[1], inter.pem());
    assert_eq!(chain[2], root.pem());
    check_leaf(&chain[0], WEB_ID);
    verify(&chain, &bundle);
}

/// Istio's clients (ztunnel) take every certificate of the answer's last
/// entry as a trust root: during a rotation it carries both roots, so a
/// ztunnel trusts peers on either, as weft's agents do from the bundle.
#[tokio::test]
async fn during_a_root_rotation_the_answer_ends_with_every_trusted_root() {
    let other_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "the other root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let other = params.self_signed(&other_key).unwrap();

    let config_dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    write(config_dir.path(), "ns.yaml", MESH_NS);
    write(
        config_dir.path(),
        "pods.yaml",
        &pod("a", "node-1", "web", "10.1.0.1"),
    );
    let extra = state_dir.path().join("old-root.pem");
    std::fs::write(&extra, other.pem()).unwrap();
    let config = Config {
        extra_trust_roots: Some(extra),
        ..Config::for_tests(config_dir.path(), state_dir.path())
    };
    let cp = ControlPlane::start_with(config, config_dir, state_dir).await;
    let bundle = std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap();

    let chain = cp
        .ca_client(&cp.token("node-1"))
        .await
        .create_certificate(ca_request(WEB_ID, None))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2, "leaf, then the roots");
    check_leaf(&chain[0], WEB_ID);
    let roots: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain[1].as_bytes())
        .map(Result::unwrap)
        .collect();
    assert_eq!(roots.len(), 2, "{}", chain[1]);
    assert_eq!(roots[0], der(&bundle), "the CA's own root first");
    assert_eq!(roots[1], der(&other.pem()), "then the other root");
    verify(&chain, &bundle);
}
