//! Egress TLS origination end to end on a 2-node simulated cluster with
//! weft's real binaries, as Istio's: an app in the mesh speaks plain HTTP
//! to a ServiceEntry host outside the mesh, and its node proxy speaks
//! HTTPS to the host's endpoint, as the host's DestinationRule says
//! (`tls.mode` SIMPLE or MUTUAL, the CA to verify the server with, the
//! client certificate, SNI, `insecureSkipVerify`). A failed handshake is
//! Envoy's 503 with `UF`. On a TCP port the app's bytes go in the TLS the
//! rule originates, as Envoy's TCP proxy sends them. A ServiceEntry with
//! `resolution: NONE` sends both to the address the app dialed, under the
//! same rule. The servers are `weft-sim-http serve --tls-cert`
//! pods in a namespace outside the mesh, with certificates from CAs this
//! test makes. Needs root and the binaries (`cargo xtask test` builds
//! them).

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use weft_sim::{Cluster, Packets, Pod, httpapp};

/// The ServiceEntries' addresses: class E, routed nowhere in the cluster
/// (the app's `connect()` is redirected to the node proxy before any
/// route lookup, so no route is needed).
const API_VIP: &str = "240.0.0.10";
const MTLS_VIP: &str = "240.0.0.11";
const API_HOST: &str = "api.example.com";
const MTLS_HOST: &str = "mtls.example.com";
/// The TLS servers' port; the ServiceEntries' port 80 targets it.
const TLS_PORT: u16 = 8443;

/// A test CA: its certificate written as PEM, and an issuer for leaves.
struct TestCa {
    cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft egress test {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem())?;
        Ok(TestCa {
            cert: path,
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf with common name `cn` and DNS name `dns`, written as
    /// `<name>.pem` and `<name>-key.pem`; their paths.
    fn leaf(&self, dir: &Path, name: &str, cn: &str, dns: &str) -> Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![dns.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }
}

/// A directory under the run's for this test's certificates (the agents
/// read the DestinationRules' files from it).
fn pki_dir(cluster: &Cluster) -> Result<PathBuf> {
    let dir = cluster.dir().join("egress-pki");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("the run directory is UTF-8")
}

/// An HTTPS server pod outside the mesh, serving `cert`/`key` on
/// [`TLS_PORT`], with `more` arguments (`--client-ca`).
fn tls_backend(
    cluster: &Cluster,
    name: &str,
    cert: &Path,
    key: &Path,
    more: &[&str],
) -> Result<Backend> {
    let mut args = vec![
        "--tls-cert",
        path(cert),
        "--tls-key",
        path(key),
        "--verbose",
    ];
    args.extend_from_slice(more);
    backend(
        cluster,
        "node-2",
        "external",
        name,
        &[("app", name)],
        TLS_PORT,
        &args,
    )
}

/// A ServiceEntry for `host` at `vip`, port 80 (HTTP) targeting
/// [`TLS_PORT`] on `endpoint`.
fn service_entry(name: &str, host: &str, vip: &str, endpoint: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: egress
spec:
  hosts:
  - {host}
  addresses:
  - {vip}
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: {TLS_PORT}
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: {endpoint}
"#
    )
}

/// A DestinationRule for `host` whose `trafficPolicy.tls` is `tls` (YAML
/// lines, each indented for their place).
fn tls_rule(name: &str, host: &str, tls: &[String]) -> String {
    let mut rule = format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: egress
spec:
  host: {host}
  trafficPolicy:
    tls:
"#
    );
    for line in tls {
        rule.push_str(&format!("      {line}\n"));
    }
    rule
}

/// `GET http://<vip><path>` with `Host: <host>` from `client`.
fn get(client: &Pod, vip: &str, host: &str, path: &str, more: &[&str]) -> Result<httpapp::Reply> {
    let host = format!("Host: {host}");
    let mut args = vec!["--header", host.as_str(), "--timeout", "5"];
    args.extend_from_slice(more);
    httpapp::get_one(client, &format!("http://{vip}{path}"), &args)
}

/// Whether the reply came from the TLS server `server` over TLS.
fn served_over_tls(reply: &httpapp::Reply, server: &str) -> bool {
    reply.status == 200
        && reply.header("x-served-by") == Some(server)
        && reply.seen().is_ok_and(|seen| seen["tls"] == true)
}

