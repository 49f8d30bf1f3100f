//! HBONE in-process, over real TLS on loopback: a CONNECT stream carries
//! bytes both ways between two plain TCP connections; each side verifies the
//! other's SPIFFE identity; a server presenting the wrong identity and a
//! client from another CA are refused; a failed stream is judged safe or
//! unsafe to send again. No root needed.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    RootCertStore,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_agent::{
    identity::{WorkloadCert, tls},
    proxy::{hbone, limits::Progress},
    state::Identity,
};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        Arc::new(roots)
    }

    fn issue(&self, identity: &Identity) -> WorkloadCert {
        self.issue_with(identity, |_| {})
    }

    fn issue_with(
        &self,
        identity: &Identity,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> WorkloadCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        adjust(&mut params);
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        WorkloadCert {
            identity: identity.clone(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            issued_at: SystemTime::now(),
            not_after: SystemTime::now() + std::time::Duration::from_secs(3600),
        }
    }
}

fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/demo/sa/{sa}")
        .parse()
        .unwrap()
}

/// An HBONE server on loopback for one connection: checks the client's
/// identity, answers CONNECT by splicing to an echo app.
struct Server {
    /// Where it listens (the "15008").
    hbone: SocketAddr,
    /// The echo app, the target to CONNECT to.
    app: SocketAddr,
    /// Yields the client identity it saw, or why it refused.
    done: tokio::task::JoinHandle<Result<Identity, String>>,
}

async fn hbone_server(cert: WorkloadCert, roots: Arc<RootCertStore>) -> Server {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut app, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = app.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let config = tls::server_config(&cert, roots).unwrap();
        let tls_stream = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let client = tls::peer_identity(tls_stream.get_ref().1).map_err(|e| e.to_string())?;
        let mut h2 = hbone::server_builder()
            .handshake(tls_stream)
            .await
            .map_err(|e| e.to_string())?;
        let (request, mut respond) = h2.accept().await.unwrap().map_err(|e| e.to_string())?;
        assert_eq!(request.method(), http::Method::CONNECT);
        assert_eq!(
            request.uri().authority().unwrap().as_str(),
            echo_addr.to_string()
        );
        let app = TcpStream::connect(echo_addr).await.unwrap();
        let send = respond
            .send_response(
                http::Response::builder().status(200).body(()).unwrap(),
                false,
            )
            .unwrap();
        tokio::spawn(async move { while h2.accept().await.is_some() {} });
        hbone::splice(
            app,
            hbone::H2Stream {
                send,
                recv: request.into_body(),
                lease: None,
            },
            &Progress::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(client)
    });
    Server {
        hbone: addr,
        app: echo_addr,
        done: handle,
    }
}

/// TLS from a client workload to the server, expecting `expected`.
async fn client_tunnel(
    server: SocketAddr,
    cert: &WorkloadCert,
    roots: Arc<RootCertStore>,
    expected: Identity,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let config = tls::client_config(cert, roots, expected).unwrap();
    let tcp = TcpStream::connect(server).await?;
    TlsConnector::from(config)
        .connect(ServerName::IpAddress(server.ip().into()), tcp)
        .await
}

#[tokio::test]
async fn bytes_sent_ahead_of_the_answer_arrive_first_and_in_order() {
    let ca = Ca::new("mesh");
    let (server_id, client_id) = (id("server"), id("client"));
    let server = hbone_server(ca.issue(&server_id), ca.roots()).await;
    let tls_stream = client_tunnel(server.hbone, &ca.issue(&client_id), ca.roots(), server_id)
        .await
        .unwrap();
    let send_request = hbone::client_handshake(tls_stream).await.unwrap();

    // The app's first bytes go right behind the CONNECT, before the 200.
    let mut opening = hbone::open(send_request, server.app, http::HeaderMap::new())
        .await
        .unwrap();
    opening
        .send_early(bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n"))
        .unwrap();
    let tunnel = opening.established().await.unwrap();

    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = TcpStream::connect(local.local_addr().unwrap())
        .await
        .unwrap();
    let (proxied, _) = local.accept().await.unwrap();
    let splice =
        tokio::spawn(async move { hbone::splice(proxied, tunnel, &Progress::default()).await });
    app.write_all(b"host: server\r\n\r\n").await.unwrap();
    app.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    app.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"GET / HTTP/1.1\r\nhost: server\r\n\r\n");
    splice.await.unwrap().unwrap();
    assert_eq!(server.done.await.unwrap().unwrap(), client_id);
}

