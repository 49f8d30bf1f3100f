//! Misbehaving HBONE peers against a real node agent: no client
//! certificate, a certificate of another trust domain, a SPIFFE ID that is
//! not the one of the workload at the peer's address, a CONNECT to an
//! address that is not the pod's. Each is refused, logged and counted, and
//! the agent keeps serving everyone else. The hostile client runs in a
//! pod's network namespace (so it has that pod's IP) and uses certificates
//! minted with the cluster's own CA key, which a test can read.
//! And well-behaved HBONE peers that weft did not write (Python's ssl and
//! the `h2` package, `tests/peers/`) work with it both ways, so that
//! framing, headers and TLS settings are checked against another
//! implementation. And hostile HTTP at an HTTP port: tokens of every bad
//! shape, key servers that hang or send garbage or too much, and path
//! tricks against path rules. Needs root, the built binaries and `h2`
//! (installed by `cargo xtask setup`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, ensure};
use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use weft_agent::{
    identity::{WorkloadCert, tls},
    proxy::hbone,
    state::Identity,
};
use weft_sim::{Cluster, Node, Pod, PodSpec, ServicePort, wait_for};

mod common;

use common::{AMBIENT, TIMEOUT};

/// Mints workload certificates with the cluster's CA.
struct Minter {
    issuer: Issuer<'static, KeyPair>,
    roots: Arc<RootCertStore>,
}

impl Minter {
    fn new(cluster: &Cluster) -> Result<Self> {
        let dir = cluster.control().state_dir();
        let cert = std::fs::read_to_string(dir.join("root-cert.pem"))?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("root-key.pem"))?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)?;
        let mut roots = RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
            .context("root PEM")?;
        roots.add(der)?;
        Ok(Self {
            issuer,
            roots: Arc::new(roots),
        })
    }

    /// A certificate for `spiffe_id` and its key, PEM.
    fn mint_pem(&self, spiffe_id: &str) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn mint(&self, spiffe_id: &str) -> Result<WorkloadCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(WorkloadCert {
            identity: spiffe_id.parse().unwrap_or_else(|_| Identity {
                trust_domain: "unparsed".into(),
                namespace: "-".into(),
                service_account: "-".into(),
            }),
            chain: vec![CertificateDer::from(cert.der().to_vec())],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            issued_at: std::time::SystemTime::now(),
            not_after: std::time::SystemTime::now() + Duration::from_secs(3600),
        })
    }
}

/// Opens TLS from `from`'s netns to the server's 15008 and asks for
/// CONNECT `target`; returns how it went, as text.
async fn try_connect(
    from: &Pod,
    server: &Pod,
    config: Arc<ClientConfig>,
    target: SocketAddr,
) -> String {
    let hbone_addr = SocketAddr::new(server.ip().into(), 15008);
    let tcp = match from.tcp_connect(hbone_addr, Duration::from_secs(3)) {
        Ok(tcp) => tcp,
        Err(err) => return format!("tcp: {err:#}"),
    };
    tcp.set_nonblocking(true).expect("nonblocking");
    let tcp = tokio::net::TcpStream::from_std(tcp).expect("tokio stream");
    let server_name = ServerName::IpAddress(std::net::IpAddr::from(server.ip()).into());
    let tls_stream = match tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
    {
        Ok(s) => s,
        Err(err) => return format!("tls: {err}"),
    };
    let send_request = match hbone::client_handshake(tls_stream).await {
        Ok(s) => s,
        Err(err) => return format!("h2: {err}"),
    };
    match hbone::connect(send_request, target, http::HeaderMap::new()).await {
        Ok(_) => "connected".to_string(),
        Err(err) => format!("connect: {err}"),
    }
}

fn denials(node: &Node, reason: &str) -> Result<u64> {
    let stats = node.admin_json("/stats")?;
    Ok(stats["connections_denied"][reason].as_u64().unwrap_or(0))
}

/// The refusal may be counted a moment after the peer saw it.
fn counted(node: &Node, reason: &str, at_least: u64) -> Result<()> {
    wait_for(
        &format!("the {reason} counter to reach {at_least}"),
        TIMEOUT,
        || Ok((denials(node, reason)? >= at_least).then_some(())),
    )
}

