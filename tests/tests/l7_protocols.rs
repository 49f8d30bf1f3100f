//! Protocols through the L7 proxy, end to end with weft's real binaries:
//! gRPC (unary, bidirectional streaming, status codes, the proxy's own
//! answers as gRPC statuses), HTTP/2 cleartext from the app, the upstream
//! protocol chosen by the port and `h2UpgradePolicy`, upgrades
//! (WebSocket-style) passed through, L4 ports untouched, and malformed
//! requests answered by the proxy without reaching the server. Needs root
//! and the binaries.

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp};

/// `grpc-call` output: reply lines, then the status line.
fn grpc_call(client: &weft_sim::Pod, args: &[&str]) -> Result<(Vec<serde_json::Value>, i64)> {
    let mut all = vec!["grpc-call"];
    all.extend_from_slice(args);
    let out = client.run_http(&all, TIMEOUT)?;
    let mut lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("grpc-call printed {l}")))
        .collect::<Result<_>>()
        .with_context(|| format!("stderr: {}", out.stderr))?;
    let status = lines
        .pop()
        .and_then(|l| l["grpc_status"].as_i64())
        .with_context(|| format!("no status line; stderr: {}", out.stderr))?;
    Ok((lines, status))
}

/// HTTP/2 frame type GOAWAY, and the error code PROTOCOL_ERROR.
const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: [u8; 4] = [0, 0, 0, 1];

/// The HTTP/2 frames (type, payload) in `hex`, as `tcp-send --hex` prints
/// a server's reply.
fn h2_frames(hex: &str) -> Result<Vec<(u8, Vec<u8>)>> {
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .with_context(|| format!("not hex: {hex:?}"))?;
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        ensure!(rest.len() >= 9 + len, "a truncated frame in {hex}");
        frames.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    Ok(frames)
}