#[tokio::test]
async fn connect_stream_carries_bytes_both_ways_between_verified_identities() {
    let ca = Ca::new("mesh");
    let (server_id, client_id) = (id("server"), id("client"));
    let server = hbone_server(ca.issue(&server_id), ca.roots()).await;
    let client_cert = ca.issue(&client_id);

    let tls_stream = client_tunnel(server.hbone, &client_cert, ca.roots(), server_id)
        .await
        .unwrap();
    let send_request = hbone::client_handshake(tls_stream).await.unwrap();
    let tunnel = hbone::connect(send_request, server.app, http::HeaderMap::new())
        .await
        .unwrap();

    // The "app" side of the client: a local TCP pair spliced into the tunnel.
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = TcpStream::connect(local.local_addr().unwrap())
        .await
        .unwrap();
    let (proxied, _) = local.accept().await.unwrap();
    let splice =
        tokio::spawn(async move { hbone::splice(proxied, tunnel, &Progress::default()).await });

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    app.write_all(&payload).await.unwrap();
    app.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    app.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");
    let (sent, received) = splice.await.unwrap().unwrap();
    assert_eq!(
        (sent, received),
        (payload.len() as u64, payload.len() as u64)
    );
    assert_eq!(
        server.done.await.unwrap().unwrap(),
        client_id,
        "server saw the client's SPIFFE ID"
    );
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let ca = Ca::new("mesh");
    let server = hbone_server(ca.issue(&id("impostor")), ca.roots()).await;
    let err = client_tunnel(
        server.hbone,
        &ca.issue(&id("client")),
        ca.roots(),
        id("server"),
    )
    .await
    .expect_err("the client must refuse a server with the wrong identity");
    let text = err.to_string();
    assert!(
        text.contains("peer presented spiffe://cluster.local/ns/demo/sa/impostor")
            && text.contains("sa/server"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_from_another_ca_is_refused() {
    let mesh = Ca::new("mesh");
    let other = Ca::new("other");
    let server_id = id("server");
    let server = hbone_server(mesh.issue(&server_id), mesh.roots()).await;
    // The outsider trusts the mesh's root, but its own cert is from another
    // CA. TLS 1.3 lets the client finish its side of the handshake before
    // the server has judged its certificate: the refusal shows on first use.
    let target = server.app;
    let result = async {
        let tls_stream = client_tunnel(
            server.hbone,
            &other.issue(&id("client")),
            mesh.roots(),
            server_id,
        )
        .await?;
        let send_request = hbone::client_handshake(tls_stream)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        hbone::connect(send_request, target, http::HeaderMap::new())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
    .await;
    let server_side = server.done.await.unwrap();
    let refusal = server_side.expect_err("the server accepted a client of another CA");
    assert!(
        refusal.contains("UnknownIssuer") || refusal.contains("issuer"),
        "{refusal}"
    );
    assert!(result.is_err(), "the client's CONNECT should fail");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_with_the_reason() {
    let ca = Ca::new("mesh");
    let server_id = id("server");
    let server = hbone_server(ca.issue(&server_id), ca.roots()).await;
    let expired = ca.issue_with(&id("client"), |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
    });
    let target = server.app;
    let _ = async {
        let tls_stream = client_tunnel(server.hbone, &expired, ca.roots(), server_id).await?;
        let send_request = hbone::client_handshake(tls_stream)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        hbone::connect(send_request, target, http::HeaderMap::new())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
    .await;
    let refusal = server
        .done
        .await
        .unwrap()
        .expect_err("an expired certificate was accepted");
    assert!(
        refusal.contains("certificate expired"),
        "the reason should say the certificate expired: {refusal}"
    );
}

/// How [`stream_failing_server`] ends the one CONNECT it accepts.
#[derive(Clone, Copy)]
enum Ending {
    /// `RST_STREAM(REFUSED_STREAM)`: the peer promises it did nothing with it.
    RefuseStream,
    /// The connection just goes away after the stream arrived.
    DropConnection,
}

/// An HTTP/2 server that accepts one CONNECT and fails it as `ending` says.
/// Plain TCP, no TLS: what is under test is how the client judges the
/// failure (whether the stream may be sent again elsewhere, early bytes
/// included).
async fn stream_failing_server(ending: Ending) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut h2 = hbone::server_builder()
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let (_request, mut respond) = h2.accept().await.unwrap().unwrap();
        match ending {
            Ending::RefuseStream => {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                while h2.accept().await.is_some() {}
            }
            Ending::DropConnection => drop((h2, respond)),
        }
    });
    addr
}

async fn fail_a_stream_with_early_bytes(ending: Ending) -> hbone::HboneError {
    let server = stream_failing_server(ending).await;
    let tcp = TcpStream::connect(server).await.unwrap();
    let send_request = hbone::client_handshake(tcp).await.unwrap();
    let target: SocketAddr = "10.0.0.1:8080".parse().unwrap();
    let mut opening = hbone::open(send_request, target, http::HeaderMap::new())
        .await
        .unwrap();
    opening
        .send_early(bytes::Bytes::from_static(b"POST /pay HTTP/1.1\r\n"))
        .unwrap();
    match opening.established().await {
        Ok(_) => panic!("the server failed the stream, yet it was established"),
        Err(err) => err,
    }
}

#[tokio::test]
async fn a_refused_stream_may_be_sent_again_but_one_lost_with_its_connection_may_not() {
    let refused = fail_a_stream_with_early_bytes(Ending::RefuseStream).await;
    assert!(
        refused.unprocessed(),
        "REFUSED_STREAM promises the peer did nothing: {refused}"
    );
    let lost = fail_a_stream_with_early_bytes(Ending::DropConnection).await;
    assert!(
        !lost.unprocessed(),
        "a stream lost with its connection may have reached the app; replaying its bytes could repeat a request: {lost}"
    );
}