/// Namespace `secure` in the mesh, with `server` (node-2, port 8080) and
/// `client` (node-1).
fn server_and_client(cluster: &Cluster) -> Result<(Pod, Pod)> {
    cluster.add_namespace("secure", &[AMBIENT])?;
    let server = cluster.add_pod(
        PodSpec::new("node-2", "secure", "server")
            .service_account("server")
            .port("http", 8080),
    )?;
    let client =
        cluster.add_pod(PodSpec::new("node-1", "secure", "client").service_account("client"))?;
    Ok((server, client))
}

#[test]
fn hostile_hbone_peers_are_refused_logged_and_counted() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (server, client) = server_and_client(cluster)?;
        let intruder = cluster
            .add_pod(PodSpec::new("node-1", "secure", "intruder").service_account("intruder"))?;
        let _app = server.spawn_app(&["http-server", "--port", "8080", "--quiet", "true"])?;
        let url = format!("http://{}/", server.addr(8080));
        let healthy = || -> Result<()> {
            wait_for("the legitimate client to be served", TIMEOUT, || {
                Ok(client
                    .run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?
                    .success()
                    .then_some(()))
            })
        };
        healthy()?;

        let minter = Minter::new(cluster)?;
        let node = cluster.node("node-2")?;
        let target = server.addr(8080);
        let server_id: Identity = "spiffe://cluster.local/ns/secure/sa/server".parse()?;
        let runtime = tokio::runtime::Runtime::new()?;
        let attempt = |cert: &WorkloadCert, connect_to: SocketAddr| -> Result<String> {
            let config = tls::client_config(cert, minter.roots.clone(), server_id.clone())?;
            Ok(runtime.block_on(try_connect(&intruder, &server, config, connect_to)))
        };

        // 1. No client certificate at all.
        let no_cert = ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(minter.roots.clone())
            .with_no_client_auth();
        let mut no_cert = no_cert;
        no_cert.alpn_protocols = vec![b"h2".to_vec()];
        let before = denials(node, "tls_handshake")?;
        let outcome = runtime.block_on(try_connect(&intruder, &server, Arc::new(no_cert), target));
        ensure!(
            outcome != "connected",
            "a peer without a certificate got through"
        );
        counted(node, "tls_handshake", before + 1)?;

        // 2. A certificate for another trust domain (signed by the mesh CA).
        let foreign = minter.mint("spiffe://evil.example/ns/secure/sa/server")?;
        let outcome = attempt(&foreign, target)?;
        ensure!(outcome != "connected", "another trust domain got through");
        counted(node, "foreign_trust_domain", 1)?;

        // 3. The client's identity, used from the intruder's address.
        let stolen = minter.mint("spiffe://cluster.local/ns/secure/sa/client")?;
        let outcome = attempt(&stolen, target)?;
        ensure!(
            outcome != "connected",
            "a SPIFFE ID from the wrong address got through"
        );
        counted(node, "identity_mismatch", 1)?;

        // 4. The intruder's own identity, CONNECT to an address that is not
        //    the pod's.
        let own = minter.mint("spiffe://cluster.local/ns/secure/sa/intruder")?;
        let elsewhere = SocketAddr::new(client.ip().into(), 8080);
        let outcome = attempt(&own, elsewhere)?;
        ensure!(
            outcome.contains("400"),
            "a CONNECT to a foreign address should get 400: {outcome}"
        );
        counted(node, "bad_target", 1)?;
        // ... while its own identity to the right address is fine.
        ensure!(
            attempt(&own, target)? == "connected",
            "the intruder's legitimate CONNECT failed"
        );

        let needles = ["HBONE connection refused", "evil.example", "does not serve"];
        weft_sim::wait_for("the refusals in the agent's log", TIMEOUT, || {
            let log = node.agent_log_tail(400);
            Ok(needles.iter().all(|n| log.contains(n)).then_some(()))
        })
        .with_context(|| node.agent_log_tail(400))?;
        ensure!(node.agent_pid().is_some(), "the agent died");
        healthy()
    })
}

/// How a connection held by a peer that never speaks ended.
fn ending(stream: &mut std::net::TcpStream, within: Duration) -> &'static str {
    use std::io::Read as _;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => "closed",
        Ok(_) => "answered",
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "open"
        }
        Err(_) => "reset",
    }
}

fn timeouts(node: &Node, stage: &str) -> Result<u64> {
    let stats = node.admin_json("/stats")?;
    Ok(stats["timeouts"][stage].as_u64().unwrap_or(0))
}

