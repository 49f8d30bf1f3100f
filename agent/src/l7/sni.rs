//! The server name (SNI) of a TLS ClientHello, read without consuming it,
//! for VirtualService `tls` routes.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long to wait for the client's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest hello looked at (one TLS record).
const MAX_HELLO: usize = 16 * 1024 + 5;

/// Peeks at the first bytes the client sent (waiting briefly for them)
/// and returns the SNI if they are a TLS ClientHello that carries one.
pub async fn peek_sni(stream: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; MAX_HELLO];
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        match parse(&buf[..n]) {
            Parsed::Sni(name) => return Some(name),
            Parsed::NoSni => return None,
            // The record is not all here yet: wait for more bytes.
            Parsed::Incomplete if n < buf.len() => {
                tokio::time::timeout_at(deadline, stream.readable())
                    .await
                    .ok()?
                    .ok()?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Parsed::Incomplete => return None,
        }
    }
}

/// What the first bytes of a connection say about its SNI.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A ClientHello with this server name (lower-cased).
    Sni(String),
    /// Not TLS, or a hello without a host name.
    NoSni,
    /// The record is not all here yet.
    Incomplete,
}

/// A reader over a byte slice that fails (returns `None`) past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// Reads the SNI of a TLS ClientHello from the first bytes a client sent
/// (one record, which may not all be here yet). Pure; public for the
/// fuzz target (`fuzz/fuzz_targets/http.rs`).
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut record = Reader(bytes);
    let Some(header) = record.take(5) else {
        return Parsed::Incomplete;
    };
    // A handshake record.
    if header[0] != 0x16 || header[1] != 0x03 {
        return Parsed::NoSni;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = record.take(len) else {
        return Parsed::Incomplete;
    };
    hello_sni(body).map_or(Parsed::NoSni, Parsed::Sni)
}

fn hello_sni(body: &[u8]) -> Option<String> {
    let mut r = Reader(body);
    // ClientHello.
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut hello = Reader(r.take(len)?);
    hello.take(2 + 32)?; // version, random
    let session = hello.u8()?;
    hello.take(session)?;
    let suites = hello.u16()?;
    hello.take(suites)?;
    let compression = hello.u8()?;
    hello.take(compression)?;
    let extensions = hello.u16()?;
    let mut extensions = Reader(hello.take(extensions)?);
    while let Some(kind) = extensions.u16() {
        let len = extensions.u16()?;
        let data = extensions.take(len)?;
        if kind != 0 {
            continue;
        }
        // server_name: a list of (type, name); type 0 is a host name.
        let mut list = Reader(data);
        let list_len = list.u16()?;
        let mut names = Reader(list.take(list_len)?);
        while let Some(name_type) = names.u8() {
            let len = names.u16()?;
            let name = names.take(len)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello from rustls for `name`.
    fn hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(std::iter::empty());
        let config = rustls::ClientConfig::builder_with_provider(crate::identity::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name() {
        let bytes = hello("API.example.com");
        assert_eq!(parse(&bytes), Parsed::Sni("api.example.com".into()));
        assert_eq!(parse(&bytes[..bytes.len() - 1]), Parsed::Incomplete);
        assert_eq!(parse(&bytes[..3]), Parsed::Incomplete);
    }

    #[test]
    fn not_tls_or_no_name() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Parsed::NoSni);
        // An IP address is not sent as SNI.
        let bytes = hello("10.0.0.1");
        assert_eq!(parse(&bytes), Parsed::NoSni);
        // Truncated inner lengths never panic.
        let mut bad = hello("x.example");
        bad[9] = 0xff;
        let _ = parse(&bad);
    }
}
