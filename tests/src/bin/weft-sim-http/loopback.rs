//! `serve` and the clients against each other on loopback, in process.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::conn::{self, RequestSpec, Target};
use crate::faults::Faults;
use crate::headers::parse_header;
use crate::serve::{self, App};
use crate::{Cli, Command};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server named `loop-1` on an ephemeral loopback port; its address.
async fn server() -> String {
    serve_on_loopback(None).await
}

/// [`server`], over TLS if `tls` is given.
async fn serve_on_loopback(tls: Option<tokio_rustls::TlsAcceptor>) -> String {
    serve_app(app("loop-1"), tls).await
}

/// A server named `name`, without faults.
fn app(name: &str) -> App {
    let faults = Faults::new(
        Duration::ZERO,
        None,
        0.0,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    App::new(name.into(), faults, false).unwrap()
}

/// Serves `app` on an ephemeral loopback port; its address.
async fn serve_app(app: App, tls: Option<tokio_rustls::TlsAcceptor>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve::accept(listener, Arc::new(app), tls));
    addr
}

/// Runs a client subcommand as the command line would.
async fn run(args: &[&str]) -> ExitCode {
    let cli = <Cli as clap::Parser>::try_parse_from(
        std::iter::once("weft-sim-http").chain(args.iter().copied()),
    )
    .unwrap();
    let result = match cli.command {
        Command::Get(a) => crate::get::run(a).await,
        Command::Load(a) => crate::load::run(a).await,
        Command::GrpcCall(a) => crate::grpc_call::run(a).await,
        Command::Ws(a) => crate::ws::run(a).await,
        Command::Serve(_) | Command::AuthzServer(_) | Command::OtlpReceiver(_) => {
            panic!("not a client")
        }
    };
    result.unwrap_or_else(|e| panic!("{args:?}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2_on_one_port() {
    let addr = server().await;
    let target = Target::parse(&format!("http://{addr}/seen?q=1")).unwrap();
    for h2 in [false, true] {
        let headers = [
            parse_header("x-a: 1").unwrap(),
            parse_header("x-a: 2").unwrap(),
            parse_header("host: web.demo:80").unwrap(),
        ];
        let spec = RequestSpec::new(Method::POST, &target, &headers, "abc".into(), h2).unwrap();
        let mut c = conn::connect(&target.addr, h2, TIMEOUT).await.unwrap();
        for _ in 0..2 {
            let answer = conn::exchange(&mut c, spec.build(), 1 << 16).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.headers["x-served-by"], "loop-1");
            assert_eq!(answer.headers["content-type"], "application/json");
            let seen: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(seen["server"], "loop-1");
            assert_eq!(seen["method"], "POST");
            assert_eq!(seen["path"], "/seen?q=1");
            assert_eq!(seen["authority"], "web.demo:80");
            assert_eq!(seen["version"], if h2 { "HTTP/2" } else { "HTTP/1.1" });
            assert_eq!(seen["headers"]["x-a"], "1, 2");
            assert_eq!(seen["body_bytes"], 3);
            assert!(seen["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert_eq!(seen["tls"], false);
            assert_eq!(seen["sni"], Value::Null);
            assert_eq!(seen["alpn"], Value::Null);
            assert_eq!(seen["client_cert"], Value::Null);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_paths() {
    let addr = server().await;
    for (path, status, len) in [
        ("/status/503", 503, None),
        ("/status/204", 204, Some(0)),
        ("/bytes/100000", 200, Some(100_000)),
        ("/echo", 200, Some(4)),
    ] {
        let target = Target::parse(&format!("http://{addr}{path}")).unwrap();
        let spec = RequestSpec::new(Method::PUT, &target, &[], Bytes::from("ping"), true).unwrap();
        let mut c = conn::connect(&target.addr, true, TIMEOUT).await.unwrap();
        let answer = conn::exchange(&mut c, spec.build(), 1 << 20).await.unwrap();
        assert_eq!(answer.status.as_u16(), status, "{path}");
        if let Some(len) = len {
            assert_eq!(answer.body.len(), len, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_exit_codes() {
    let addr = server().await;
    let url = format!("http://{addr}/");
    let ok = ExitCode::SUCCESS;
    assert_eq!(run(&["get", &url, "--count", "2"]).await, ok);
    assert_eq!(
        run(&["get", &format!("{url}status/500"), "--h2", "true"]).await,
        ok
    );
    assert_eq!(
        run(&["load", &url, "--count", "40", "--concurrency", "4"]).await,
        ok
    );
    assert_eq!(
        run(&[
            "load",
            &url,
            "--count",
            "40",
            "--concurrency",
            "4",
            "--connections",
            "1",
            "--h2",
            "true"
        ])
        .await,
        ok
    );
    assert_eq!(
        run(&["ws", &addr, "--message", "hi", "--count", "3"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "unary", "--count", "2"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "chat", "--count", "5"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "fail", "--code", "7"]).await,
        ExitCode::from(3)
    );
}

/// `load`'s summary for `args`.
async fn load(args: &[&str]) -> crate::load::Summary {
    let cli = <Cli as clap::Parser>::try_parse_from(
        ["weft-sim-http", "load"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .unwrap();
    let Command::Load(args) = cli.command else {
        unreachable!()
    };
    crate::load::measure(args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_spreads_over_workers_and_connections() {
    let addr = server().await;
    let url = format!("http://{addr}/");
    let s = load(&[&url, "--count", "41", "--concurrency", "4"]).await;
    assert_eq!((s.sent, s.ok, s.errors, s.connections), (41, 41, 0, 4));
    assert_eq!(s.status["200"], 41);
    assert_eq!(s.served_by["loop-1"], 41);
    let s = load(&[
        &url,
        "--count",
        "40",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--h2",
        "true",
    ])
    .await;
    assert_eq!((s.ok, s.errors, s.connections), (40, 0, 2));
    let s = load(&[&url, "--count", "10", "--concurrency", "2", "--rate", "100"]).await;
    assert_eq!(s.ok, 10);
    assert!(
        s.duration_ms >= 80,
        "10 requests at 100/s took {} ms",
        s.duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_errors_not_panics() {
    // A port nobody listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let url = format!("http://{addr}/");
    assert_eq!(
        run(&["load", &url, "--count", "3"]).await,
        ExitCode::from(2)
    );
    let get = <Cli as clap::Parser>::try_parse_from(["weft-sim-http", "get", &url]).unwrap();
    let Command::Get(args) = get.command else {
        unreachable!()
    };
    let err = crate::get::run(args).await.unwrap_err();
    assert!(format!("{err:#}").contains("connecting to"), "{err:#}");
}

/// One HTTP/1.1 GET of `url` with `headers`: the status, `x-served-by`
/// and the JSON body.
async fn get_json(url: &str, headers: &[&str]) -> (u16, String, Value) {
    let target = Target::parse(url).unwrap();
    let headers: Vec<_> = headers.iter().map(|h| parse_header(h).unwrap()).collect();
    let spec = RequestSpec::new(Method::GET, &target, &headers, Bytes::new(), false).unwrap();
    let mut c = conn::connect(&target.addr, false, TIMEOUT).await.unwrap();
    let answer = conn::exchange(&mut c, spec.build(), 1 << 20).await.unwrap();
    assert_eq!(answer.headers["content-type"], "application/json");
    let served_by = answer.headers["x-served-by"].to_str().unwrap().to_string();
    let body = serde_json::from_slice(&answer.body).unwrap();
    (answer.status.as_u16(), served_by, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_carries_the_trace_context_on() {
    let upstream = server().await;
    let target = |path: &str| Some(Target::parse(&format!("http://{upstream}{path}")).unwrap());
    let caller = serve_app(app("front-1").with_call(target("/seen?x=1")), None).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, served_by, body) = get_json(
        &format!("http://{caller}/call"),
        &[
            &format!("traceparent: {traceparent}"),
            "x-b3-sampled: 1",
            "baggage: a=1",
            "x-other: no",
        ],
    )
    .await;
    assert_eq!((status, served_by.as_str()), (200, "front-1"), "{body}");
    assert_eq!(body["server"], "front-1", "{body}");
    assert_eq!(body["upstream_status"], 200, "{body}");
    let seen = &body["upstream"];
    assert_eq!(seen["server"], "loop-1", "{body}");
    assert_eq!(seen["path"], "/seen?x=1", "{body}");
    assert_eq!(seen["authority"], upstream, "{body}");
    assert_eq!(seen["headers"]["traceparent"], traceparent, "{body}");
    assert_eq!(seen["headers"]["x-b3-sampled"], "1", "{body}");
    assert_eq!(seen["headers"]["baggage"], "a=1", "{body}");
    assert_eq!(seen["headers"].get("x-other"), None, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

    // Other paths are served as usual.
    let (status, _, body) = get_json(&format!("http://{caller}/other"), &[]).await;
    assert_eq!((status, &body["server"]), (200, &Value::from("front-1")));
    assert_eq!(body["path"], "/other");

    // The upstream's status, and its body as text when it is not JSON.
    let caller = serve_app(app("front-2").with_call(target("/status/503")), None).await;
    let (status, _, body) = get_json(&format!("http://{caller}/call"), &[]).await;
    assert_eq!((status, &body["upstream_status"]), (503, &Value::from(503)));
    assert_eq!(body["upstream"]["server"], "loop-1");
    let caller = serve_app(app("front-3").with_call(target("/bytes/3")), None).await;
    let (status, _, body) = get_json(&format!("http://{caller}/call"), &[]).await;
    assert_eq!((status, &body["upstream"]), (200, &Value::from("xxx")));

    // Nobody there: 502.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = Target::parse(&format!("http://{gone}/")).unwrap();
    let caller = serve_app(app("front-4").with_call(Some(dead)), None).await;
    let (status, served_by, body) = get_json(&format!("http://{caller}/call"), &[]).await;
    assert_eq!((status, served_by.as_str()), (502, "front-4"), "{body}");
    assert_eq!(body["server"], "front-4", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("connecting to"),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    // Without --call, /call is any other path.
    let (status, _, body) = get_json(&format!("http://{upstream}/call"), &[]).await;
    assert_eq!((status, &body["path"]), (200, &Value::from("/call")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receiver_prints_the_spans_exported_to_it() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use crate::otlp_receiver::tests::{request, span};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let printed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let out = printed.clone();
    tokio::spawn(crate::otlp_receiver::serve(listener, move |line: &str| {
        out.lock().unwrap().push(line.to_string());
        Ok(())
    }));
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let child = Span {
        span_id: vec![0xcd; 8],
        parent_span_id: vec![0xab; 8],
        name: "child".into(),
        ..span()
    };
    let reply = client
        .export(request(vec![span(), child]))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.partial_success.is_none());
    let printed = printed.lock().unwrap().clone();
    assert_eq!(printed.len(), 2, "{printed:?}");
    let spans: Vec<Value> = printed
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(spans[0]["trace_id"], "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(spans[0]["parent_span_id"], "");
    assert_eq!(spans[1]["parent_span_id"], "abababababababab");
    assert_eq!(spans[1]["name"], "child");
    assert_eq!(spans[1]["service"], "web.shop");
}

/// A test CA, and certificates it signs, written as PEM files.
mod pki {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    pub struct Ca {
        pub cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A leaf for `dns` with common name `cn`: (certificate, key) PEM.
        pub fn leaf(&self, cn: &str, dns: &str) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    /// A fresh directory for one test's files.
    pub fn dir(test: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "weft-sim-http-{test}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// One request over TLS to `addr`, as server name `sni`, offering `alpn`,
/// with a client certificate if given; the JSON the server sent back.
async fn get_over_tls(
    addr: &str,
    ca_pem: &str,
    sni: &str,
    alpn: &[&[u8]],
    client: Option<(&str, &str)>,
) -> anyhow::Result<Value> {
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::{http1, http2};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::ServerName;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<_, _>>()?,
            rustls_pemfile::private_key(&mut key.as_bytes())?.unwrap(),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string())?, tcp)
        .await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let request = |version| {
        http::Request::builder()
            .uri(format!("https://{sni}/tls"))
            .version(version)
            .header("host", sni)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let response = if h2 {
        let (mut send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let mut req = request(http::Version::HTTP_2);
        req.headers_mut().remove("host");
        send.send_request(req).await?
    } else {
        let (mut send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        let mut req = request(http::Version::HTTP_11);
        *req.uri_mut() = "/tls".parse()?;
        send.send_request(req).await?
    };
    anyhow::ensure!(response.status() == StatusCode::OK, "{response:?}");
    let body = response.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_reports_sni_and_alpn() {
    let dir = pki::dir("tls");
    let ca = pki::Ca::new("test CA");
    let (cert, key) = ca.leaf("api", "api.example.com");
    let acceptor = crate::tls::acceptor(
        &pki::write(&dir, "cert.pem", &cert),
        &pki::write(&dir, "key.pem", &key),
        None,
    )
    .unwrap();
    let addr = serve_on_loopback(Some(acceptor)).await;
    const H1: &[u8] = b"http/1.1";
    const H2: &[u8] = b"h2";
    let offers: [(&[&[u8]], Value, &str); 3] = [
        (&[H1], Value::from("http/1.1"), "HTTP/1.1"),
        (&[H2, H1], Value::from("h2"), "HTTP/2"),
        (&[], Value::Null, "HTTP/1.1"),
    ];
    for (alpn, agreed, version) in offers {
        let seen = get_over_tls(&addr, &ca.cert_pem, "api.example.com", alpn, None)
            .await
            .unwrap();
        assert_eq!(seen["tls"], true, "{seen}");
        assert_eq!(seen["sni"], "api.example.com", "{seen}");
        assert_eq!(seen["alpn"], agreed, "{seen}");
        assert_eq!(seen["version"], version, "{seen}");
        assert_eq!(seen["client_cert"], Value::Null, "{seen}");
        assert_eq!(seen["path"], "/tls", "{seen}");
    }
    // The cleartext protocols are not served on a TLS port.
    let url = format!("http://{addr}/");
    assert_eq!(
        run(&["load", &url, "--count", "1", "--timeout", "2"]).await,
        ExitCode::from(2)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_ca_requires_and_reports_a_client_certificate() {
    let dir = pki::dir("mtls");
    let server_ca = pki::Ca::new("server CA");
    let client_ca = pki::Ca::new("client CA");
    let other_ca = pki::Ca::new("other CA");
    let (cert, key) = server_ca.leaf("api", "api.example.com");
    let acceptor = crate::tls::acceptor(
        &pki::write(&dir, "cert.pem", &cert),
        &pki::write(&dir, "key.pem", &key),
        Some(&pki::write(&dir, "client-ca.pem", &client_ca.cert_pem)),
    )
    .unwrap();
    let addr = serve_on_loopback(Some(acceptor)).await;
    let (client_cert, client_key) = client_ca.leaf("egress-client", "client.weft.test");
    let seen = get_over_tls(
        &addr,
        &server_ca.cert_pem,
        "api.example.com",
        &[b"http/1.1"],
        Some((&client_cert, &client_key)),
    )
    .await
    .unwrap();
    assert_eq!(
        seen["client_cert"], "CN=egress-client; DNS:client.weft.test",
        "{seen}"
    );
    // No certificate, or one from another CA: no handshake, no request.
    let (stranger_cert, stranger_key) = other_ca.leaf("stranger", "client.weft.test");
    for client in [None, Some((&stranger_cert[..], &stranger_key[..]))] {
        let refused = get_over_tls(
            &addr,
            &server_ca.cert_pem,
            "api.example.com",
            &[b"http/1.1"],
            client,
        )
        .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