/// A peer that opens connections to 15008 and never starts its TLS
/// handshake: past `--max-handshakes-per-source` its connections are
/// closed at once, the ones it holds are closed when
/// `--handshake-timeout` runs out, both are counted, and a well-behaved
/// client from another address is served meanwhile within its 3 s bound.
#[test]
fn a_slow_handshake_flood_is_cut_and_does_not_slow_others() -> Result<()> {
    const HELD: usize = 20;
    const FLOOD: usize = 60;
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&[
            "--handshake-timeout",
            "3s",
            "--max-handshakes-per-source",
            "20",
        ])
        .build()?;
    cluster.with_logs(|cluster| {
        let (server, client) = server_and_client(cluster)?;
        let flooder = cluster
            .add_pod(PodSpec::new("node-1", "secure", "flooder").service_account("flooder"))?;
        let _app = server.spawn_app(&["http-server", "--port", "8080", "--quiet", "true"])?;
        let url = format!("http://{}/", server.addr(8080));
        let served = || -> Result<bool> {
            Ok(client
                .run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?
                .success())
        };
        wait_for("the client to be served", TIMEOUT, || {
            Ok(served()?.then_some(()))
        })?;
        let node = cluster.node("node-2")?;
        let refused_before = denials(node, "handshake_limit")?;
        let cut_before = timeouts(node, "handshake")?;

        // The flood: connections that never send a byte, outside the
        // flooder's cgroup (not captured), from its address.
        let hbone = SocketAddr::new(server.ip().into(), 15008);
        let mut flood = (0..FLOOD)
            .map(|_| flooder.tcp_connect(hbone, Duration::from_secs(3)))
            .collect::<Result<Vec<_>>>()?;
        // Past the limit: closed at once.
        let over: Vec<&str> = flood[HELD..]
            .iter_mut()
            .map(|s| ending(s, Duration::from_secs(2)))
            .collect();
        ensure!(
            over.iter().all(|e| *e != "open" && *e != "answered"),
            "connections past the per-source limit were kept: {over:?}"
        );
        counted(
            node,
            "handshake_limit",
            refused_before + (FLOOD - HELD) as u64,
        )?;
        // Meanwhile another client is served, within http-get's 3 s.
        for _ in 0..3 {
            ensure!(served()?, "the client was not served during the flood");
        }
        // The held ones: closed when their handshake time runs out.
        let held: Vec<&str> = flood[..HELD]
            .iter_mut()
            .map(|s| ending(s, Duration::from_secs(10)))
            .collect();
        ensure!(
            held.iter().all(|e| *e == "closed" || *e == "reset"),
            "silent handshakes were not cut: {held:?}"
        );
        wait_for("the handshake timeouts to be counted", TIMEOUT, || {
            Ok((timeouts(node, "handshake")? >= cut_before + HELD as u64).then_some(()))
        })?;
        // The flooder's slots are free again: it may try once more.
        let mut again = flooder.tcp_connect(hbone, Duration::from_secs(3))?;
        ensure!(
            ending(&mut again, Duration::from_millis(500)) == "open",
            "a new connection from the flooder was refused after its slots freed"
        );
        ensure!(node.agent_pid().is_some(), "the agent died");
        ensure!(served()?, "the client was not served after the flood");
        Ok(())
    })
}

/// Python's ssl and the h2 package, in the client pod's network namespace
/// (its IP) but outside its cgroup (not captured), speak HBONE to the
/// server pod's agent with the client's certificate: TLS 1.3, the server's
/// SPIFFE ID, one CONNECT stream, an HTTP request through it. The app
/// sees the client pod's IP.
#[test]
fn an_hbone_client_weft_did_not_write_is_served() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (server, client) = server_and_client(cluster)?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        let url = format!("http://{}/", server.addr(8080));
        wait_for(
            "the server to be reachable through the mesh",
            TIMEOUT,
            || {
                Ok(client
                    .run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?
                    .success()
                    .then_some(()))
            },
        )?;

        let minter = Minter::new(cluster)?;
        let (cert, key) = minter.mint_pem("spiffe://cluster.local/ns/secure/sa/client")?;
        let dir = cluster.dir().join("python-peer");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), cert)?;
        std::fs::write(dir.join("key.pem"), key)?;
        let ca = cluster.control().state_dir().join("root-cert.pem");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/hbone_client.py");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", client.netns().name(), "python3", script])
            .args(["--addr", &format!("{}:15008", server.ip())])
            .args(["--target", &server.addr(8080).to_string()])
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .arg("--ca")
            .arg(&ca)
            .args(["--server-id", "spiffe://cluster.local/ns/secure/sa/server"])
            .output()
            .context("running python3 (cargo xtask setup installs its h2 package)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "the Python HBONE client failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        ensure!(stdout.contains("tls: TLSv1.3"), "{stdout}");
        ensure!(stdout.contains("HTTP/1.1 200"), "{stdout}");
        ensure!(
            stdout.contains(&format!("hello from server to {}:", client.ip())),
            "the app did not see the client pod's IP:\n{stdout}"
        );
        Ok(())
    })
}