/// Between the nodes, `client` sent `server` TLS application data, and
/// every stream to the TLS port is TLS records.
fn only_tls_to_server(packets: &Packets, client: &Pod, server: &Pod) -> Result<()> {
    ensure!(
        packets.tls_records_to(TLS_PORT).any(|p| {
            p.tls_record() == Some((0x17, 0x0303))
                && p.src.ip() == client.ip()
                && p.dst.ip() == server.ip()
        }),
        "no TLS application data from the client pod to {}:{TLS_PORT}:\n{}",
        server.ip(),
        packets.summary(40)
    );
    for (&(src, dst), stream) in &packets.streams() {
        if dst.port() == TLS_PORT {
            ensure!(
                matches!(stream.as_slice(), [0x14..=0x17, 0x03, 0x01..=0x04, ..]),
                "{src} -> {dst} is not TLS records:\n{}",
                packets.summary(40)
            );
        }
    }
    Ok(())
}

/// Envoy's answer to a failed upstream connection: 503, its text, and an
/// access-log line (among `since` and later) with `UF` for `host`.
fn assert_connect_failure(
    cluster: &Cluster,
    reply: &httpapp::Reply,
    host: &str,
    since: usize,
) -> Result<()> {
    ensure!(
        reply.status == 503
            && reply.body.contains("upstream connect error")
            && reply.header("x-served-by").is_none(),
        "expected the proxy's 503 for a failed connection: {reply:?}"
    );
    let log = access_log(cluster, "node-1")?;
    let new = log.get(since..).unwrap_or_default();
    ensure!(
        new.iter()
            .any(|e| e["authority"] == host && e["response_code"] == 503 && has_flag(e, "UF")),
        "no access-log line with response_code 503 and response_flags UF for {host}:\n{}",
        last_entries(new, 5)
    );
    Ok(())
}

#[test]
fn simple_tls_origination_to_a_service_entry_verifies_the_server() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        let pki = pki_dir(cluster)?;
        let ca = TestCa::new(&pki, "ca")?;
        let wrong_ca = TestCa::new(&pki, "wrong-ca")?;
        let (cert, key) = ca.leaf(&pki, "api", API_HOST, API_HOST)?;

        cluster.add_namespace("external", &[])?;
        cluster.add_namespace("egress", &[AMBIENT])?;
        let api = tls_backend(cluster, "api", &cert, &key, &[])?;
        let client = client(cluster, "node-1", "egress", "app")?;

        apply(
            cluster,
            "api-se",
            &service_entry("api", API_HOST, API_VIP, api.pod.ip()),
        )?;
        let simple = |ca: &Path, sni: bool| {
            let mut tls = vec![
                "mode: SIMPLE".to_string(),
                format!("caCertificates: {}", path(ca)),
            ];
            if sni {
                tls.push(format!("sni: {API_HOST}"));
            }
            tls
        };
        apply(
            cluster,
            "api-dr",
            &tls_rule("api", API_HOST, &simple(&ca.cert, true)),
        )?;
        converge("HTTPS to api.example.com through its ServiceEntry VIP", || {
            Ok(served_over_tls(
                &get(&client, API_VIP, API_HOST, "/hello", &[])?,
                "api",
            ))
        })?;

        // What the server saw: TLS with the rule's SNI, HTTP/1.1 (the
        // app's protocol) agreed by ALPN, the app's request.
        let reply = get(&client, API_VIP, API_HOST, "/hello?q=1", &[])?;
        ensure!(served_over_tls(&reply, "api"), "{reply:?}");
        let seen = reply.seen()?;
        ensure!(seen["sni"] == API_HOST, "SNI: {seen}");
        ensure!(seen["alpn"] == "http/1.1", "ALPN: {seen}");
        ensure!(seen["client_cert"].is_null(), "no client certificate: {seen}");
        ensure!(
            seen["path"] == "/hello?q=1" && seen["authority"] == API_HOST,
            "the app's request: {seen}"
        );
        ensure!(
            seen["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{}:", client.ip()))),
            "the connection leaves from the client pod's IP {}: {seen}",
            client.ip()
        );

        // On the wire between the nodes: TLS from the client pod to 8443,
        // never the request in plaintext.
        let marker = "EGRESS-PLAINTEXT-MARKER-5d1e";
        let capture = cluster.capture_between_nodes()?;
        let marked = get(
            &client,
            API_VIP,
            API_HOST,
            &format!("/hello?marker={marker}"),
            &["--header", &format!("x-marker: {marker}")],
        )?;
        let packets = capture.stop()?;
        ensure!(served_over_tls(&marked, "api"), "{marked:?}");
        ensure!(
            marked.body.contains(marker),
            "the server saw the marker: {marked:?}"
        );
        only_tls_to_server(&packets, &client, &api.pod)?;
        for port in [80, 15008] {
            ensure!(
                packets.to_port(port).next().is_none(),
                "nothing goes to port {port} (no plaintext, no HBONE to a host outside the mesh):\n{}",
                packets.summary(40)
            );
        }
        ensure!(
            !packets.contains(marker.as_bytes()),
            "the request's plaintext ({marker}) crossed the wire:\n{}",
            packets.summary(40)
        );

        // A CA that did not sign the server's certificate: no handshake,
        // 503 UF.
        let since = access_log(cluster, "node-1")?.len();
        apply(
            cluster,
            "api-dr",
            &tls_rule("api", API_HOST, &simple(&wrong_ca.cert, true)),
        )?;
        converge("the wrong CA to fail the handshake", || {
            Ok(get(&client, API_VIP, API_HOST, "/hello", &[])?.status == 503)
        })?;
        let refused = get(&client, API_VIP, API_HOST, "/hello", &[])?;
        assert_connect_failure(cluster, &refused, API_HOST, since)?;

        // insecureSkipVerify: any certificate; no `sni`, so the server
        // name is the host's.
        let mut skip = simple(&wrong_ca.cert, false);
        skip.push("insecureSkipVerify: true".to_string());
        apply(cluster, "api-dr", &tls_rule("api", API_HOST, &skip))?;
        converge("insecureSkipVerify to accept the certificate", || {
            Ok(served_over_tls(
                &get(&client, API_VIP, API_HOST, "/hello", &[])?,
                "api",
            ))
        })?;
        let reply = get(&client, API_VIP, API_HOST, "/hello", &[])?;
        let seen = reply.seen()?;
        ensure!(
            seen["tls"] == true && seen["sni"] == API_HOST,
            "without `sni`, the SNI is the host: {seen}"
        );
        Ok(())
    })
}

