//! `weftctl proxy-status`, `proxy-config` and `stats`: the real binary
//! against a local HTTP server that serves what the control plane's debug
//! endpoint and the agent's admin API serve (a fake of the remote end,
//! with the real shapes: `/debug/syncz` is serialised from
//! `weft_control`'s own types), and against nothing at all.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use weft_control::xds::{
    StreamStatus, TypeStatus,
    syncz::{Nack, unix_now},
};

/// Serves `routes` (path → status, body) until the test process ends;
/// records the request heads it got.
fn serve(routes: Vec<(&'static str, u16, String)>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            log.lock().unwrap().push(head);
            let (status, body) = routes
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, s, b)| (*s, b.clone()))
                .unwrap_or((404, "not found\n".into()));
            let reason = if status == 200 { "OK" } else { "Not Found" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .output()
        .expect("weftctl runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";

/// Two agents: one in sync; one that rejected its last authorization
/// response and has not acknowledged its last address response yet.
fn syncz(now: u64) -> String {
    let synced = |version: &str, nonce: &str, resources| TypeStatus {
        wildcard: true,
        resources,
        responses_sent: 1,
        last_sent_version: version.into(),
        last_sent_nonce: nonce.into(),
        last_acked_version: version.into(),
        last_acked_nonce: nonce.into(),
        acks: 1,
        nacks: 0,
        last_nack: None,
    };
    let node1 = StreamStatus {
        connection: 1,
        node: "node-1".into(),
        node_id: "node-1".into(),
        peer: Some("10.0.0.11:40112".into()),
        connected_at_unix: now - 125,
        types: BTreeMap::from([
            (ADDRESS.into(), synced("aaaaaaaa11112222", "1-1", 12)),
            (AUTHORIZATION.into(), synced("bbbbbbbb33334444", "1-2", 2)),
        ]),
    };
    let mut stale = synced("cccccccc55556666", "2-3", 12);
    stale.last_sent_nonce = "2-4".into();
    stale.last_sent_version = "dddddddd77778888".into();
    let mut nacked = synced("bbbbbbbb33334444", "2-2", 2);
    nacked.last_sent_nonce = "2-5".into();
    nacked.last_sent_version = "eeeeeeee99990000".into();
    nacked.nacks = 1;
    nacked.last_nack = Some(Nack {
        nonce: "2-5".into(),
        code: 3,
        message: "policy default/deny-all: unknown match field".into(),
        at_unix: now - 7,
    });
    let node2 = StreamStatus {
        connection: 2,
        node: "node-2".into(),
        node_id: "node-2".into(),
        peer: Some("10.0.0.12:51000".into()),
        connected_at_unix: now - 3700,
        types: BTreeMap::from([(ADDRESS.into(), stale), (AUTHORIZATION.into(), nacked)]),
    };
    serde_json::to_string_pretty(&serde_json::json!({
        "source": {"mode": "directory", "synced": true},
        "agents": [node1, node2],
    }))
    .unwrap()
}

/// `/config_dump` in the shape of `weft_agent::admin` (workloadState from
/// `WorkloadStore::dump`, pods from `Enroller::dump`, certificates from
/// `SecretManager::dump`).
fn config_dump() -> String {
    let now = unix_now();
    serde_json::json!({
        "workloadState": {
            "workloads": [{
                "uid": "Kubernetes//Pod/demo/web-0",
                "name": "web-0",
                "namespace": "demo",
                "ips": ["10.244.1.5"],
                "node": "node-1",
                "identity": {"trust_domain": "cluster.local", "namespace": "demo", "service_account": "web"},
                "hbone": true,
                "services": {"demo/web.demo.svc.cluster.local": {"80": 8080}},
                "policies": ["demo/allow-client"],
            }, {
                "uid": "Kubernetes//Pod/legacy/db-0",
                "name": "db-0",
                "namespace": "legacy",
                "ips": ["10.244.2.9"],
                "node": "node-2",
                "identity": {"trust_domain": "cluster.local", "namespace": "legacy", "service_account": "default"},
                "hbone": false,
                "services": {},
                "policies": [],
            }],
            "services": [{
                "name": "web",
                "namespace": "demo",
                "hostname": "web.demo.svc.cluster.local",
                "vips": ["10.96.0.20"],
                "ports": {"80": 8080, "443": 0},
            }],
            "policies": [{
                "name": "allow-client",
                "namespace": "demo",
                "scope": "WorkloadSelector",
                "action": "Allow",
                "groups": [{"rules": [[{"principals": [{"Exact": "cluster.local/ns/demo/sa/client"}]}]]}],
                "dry_run": false,
                "l7_ignored": ["methods"],
            }],
        },
        "pods": [{
            "namespace": "demo",
            "name": "web-0",
            "netns": "/var/run/netns/cni-1234",
            "enrolled": true,
            "identity": "spiffe://cluster.local/ns/demo/sa/web",
        }],
        "certificates": [{
            "identity": "spiffe://cluster.local/ns/demo/sa/web",
            "pods": 1,
            "issued_at": now - 3600,
            "not_after": now + 20 * 3600 + 30,
        }],
    })
    .to_string()
}

#[test]
fn proxy_status_tabulates_each_agent_and_its_nacks() {
    let now = unix_now();
    let (addr, seen) = serve(vec![("/debug/syncz", 200, syncz(now))]);
    let out = stdout(&weftctl(&["proxy-status", "--control", &addr.to_string()]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NODE     PEER              CONNECTED   ADDRESSES"),
        "{out}"
    );
    assert!(lines[0].contains("AUTHORIZATIONS"), "{out}");
    assert!(
        lines[0].ends_with("DESTINATIONS   ROUTES   ACCESSLOGS   TRACING   METRICS"),
        "{out}"
    );
    let node1 = lines[1];
    assert!(
        node1.starts_with("node-1   10.0.0.11:40112   2m5s"),
        "{out}"
    );
    assert!(node1.contains("SYNCED (12) aaaaaaaa"), "{out}");
    assert!(node1.contains("SYNCED (2) bbbbbbbb"), "{out}");
    let node2 = lines[2];
    assert!(
        node2.starts_with("node-2   10.0.0.12:51000   1h1m"),
        "{out}"
    );
    assert!(
        node2.contains("STALE (12) dddddddd, acked cccccccc"),
        "{out}"
    );
    assert!(node2.contains("NACKED (2) eeeeeeee"), "{out}");
    assert!(
        out.contains("node-2 connection 2 AUTHORIZATIONS: 1 of 1 NACKed, the last 7s ago (nonce 2-5, code 3): policy default/deny-all: unknown match field"),
        "{out}"
    );
    let request = seen.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("GET /debug/syncz HTTP/1.1\r\n"),
        "{request}"
    );

    // JSON: what the control plane served, unchanged.
    let out = stdout(&weftctl(&[
        "proxy-status",
        "--control",
        &addr.to_string(),
        "-o",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let served: serde_json::Value = serde_json::from_str(&syncz(now)).unwrap();
    assert_eq!(json, served);
    assert_eq!(
        json["agents"][1]["types"][AUTHORIZATION]["last_nack"]["nonce"],
        "2-5"
    );
}

#[test]
fn proxy_status_without_agents_says_so() {
    let (addr, _) = serve(vec![(
        "/debug/syncz",
        200,
        r#"{"source": {"mode": "directory", "synced": true}, "agents": []}"#.into(),
    )]);
    let out = stdout(&weftctl(&["proxy-status", "--control", &addr.to_string()]));
    assert_eq!(
        out,
        format!("no agent is connected to the control plane at {addr}\n")
    );
}

#[test]
fn proxy_config_tabulates_each_section() {
    let (addr, seen) = serve(vec![("/config_dump", 200, config_dump())]);
    let agent = addr.to_string();
    let run = |section: &str| stdout(&weftctl(&["proxy-config", section, "--agent", &agent]));

    let workloads = run("workloads");
    assert_eq!(
        workloads,
        "NAMESPACE   NAME    IPS          NODE     PROTOCOL   IDENTITY                                      SERVICES                                   POLICIES\n\
         demo        web-0   10.244.1.5   node-1   HBONE      spiffe://cluster.local/ns/demo/sa/web         demo/web.demo.svc.cluster.local:80->8080   demo/allow-client\n\
         legacy      db-0    10.244.2.9   node-2   TCP        spiffe://cluster.local/ns/legacy/sa/default   -                                          -\n"
    );

    let services = run("services");
    assert_eq!(
        services,
        "NAMESPACE   NAME   HOSTNAME                     VIPS         PORTS\n\
         demo        web    web.demo.svc.cluster.local   10.96.0.20   80->8080,443\n"
    );

    let policies = run("policies");
    assert!(
        policies.contains(
            "demo        allow-client   WorkloadSelector   ALLOW    1       false     methods"
        ),
        "{policies}"
    );

    let all = run("all");
    for title in [
        "WORKLOADS:",
        "SERVICES:",
        "POLICIES:",
        "PODS:",
        "CERTIFICATES:",
    ] {
        assert!(all.contains(title), "{title}: {all}");
    }
    assert!(
        all.contains("demo        web-0   yes       spiffe://cluster.local/ns/demo/sa/web   /var/run/netns/cni-1234"),
        "{all}"
    );
    assert!(
        all.contains("spiffe://cluster.local/ns/demo/sa/web   1      1h0m ago   in 20h0m"),
        "{all}"
    );

    // JSON: the section as the agent served it.
    let out = stdout(&weftctl(&[
        "proxy-config",
        "services",
        "--agent",
        &agent,
        "-o",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["hostname"], "web.demo.svc.cluster.local");
    assert_eq!(json[0]["ports"]["80"], 8080);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|r| r.starts_with("GET /config_dump HTTP/1.1\r\n"))
    );
}

#[test]
fn proxy_config_of_a_starting_agent() {
    let dump = r#"{"workloadState":{"workloads":[],"services":[],"policies":[]},"pods":null,"certificates":null}"#;
    let (addr, _) = serve(vec![("/config_dump", 200, dump.into())]);
    let out = stdout(&weftctl(&["proxy-config", "--agent", &addr.to_string()]));
    assert!(out.contains("WORKLOADS:\nno workloads\n"), "{out}");
    assert!(
        out.contains("PODS:\nthe agent is not enrolling pods yet (still starting)\n"),
        "{out}"
    );
}

#[test]
fn stats_prints_every_counter() {
    let body = r#"{"connections_active":3,"connections_denied":{"policy_deny":2,"no_allow_match":0,"tls_handshake":1}}"#;
    let (addr, _) = serve(vec![("/stats", 200, body.into())]);
    let out = stdout(&weftctl(&["stats", "--agent", &addr.to_string()]));
    assert_eq!(
        out,
        "connections_active                  3\n\
         connections_denied.no_allow_match   0\n\
         connections_denied.policy_deny      2\n\
         connections_denied.tls_handshake    1\n"
    );
}

#[test]
fn nothing_listening_is_a_clear_error() {
    // Bind, then close: nothing listens on that port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = weftctl(&["proxy-status", "--control", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "weftctl: cannot reach the control plane's debug endpoint at {addr}: connection refused — is weft-control running"
        )),
        "{stderr}"
    );
    let out = weftctl(&["stats", "--agent", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "weftctl: cannot reach the agent's admin endpoint at {addr}: connection refused — is weft-agent running"
        )),
        "{stderr}"
    );
}

#[test]
fn wrong_port_and_silent_server_are_clear_errors() {
    // A server without the path: the agent's readiness port, say.
    let (addr, _) = serve(vec![]);
    let out = weftctl(&["proxy-config", "--agent", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "weftctl: the agent's admin endpoint at {addr} answered GET /config_dump with HTTP 404: not found\n"
        )
    );

    // Accepts, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let out = weftctl(&["stats", "--agent", &addr.to_string(), "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "weftctl: the agent's admin endpoint at {addr} did not answer GET /stats within 300ms"
        )),
        "{stderr}"
    );
    drop(silent);
}