/// Kills the child on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The other direction: weft's agent as the HBONE client of a server weft
/// did not write (Python's ssl and h2, `tests/peers/hbone_server.py`).
/// The destination pod is in the mesh for the control plane but no agent
/// holds its 15008 (it ran before weft and has no process for the agent
/// to find), so the Python server answers there with the pod's
/// certificate. It checks weft's client certificate and reports the
/// CONNECT authority and the `forwarded` header weft sent.
#[test]
fn weft_is_served_by_an_hbone_server_it_did_not_write() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("secure", &[AMBIENT])?;
        let client = cluster
            .add_pod(PodSpec::new("node-1", "secure", "client").service_account("client"))?;
        let python = cluster.add_pod(
            PodSpec::new("node-2", "secure", "python")
                .service_account("python")
                .port("http", 8080)
                .before_weft(),
        )?;

        let minter = Minter::new(cluster)?;
        let (cert, key) = minter.mint_pem("spiffe://cluster.local/ns/secure/sa/python")?;
        let dir = cluster.dir().join("python-server");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), cert)?;
        std::fs::write(dir.join("key.pem"), key)?;
        let log = dir.join("server.log");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/hbone_server.py");
        let _server = Killed(
            std::process::Command::new("ip")
                .args(["netns", "exec", python.netns().name(), "python3", script])
                .args(["--listen", &format!("{}:15008", python.ip())])
                .arg("--cert")
                .arg(dir.join("cert.pem"))
                .arg("--key")
                .arg(dir.join("key.pem"))
                .arg("--ca")
                .arg(cluster.control().state_dir().join("root-cert.pem"))
                .stdout(std::fs::File::create(&log)?)
                .stderr(std::fs::File::create(dir.join("server.err"))?)
                .spawn()
                .context("running python3 (cargo xtask setup installs its h2 package)")?,
        );
        let server_log = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for("the Python HBONE server to listen", TIMEOUT, || {
            Ok(server_log().contains("listening on").then_some(()))
        })
        .with_context(|| std::fs::read_to_string(dir.join("server.err")).unwrap_or_default())?;

        let url = format!("http://{}/", python.addr(8080));
        let out = wait_for(
            "a request through weft to the Python server",
            TIMEOUT,
            || {
                let out = client.run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?;
                Ok(out.success().then_some(out.stdout))
            },
        )
        .with_context(|| {
            format!(
                "server log:\n{}\n{}",
                server_log(),
                std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
            )
        })?;
        ensure!(
            out.contains("hello from python to spiffe://cluster.local/ns/secure/sa/client"),
            "the Python server did not see the client's identity:\n{out}"
        );
        ensure!(
            out.contains(&format!("authority={}", python.addr(8080))),
            "{out}"
        );
        ensure!(
            out.contains(&format!("forwarded=for=\"{}:", client.ip())),
            "weft's forwarded header does not name the client:\n{out}"
        );
        ensure!(out.contains("request=GET / HTTP/1.1"), "{out}");
        Ok(())
    })
}