#[test]
fn grpc_unary_streaming_statuses_and_retries_cross_the_mesh() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("rpc", &[AMBIENT])?;
        let _echo = backend(cluster, "node-2", "rpc", "echo-v1", &[("app", "echo"), ("version", "v1")], 9090, &[])?;
        let client = client(cluster, "node-1", "rpc", "caller")?;
        // The port's name declares gRPC (Istio's protocol selection).
        let vip = cluster.add_service("rpc", "echo", &[("app", "echo")], &[ServicePort::tcp("grpc-echo", 9090, 9090)])?;
        let addr = format!("{vip}:9090");
        converge("the echo service", || Ok(grpc_call(&client, &[&addr, "--method", "unary"])?.1 == 0))?;

        let (replies, status) = grpc_call(&client, &[&addr, "--method", "chat", "--count", "5", "--message", "ping"])?;
        ensure!(status == 0, "chat ended with status {status}");
        ensure!(replies.len() == 5, "5 replies, one per message: {replies:?}");
        for (i, reply) in replies.iter().enumerate() {
            ensure!(reply["count"] == i as i64 && reply["server"] == "echo-v1" && reply["message"] == "ping", "reply {i}: {reply}");
        }
        let (_, status) = grpc_call(&client, &[&addr, "--method", "fail", "--code", "7"])?;
        ensure!(status == 7, "the server's status passes through: {status}");

        // The client's deadline (`grpc-timeout`) is enforced by the
        // client's agent, as Envoy does under Istio (no VirtualService: no
        // cap): a server that takes 3 s is cut at 0.5 s, UNAVAILABLE
        // (Envoy's 504 as gRPC), flagged `UT`.
        let _slow = backend(cluster, "node-2", "rpc", "echo-slow", &[("app", "slow-echo")], 9090, &["--delay-ms", "3000"])?;
        let slow_vip = cluster.add_service("rpc", "slow-echo", &[("app", "slow-echo")], &[ServicePort::tcp("grpc-echo", 9090, 9090)])?;
        let slow_addr = format!("{slow_vip}:9090");
        converge("the slow echo service", || Ok(grpc_call(&client, &[&slow_addr, "--method", "unary"])?.1 == 0))?;
        // Sent as a raw HTTP/2 request: tonic's client would enforce the
        // deadline itself, racing the agent.
        let call = httpapp::get_one(
            &client,
            &format!("http://{slow_addr}/weft.test.Echo/Unary"),
            &["--method", "POST", "--h2", "true", "--header", "content-type: application/grpc", "--header", "te: trailers", "--header", "grpc-timeout: 500m"],
        )?;
        ensure!(
            call.status == 200 && call.header("grpc-status") == Some("14"),
            "a call past its deadline, answered by the client's agent: {call:?}"
        );
        let log = access_log(cluster, "node-1")?;
        ensure!(
            log.iter().any(|e| e["path"] == "/weft.test.Echo/Unary" && e["response_flags"] == "UT"),
            "the deadline's cut in the access log (UT):\n{}",
            last_entries(&log, 5)
        );
        ensure!(
            log.iter().any(|e| e["path"] == "/weft.test.Echo/Chat" && e["grpc_status"] == "OK"),
            "the streaming call in the access log with its grpc-status, named as Envoy names it:\n{}",
            last_entries(&log, 5)
        );

        // Routes for gRPC: a fault aborts with a gRPC status, a subset
        // with no endpoints is UNAVAILABLE (UH), both as gRPC answers.
        apply(cluster, "echo", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: echo\n  namespace: rpc\nspec:\n  host: echo\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v9\n    labels:\n      version: v9\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: rpc\nspec:\n  hosts:\n  - echo\n  http:\n  - match:\n    - uri:\n        exact: /weft.test.Echo/Fail\n    fault:\n      abort:\n        grpcStatus: RESOURCE_EXHAUSTED\n        percentage:\n          value: 100\n    route:\n    - destination:\n        host: echo\n        subset: v1\n  - match:\n    - headers:\n        x-canary:\n          exact: \"yes\"\n    route:\n    - destination:\n        host: echo\n        subset: v9\n  - route:\n    - destination:\n        host: echo\n        subset: v1\n")?;
        converge("the gRPC fault", || Ok(grpc_call(&client, &[&addr, "--method", "fail", "--code", "0"])?.1 == 8))?;
        let (replies, status) = grpc_call(&client, &[&addr, "--method", "unary", "--count", "3"])?;
        ensure!(status == 0 && replies.len() == 3, "unary calls still served: {status} {replies:?}");

        // Retries on gRPC conditions: `unavailable` retries a call the
        // server ends with UNAVAILABLE, not one it ends with INTERNAL.
        apply(cluster, "echo", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: rpc\nspec:\n  hosts:\n  - echo\n  http:\n  - route:\n    - destination:\n        host: echo\n    retries:\n      attempts: 2\n      retryOn: unavailable\n")?;
        converge("the gRPC fault removed", || Ok(grpc_call(&client, &[&addr, "--method", "fail", "--code", "0"])?.1 == 0))?;
        let attempts = |code: i64| -> Result<Option<u64>> {
            let (_, status) = grpc_call(&client, &[&addr, "--method", "fail", "--code", &code.to_string()])?;
            ensure!(status == code, "the last attempt's status reaches the client: {status}, want {code}");
            std::thread::sleep(LOG_SETTLE);
            let log = access_log(cluster, "node-1")?;
            let last = log.iter().rev().find(|e| e["path"] == "/weft.test.Echo/Fail");
            Ok(last.and_then(|e| e["attempts"].as_u64()))
        };
        converge("retries on UNAVAILABLE", || Ok(attempts(14)? == Some(3)))?;
        ensure!(attempts(13)? == Some(1), "INTERNAL is not retried on `unavailable`");
        ensure!(attempts(14)? == Some(3), "UNAVAILABLE: the call and two retries");

        // Outlier detection counts a gRPC answer by its status: a pod
        // ending every call UNAVAILABLE (HTTP 200, grpc-status 14: a 503
        // to Envoy) is ejected.
        let fail_flag = cluster.dir().join("echo-bad-fails");
        std::fs::write(&fail_flag, b"fail").context("creating the failure flag")?;
        let flag = fail_flag.to_string_lossy().into_owned();
        let _bad = backend(cluster, "node-2", "rpc", "echo-bad", &[("app", "echo"), ("version", "v1")], 9090, &["--fail-while-exists", &flag])?;
        apply(cluster, "echo", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: rpc\nspec:\n  hosts:\n  - echo\n  http:\n  - route:\n    - destination:\n        host: echo\n    retries:\n      attempts: 0\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: echo\n  namespace: rpc\nspec:\n  host: echo\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n")?;
        converge("the failing gRPC pod reached", || {
            let (_, status) = grpc_call(&client, &[&addr, "--method", "unary", "--count", "10"])?;
            Ok(status == 14)
        })?;
        converge("the failing gRPC pod ejected", || {
            let (replies, status) = grpc_call(&client, &[&addr, "--method", "unary", "--count", "10"])?;
            Ok(status == 0 && replies.len() == 10)
        })?;
        let (replies, status) = grpc_call(&client, &[&addr, "--method", "unary", "--count", "20"])?;
        ensure!(
            status == 0 && replies.len() == 20 && replies.iter().all(|r| r["server"] == "echo-v1"),
            "only the healthy pod serves: {status} {replies:?}"
        );
        Ok(())
    })
}