#[test]
fn mutual_tls_origination_presents_the_client_certificate() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        let pki = pki_dir(cluster)?;
        let server_ca = TestCa::new(&pki, "server-ca")?;
        let client_ca = TestCa::new(&pki, "client-ca")?;
        let (cert, key) = server_ca.leaf(&pki, "mtls", MTLS_HOST, MTLS_HOST)?;
        let (client_cert, client_key) =
            client_ca.leaf(&pki, "client", "egress-client", "egress-client.weft.test")?;

        cluster.add_namespace("external", &[])?;
        cluster.add_namespace("egress", &[AMBIENT])?;
        let mtls = tls_backend(
            cluster,
            "mtls-api",
            &cert,
            &key,
            &["--client-ca", path(&client_ca.cert)],
        )?;
        let client = client(cluster, "node-1", "egress", "app")?;

        apply(
            cluster,
            "mtls-se",
            &service_entry("mtls", MTLS_HOST, MTLS_VIP, mtls.pod.ip()),
        )?;
        apply(
            cluster,
            "mtls-dr",
            &tls_rule(
                "mtls",
                MTLS_HOST,
                &[
                    "mode: MUTUAL".to_string(),
                    format!("caCertificates: {}", path(&server_ca.cert)),
                    format!("clientCertificate: {}", path(&client_cert)),
                    format!("privateKey: {}", path(&client_key)),
                ],
            ),
        )?;
        converge("mutual TLS to mtls.example.com", || {
            Ok(served_over_tls(
                &get(&client, MTLS_VIP, MTLS_HOST, "/hello", &[])?,
                "mtls-api",
            ))
        })?;
        let reply = get(&client, MTLS_VIP, MTLS_HOST, "/hello", &[])?;
        let seen = reply.seen()?;
        ensure!(
            seen["client_cert"] == "CN=egress-client; DNS:egress-client.weft.test",
            "the server saw the rule's client certificate: {seen}"
        );
        ensure!(
            seen["sni"] == MTLS_HOST,
            "without `sni`, the SNI is the host: {seen}"
        );

        // The same server without a client certificate: it refuses the
        // handshake; 503 UF.
        let since = access_log(cluster, "node-1")?.len();
        apply(
            cluster,
            "mtls-dr",
            &tls_rule(
                "mtls",
                MTLS_HOST,
                &[
                    "mode: SIMPLE".to_string(),
                    format!("caCertificates: {}", path(&server_ca.cert)),
                ],
            ),
        )?;
        converge(
            "the server to refuse a client without a certificate",
            || Ok(get(&client, MTLS_VIP, MTLS_HOST, "/hello", &[])?.status == 503),
        )?;
        let refused = get(&client, MTLS_VIP, MTLS_HOST, "/hello", &[])?;
        assert_connect_failure(cluster, &refused, MTLS_HOST, since)?;
        let server_log = mtls.server.log();
        ensure!(
            server_log.contains(&format!("TLS handshake with {}:", client.ip())),
            "the server logged no failed handshake from {}:\n{}",
            client.ip(),
            mtls.server.log_tail(20)
        );
        Ok(())
    })
}