#[test]
fn hostile_tokens_key_servers_and_paths_get_nowhere_at_an_http_port() -> Result<()> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use common::{apply, backend, client};
    use weft_sim::{ServicePort, httpapp};

    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--jwks-refresh", "1s"])
        .build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("shop", &[AMBIENT])?;
        cluster.add_namespace("keys", &[])?;
        // Key servers that never answer, answer 2 MiB, answer garbage.
        let keys = cluster.add_pod(PodSpec::new("node-1", "keys", "idp"))?;
        let dir = cluster.dir().join("hostile-jwks");
        std::fs::create_dir_all(&dir)?;
        let huge = dir.join("huge.json");
        std::fs::write(&huge, format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(2 << 20)))?;
        let garbage = dir.join("garbage.json");
        std::fs::write(&garbage, "\u{0}not json at all")?;
        let (huge_route, garbage_route) = (
            format!("/jwks.json={}", huge.display()),
            format!("/jwks.json={}", garbage.display()),
        );
        let _hang = keys.spawn_http(&["serve", "--port", "8081", "--delay-ms", "600000"])?;
        let _huge = keys.spawn_http(&["serve", "--port", "8082", "--file", &huge_route])?;
        let _garbage = keys.spawn_http(&["serve", "--port", "8083", "--file", &garbage_route])?;

        let _api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "shop", "web")?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let rule = |name: &str, port: u16| {
            format!(
                "  - issuer: https://{name}.test\n    jwksUri: http://{}:{port}/jwks.json\n",
                keys.ip()
            )
        };
        apply(
            cluster,
            "jwt",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  jwtRules:\n{}{}{}",
                rule("hang", 8081),
                rule("huge", 8082),
                rule("garbage", 8083)
            ),
        )?;
        apply(
            cluster,
            "paths",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: api-only\n  namespace: shop\nspec:\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n        paths: [\"/api/*\"]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: no-admin\n  namespace: shop\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/admin*\"]\n",
        )?;
        let base = format!("http://{vip}:8080");
        // Requests without a token never wait for a key server.
        let get = |path: &str, token: Option<&str>| -> Result<httpapp::Reply> {
            let header = token.map(|t| format!("Authorization: Bearer {t}"));
            let mut args = vec!["--timeout", "3"];
            args.extend(header.iter().flat_map(|h| ["--header", h.as_str()]));
            httpapp::get_one(&web, &format!("{base}{path}"), &args)
        };
        common::converge("the policies reached node-2", || {
            Ok(get("/api/admin", None)?.status == 403)
        })?;
        ensure!(get("/api/items", None)?.status == 200, "a request without a token");

        // Path tricks: normalised before the rules see them, or refused.
        for (path, want) in [
            ("/api/../api/admin", 403),
            ("/api/%2e%2e/api/admin", 403),
            ("/api//admin", 403),
            ("/api/%61dmin", 403),
            ("/api/./admin/x", 403),
            ("/api%2Fadmin", 400),
            ("/api/x%2F..%2Fadmin", 400),
            ("/api\\admin", 403),
            ("/API/items", 403),
            ("/api/items/../../admin", 403),
        ] {
            let status = get(path, None)?.status;
            ensure!(status == want, "{path}: {status}, want {want}");
        }

        // Tokens of every bad shape: 401, and the agent carries on.
        let segment = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let header = segment(br#"{"alg":"ES256","kid":"k"}"#);
        let nested = format!("{{\"iss\":\"https://garbage.test\",\"x\":{}1{}}}", "[".repeat(20_000), "]".repeat(20_000));
        let tokens = [
            ("not a token", "not-a-jwt".to_string()),
            ("not base64", "!!!.@@@.###".to_string()),
            ("not JSON", format!("{}.{}.{}", segment(b"hello"), segment(b"world"), segment(b"sig"))),
            ("deeply nested claims", format!("{header}.{}.{}", segment(nested.as_bytes()), segment(b"sig"))),
            ("60 KiB", format!("{header}.{}.{}", "A".repeat(60 << 10), segment(b"sig"))),
            ("a key server that hangs", format!("{header}.{}.{}", segment(br#"{"iss":"https://hang.test","sub":"a"}"#), segment(b"sig"))),
            ("a key server that sends 2 MiB", format!("{header}.{}.{}", segment(br#"{"iss":"https://huge.test","sub":"a"}"#), segment(b"sig"))),
            ("a key server that sends garbage", format!("{header}.{}.{}", segment(br#"{"iss":"https://garbage.test","sub":"a"}"#), segment(b"sig"))),
        ];
        for (what, token) in &tokens {
            let reply = get("/api/items", Some(token))?;
            ensure!(reply.status == 401, "{what}: {} {}", reply.status, reply.body);
        }
        // A 1 MiB header is refused before any proxy reads a token (431),
        // as Envoy's 60 KiB header limit does.
        let huge_token = dir.join("huge-token");
        std::fs::write(&huge_token, format!("Bearer {}", "A".repeat(1 << 20)))?;
        let header = format!("Authorization: @{}", huge_token.display());
        let status = httpapp::get_one(&web, &format!("{base}/api/items"), &["--header", &header])?.status;
        ensure!(status == 431, "a 1 MiB token: {status}");

        let node = cluster.node("node-2")?;
        ensure!(node.agent_pid().is_some(), "the agent died:\n{}", node.agent_log_tail(40));
        ensure!(get("/api/items", None)?.status == 200, "served after all that");
        let stats = node.admin_json("/stats")?;
        let counted = &stats["http_requests_authorized"];
        ensure!(
            counted["unauthenticated"].as_u64().unwrap_or(0) >= tokens.len() as u64
                && counted["bad_path"].as_u64().unwrap_or(0) >= 2,
            "not counted: {stats}"
        );
        Ok(())
    })
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--idle-timeout", "2s"])
        .build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("secure", &[AMBIENT])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "secure", "server")
                .service_account("server")
                .port("tcp-echo", 7000),
        )?;
        let client = cluster
            .add_pod(PodSpec::new("node-1", "secure", "client").service_account("client"))?;
        let _echo = server.spawn_app(&["tcp-echo", "--port", "7000"])?;
        let target = server.addr(7000).to_string();
        wait_for("the echo server to answer", TIMEOUT, || {
            let out = client.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
            Ok((out.success() && out.stdout.contains("hello")).then_some(()))
        })?;
        let idle_before: u64 = cluster
            .nodes()
            .iter()
            .map(|n| timeouts(n, "idle"))
            .sum::<Result<u64>>()?;
        // One connection silent for 5 s between two pings; one pinging
        // every 250 ms for 6 s.
        let mut quiet =
            client.spawn_app(&["tcp-ping", &target, "--count", "2", "--interval-ms", "5000"])?;
        let mut busy =
            client.spawn_app(&["tcp-ping", &target, "--count", "24", "--interval-ms", "250"])?;
        let status = busy.wait_exit(TIMEOUT)?;
        ensure!(
            status.success(),
            "a busy connection was cut ({status}):\n{}",
            busy.log_tail(10)
        );
        let status = quiet.wait_exit(TIMEOUT)?;
        let log = quiet.log();
        ensure!(
            !status.success() && log.contains("ping 0 ok"),
            "a connection silent for 5 s outlived a 2 s idle timeout ({status}):\n{log}"
        );
        let idle_after: u64 = cluster
            .nodes()
            .iter()
            .map(|n| timeouts(n, "idle"))
            .sum::<Result<u64>>()?;
        ensure!(
            idle_after > idle_before,
            "no idle timeout counted ({idle_before} before, {idle_after} after)"
        );

        // HTTP, through the L7 proxies: a keep-alive connection that
        // carries no request for 5 s is closed (the client sends its next
        // GET on a new one, as HTTP clients do); one with a request every
        // 250 ms is kept.
        let _web = common::backend(
            cluster,
            "node-2",
            "secure",
            "web",
            &[("app", "web")],
            8080,
            &[],
        )?;
        let vip = cluster.add_service(
            "secure",
            "web",
            &[("app", "web")],
            &[ServicePort::http("http", 80, 8080)],
        )?;
        let url = format!("http://{vip}/idle");
        wait_for("the web service to answer", TIMEOUT, || {
            Ok(client
                .run_app(&["http-get", &url], TIMEOUT)?
                .success()
                .then_some(()))
        })?;
        let done = cluster.dir().join("http-idle-done");
        let done = done.display().to_string();
        let mut quiet = client.spawn_app(&[
            "http-keepalive",
            &url,
            "--until-file",
            &done,
            "--interval-ms",
            "5000",
        ])?;
        let mut busy = client.spawn_app(&[
            "http-keepalive",
            &url,
            "--until-file",
            &done,
            "--interval-ms",
            "250",
        ])?;
        std::thread::sleep(Duration::from_secs(6));
        std::fs::write(&done, "")?;
        let summary = |process: &mut weft_sim::Process, what: &str| -> Result<String> {
            let status = process.wait_exit(TIMEOUT)?;
            let log = process.log();
            ensure!(status.success(), "{what} failed ({status}):\n{log}");
            Ok(log.lines().last().unwrap_or_default().to_string())
        };
        let busy = summary(&mut busy, "the busy HTTP client")?;
        ensure!(
            busy.contains("on 1 connections, 0 failed"),
            "a busy HTTP connection was closed: {busy}"
        );
        let quiet = summary(&mut quiet, "the quiet HTTP client")?;
        ensure!(
            quiet.contains("2 requests on 2 connections, 0 failed"),
            "an HTTP connection idle for 5 s outlived a 2 s idle timeout: {quiet}"
        );
        Ok(())
    })
}