#[test]
fn http2_clients_upstream_protocol_upgrades_l4_ports_and_bad_requests() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("proto", &[AMBIENT])?;
        let _web = backend(cluster, "node-2", "proto", "web", &[("app", "web")], 8080, &["--verbose"])?;
        let client = client(cluster, "node-1", "proto", "browser")?;
        let web = cluster.add_service(
            "proto",
            "web",
            &[("app", "web")],
            &[ServicePort::http("http", 80, 8080), ServicePort::tcp("tcp-raw", 81, 8080)],
        )?;
        let h2web = cluster.add_service("proto", "h2web", &[("app", "web")], &[ServicePort::tcp("http2", 80, 8080)])?;

        converge("the web services", || {
            Ok(httpapp::get_one(&client, &format!("http://{web}/"), &[])?.status == 200
                && httpapp::get_one(&client, &format!("http://{h2web}/"), &[])?.status == 200)
        })?;
        // An HTTP/2 (prior knowledge) client on an `http` port: the server
        // gets HTTP/1.1, as Envoy sends for `http` ports.
        let reply = httpapp::get_one(&client, &format!("http://{web}/h2c"), &["--h2", "true"])?;
        ensure!(reply.status == 200 && reply.seen()?["version"] == "HTTP/1.1", "h2c client, http port: {reply:?}");
        // An `http2` port: HTTP/2 upstream.
        let reply = httpapp::get_one(&client, &format!("http://{h2web}/h2"), &[])?;
        ensure!(reply.status == 200 && reply.seen()?["version"] == "HTTP/2", "http2 port: {reply:?}");
        // h2UpgradePolicy UPGRADE makes the `http` port's upstream HTTP/2.
        apply(cluster, "web-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: web\n  namespace: proto\nspec:\n  host: web\n  trafficPolicy:\n    connectionPool:\n      http:\n        h2UpgradePolicy: UPGRADE\n")?;
        converge("h2UpgradePolicy: UPGRADE", || {
            Ok(httpapp::get_one(&client, &format!("http://{web}/upgraded"), &[])?.seen()?["version"] == "HTTP/2")
        })?;

        // `useClientProtocol`: the upstream speaks what the client spoke,
        // and `h2UpgradePolicy` beside it has no effect (Istio's rule).
        apply(cluster, "web-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: web\n  namespace: proto\nspec:\n  host: web\n  trafficPolicy:\n    connectionPool:\n      http:\n        useClientProtocol: true\n        h2UpgradePolicy: UPGRADE\n")?;
        // (Under UPGRADE, before it, an HTTP/1.1 client's request would be
        // HTTP/2 too.)
        let version = |path: &str, h2: &str| -> Result<serde_json::Value> {
            let reply = httpapp::get_one(&client, &format!("http://{web}{path}"), &["--h2", h2])?;
            Ok(reply.seen()?["version"].clone())
        };
        converge("useClientProtocol", || {
            Ok(version("/as-client-h2", "true")? == "HTTP/2" && version("/as-client-h1", "false")? == "HTTP/1.1")
        })?;
        for k in 0..3 {
            ensure!(version(&format!("/h2-{k}"), "true")? == "HTTP/2", "useClientProtocol, an HTTP/2 client");
            ensure!(version(&format!("/h1-{k}"), "false")? == "HTTP/1.1", "useClientProtocol, an HTTP/1.1 client");
        }

        // Upgrades pass through (the upgrade needs HTTP/1.1 upstream).
        apply(cluster, "web-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: web\n  namespace: proto\nspec:\n  host: web\n")?;
        converge("HTTP/1.1 upstream again", || {
            Ok(httpapp::get_one(&client, &format!("http://{web}/again"), &[])?.seen()?["version"] == "HTTP/1.1")
        })?;
        let out = client.run_http(&["ws", &format!("{web}:80"), "--message", "hello", "--count", "3"], TIMEOUT)?;
        ensure!(out.success() && out.stdout.lines().collect::<Vec<_>>() == ["upgraded", "hello", "hello", "hello"], "upgrade: {out:?}");

        // The L4 port of the same service is relayed as bytes: no access
        // log line, no proxy headers.
        let before = access_log(cluster, "node-1")?.len();
        let reply = httpapp::get_one(&client, &format!("http://{web}:81/raw"), &[])?;
        ensure!(reply.status == 200 && reply.seen()?["headers"].get("x-request-id").is_none(), "L4 port untouched: {reply:?}");
        ensure!(access_log(cluster, "node-1")?.len() == before, "an L4 connection has no L7 access-log line");

        // Pipelined requests (both in one write) are answered, in order.
        let pipelined = "GET /first HTTP/1.1\r\nHost: web\r\n\r\nGET /second HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
        let out = client.run_app(&["tcp-send", &format!("{web}:80"), pipelined, "--timeout", "5"], TIMEOUT)?;
        let (first, second) = (out.stdout.find("\"path\":\"/first\""), out.stdout.find("\"path\":\"/second\""));
        ensure!(
            out.stdout.matches("HTTP/1.1 200").count() == 2 && first.is_some() && second.is_some() && first < second,
            "two pipelined requests: expected two answers in order, got {:?}",
            out.stdout
        );

        // Malformed requests: answered 400 by the proxy, never forwarded.
        for (what, bad) in [
            ("both Content-Length and Transfer-Encoding", "POST /smuggle HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("a bad request line", "GET /bad path HTTP/1.1\r\nHost: web\r\n\r\n"),
            ("invalid header bytes", "GET /badheader HTTP/1.1\r\nHost: web\r\nX-Bad\u{1}: 1\r\n\r\n"),
        ] {
            let out = client.run_app(&["tcp-send", &format!("{web}:80"), bad, "--timeout", "5"], TIMEOUT)?;
            ensure!(out.stdout.starts_with("HTTP/1.1 400"), "{what}: expected 400, got {:?}", out.stdout);
        }
        // A head over the 64 KiB limit: 431.
        let huge = format!("GET /huge HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
        let out = client.run_app(&["tcp-send", &format!("{web}:80"), &huge, "--timeout", "5"], TIMEOUT)?;
        ensure!(out.stdout.starts_with("HTTP/1.1 431"), "a head over the limit: expected 431, got {:?}", out.stdout);
        // HTTP/2 that breaks the protocol (HEADERS on stream 0, a
        // connection error): GOAWAY with PROTOCOL_ERROR, as Envoy answers.
        let preface: String = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().map(|b| format!("{b:02x}")).collect();
        let settings = "000000040000000000";
        let headers_on_stream_0 = "00000101040000000082";
        let out = client.run_app(&["tcp-send", &format!("{web}:80"), &format!("{preface}{settings}{headers_on_stream_0}"), "--timeout", "5", "--hex", "true"], TIMEOUT)?;
        let frames = h2_frames(out.stdout.trim())?;
        ensure!(
            frames.iter().any(|(kind, payload)| *kind == GOAWAY && payload.get(4..8) == Some(&PROTOCOL_ERROR[..])),
            "an HTTP/2 protocol error: expected GOAWAY(PROTOCOL_ERROR), got frames {frames:?}"
        );
        let served = _web.server.log();
        ensure!(!served.contains("/smuggle") && !served.contains("/bad") && !served.contains("/huge"), "a malformed request reached the server:\n{served}");
        // Counted, and logged with what was wrong.
        let node = cluster.node("node-1")?;
        let mut stats = std::process::Command::new(cluster.bin_dir().join("weft-sim-app"));
        stats.args(["http-get", "http://127.0.0.1:15000/stats", "--timeout", "3"]);
        let out = node.run(stats, TIMEOUT)?.check("GET /stats")?;
        let body = out.stdout.lines().skip(1).collect::<Vec<_>>().join("\n");
        let stats: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("/stats:\n{body}"))?;
        ensure!(stats["http_bad_requests"].as_u64() >= Some(5), "malformed requests counted: {stats}");
        ensure!(node.agent_log().contains("malformed HTTP request from the app"), "malformed requests logged");
        // The proxy still serves everyone else.
        let load = httpapp::load(&client, &format!("http://{web}/after"), &["--count", "20"])?;
        ensure!(load.ok == 20, "after bad requests: {load:?}");
        Ok(())
    })
}