/// A DestinationRule's `tls.mode: SIMPLE` on a ServiceEntry's TCP port:
/// the app writes plaintext to the port, the client's agent originates
/// TLS (the rule's SNI, the server verified, no ALPN: Envoy offers none on
/// a TCP cluster) and relays the bytes; between the nodes they are TLS
/// records only.
#[test]
fn tls_origination_on_a_tcp_port_relays_the_apps_bytes_in_tls() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let Egress { ca, api, client } = egress(cluster)?;
        let tcp_entry = service_entry("api", API_HOST, API_VIP, api.pod.ip()).replace(
            "number: 80\n    name: http\n    protocol: HTTP",
            "number: 5432\n    name: tcp\n    protocol: TCP",
        );
        ensure!(tcp_entry.contains("protocol: TCP"), "{tcp_entry}");
        apply(cluster, "api-se", &tcp_entry)?;
        let tls = simple_tls(&ca);
        apply(cluster, "api-dr", &tls_rule("api", API_HOST, &tls))?;
        let vip = format!("{API_VIP}:5432");
        converge("the app's plaintext reaching api over TLS", || {
            Ok(get(&client, &vip, API_HOST, "/hello", &[])
                .is_ok_and(|r| served_over_tls(&r, "api")))
        })?;

        let marker = "TCP-TLS-ORIGINATION-MARKER-77c2";
        let reply = marked_get_in_tls(cluster, &client, &api.pod, &vip, marker)?;
        let seen = reply.seen()?;
        ensure!(seen["sni"] == API_HOST, "SNI: {seen}");
        ensure!(seen["alpn"].is_null(), "no ALPN on a TCP port: {seen}");
        Ok(())
    })
}

/// The port the app dials on a `resolution: NONE` ServiceEntry; it
/// targets [`TLS_PORT`].
const DIALED_PORT: u16 = 9443;

/// What the tests of one TLS server share: the CA that signed its
/// certificate (for [`API_HOST`]), the `api` server outside the mesh on
/// node-2, and an app in the mesh on node-1.
struct Egress {
    ca: TestCa,
    api: Backend,
    client: Pod,
}

fn egress(cluster: &Cluster) -> Result<Egress> {
    let pki = pki_dir(cluster)?;
    let ca = TestCa::new(&pki, "ca")?;
    let (cert, key) = ca.leaf(&pki, "api", API_HOST, API_HOST)?;
    cluster.add_namespace("external", &[])?;
    cluster.add_namespace("egress", &[AMBIENT])?;
    let api = tls_backend(cluster, "api", &cert, &key, &[])?;
    let client = client(cluster, "node-1", "egress", "app")?;
    Ok(Egress { ca, api, client })
}

/// `tls.mode: SIMPLE` verified with `ca`, SNI [`API_HOST`].
fn simple_tls(ca: &TestCa) -> [String; 3] {
    [
        "mode: SIMPLE".to_string(),
        format!("caCertificates: {}", path(&ca.cert)),
        format!("sni: {API_HOST}"),
    ]
}

/// `GET /hello?marker=<marker>` from `client` to `addr` (host
/// [`API_HOST`]) while the link between the nodes is captured: served by
/// `server` over TLS with the request as the app sent it, only TLS records
/// on the wire to the server's port, never the marker. The reply.
fn marked_get_in_tls(
    cluster: &Cluster,
    client: &Pod,
    server: &Pod,
    addr: &str,
    marker: &str,
) -> Result<httpapp::Reply> {
    let capture = cluster.capture_between_nodes()?;
    let reply = get(
        client,
        addr,
        API_HOST,
        &format!("/hello?marker={marker}"),
        &[],
    )?;
    let packets = capture.stop()?;
    ensure!(served_over_tls(&reply, "api"), "{reply:?}");
    ensure!(
        reply.body.contains(marker),
        "the server saw the app's request: {reply:?}"
    );
    only_tls_to_server(&packets, client, server)?;
    ensure!(
        !packets.contains(marker.as_bytes()),
        "the marker crossed between the nodes in plaintext:\n{}",
        packets.summary(40)
    );
    Ok(reply)
}

/// A ServiceEntry with `resolution: NONE` for `host` at `address` (the
/// server's own IP), port [`DIALED_PORT`] speaking `protocol` and
/// targeting [`TLS_PORT`]: connections go to the address the app dialed,
/// at the target port, as Istio's `ORIGINAL_DST` cluster sends them
/// (`upstream_port_override`).
fn original_dst_entry(name: &str, host: &str, address: Ipv4Addr, protocol: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: egress
spec:
  hosts:
  - {host}
  addresses:
  - {address}
  ports:
  - number: {DIALED_PORT}
    name: {name}-port
    protocol: {protocol}
    targetPort: {TLS_PORT}
  location: MESH_EXTERNAL
  resolution: NONE
"#
    )
}

#[test]
fn resolution_none_sends_to_the_address_dialed_in_the_rules_tls() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let Egress { ca, api, client } = egress(cluster)?;
        let tls = simple_tls(&ca);
        apply(cluster, "api-dr", &tls_rule("api", API_HOST, &tls))?;
        let dialed = format!("{}:{DIALED_PORT}", api.pod.ip());

        // An HTTP port: the request is proxied to the address dialed, in
        // the rule's TLS.
        apply(
            cluster,
            "api-se",
            &original_dst_entry("api", API_HOST, api.pod.ip(), "HTTP"),
        )?;
        converge("plain HTTP to the dialed address, sent on in TLS", || {
            Ok(get(&client, &dialed, API_HOST, "/hello", &[])
                .is_ok_and(|r| served_over_tls(&r, "api")))
        })?;
        let reply = get(&client, &dialed, API_HOST, "/hello?q=none", &[])?;
        let seen = reply.seen()?;
        ensure!(
            seen["sni"] == API_HOST && seen["path"] == "/hello?q=none",
            "{seen}"
        );

        // A TCP port: the app's bytes go to the address dialed in TLS.
        apply(
            cluster,
            "api-se",
            &original_dst_entry("api", API_HOST, api.pod.ip(), "TCP"),
        )?;
        converge("plain TCP to the dialed address, relayed in TLS", || {
            Ok(
                get(&client, &dialed, API_HOST, "/hello", &[]).is_ok_and(|r| {
                    served_over_tls(&r, "api") && r.seen().is_ok_and(|s| s["alpn"].is_null())
                }),
            )
        })?;
        let marker = "ORIGINAL-DST-TLS-MARKER-41b7";
        marked_get_in_tls(cluster, &client, &api.pod, &dialed, marker)?;
        // Counted as the entry's, as Envoy's cluster for it names it.
        let metrics = cluster.node("node-1")?.agent_metrics()?;
        ensure!(
            metrics.lines().any(|l| {
                l.starts_with("istio_tcp_connections_opened_total{")
                    && l.contains("reporter=\"source\"")
                    && l.contains(&format!("destination_service=\"{API_HOST}\""))
            }),
            "no TCP connection counted to {API_HOST}:\n{}",
            metrics
                .lines()
                .filter(|l| l.starts_with("istio_tcp_connections_opened_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );

        // The rule's `maxConnections: 1` counts these connections too: a
        // second one while a 4 s one is open is refused (`UO`), counted as
        // the entry's.
        let capped = tls_rule("api", API_HOST, &tls)
            + "    connectionPool:\n      tcp:\n        maxConnections: 1\n";
        apply(cluster, "api-dr", &capped)?;
        let host = format!("Host: {API_HOST}");
        let slow = format!("http://{dialed}/drip/4000");
        converge("a second connection refused at maxConnections: 1", || {
            let mut held = client.spawn_http(&["get", &slow, "--header", &host])?;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let refused = get(&client, &dialed, API_HOST, "/hello", &[]).is_err();
            held.kill();
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(refused)
        })?;
        let metrics = cluster.node("node-1")?.agent_metrics()?;
        ensure!(
            metrics.lines().any(|l| {
                l.starts_with("istio_tcp_connections_failed_total{")
                    && l.contains(r#"response_flags="UO""#)
                    && l.contains(&format!("destination_service=\"{API_HOST}\""))
            }),
            "no istio_tcp_connections_failed_total with response_flags=\"UO\" for {API_HOST}"
        );
        Ok(())
    })
}
