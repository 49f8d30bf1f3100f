//! A DestinationRule on a Service's opaque TCP port, with no
//! VirtualService, end to end with weft's real binaries: the client's
//! agent picks each connection's endpoint as Envoy's TCP proxy does.
//! `useSourceIp` keeps each client pod on one backend; `maxConnections`
//! refuses the connection past the limit while the others are open;
//! outlier detection ejects a pod that refuses connections, so that the
//! next ones all go to the pod that takes them; `idleTimeout` and
//! `maxConnectionDuration` close connections (the rule's top level's, not
//! a port's, as Envoy's TCP proxy has them); `connectTimeout` bounds the
//! connect to a pod that drops SYNs, on another node and on the client's.
//! Needs root and the binaries.

mod common;

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Result, ensure};
use common::*;
use weft_sim::{Cluster, PodSpec, ServicePort, httpapp};

/// A DestinationRule for `host` in `db` with `policy`'s lines under
/// `trafficPolicy`.
fn rule(cluster: &Cluster, host: &str, policy: &str) -> Result<()> {
    apply(
        cluster,
        &format!("{host}-dr"),
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {host}\n  namespace: db\nspec:\n  host: {host}\n  trafficPolicy:\n{policy}"
        ),
    )
}

/// The pod that served one request on a new connection to `url`, or the
/// error the client got.
fn served_by(pod: &weft_sim::Pod, url: &str) -> Result<String> {
    let reply = httpapp::get_one(pod, url, &[])?;
    ensure!(reply.status == 200, "{url}: {reply:?}");
    Ok(reply.header("x-served-by").unwrap_or("-").to_string())
}

/// Makes `pod`'s port 5432 drop every SYN (iptables in its netns).
fn drop_syns(pod: &weft_sim::Pod) -> Result<()> {
    let mut iptables = std::process::Command::new("/usr/sbin/iptables-legacy");
    iptables.args([
        "-w", "10", "-A", "INPUT", "-p", "tcp", "--dport", "5432", "--syn", "-j", "DROP",
    ]);
    pod.run(iptables, TIMEOUT)?.check(&format!(
        "iptables-legacy: drop SYNs to {}:5432 (apt-get install -y iptables)",
        pod.name()
    ))?;
    Ok(())
}

/// Waits until a connection from `app` to `url` fails and node-1's agent
/// logs `cut`, the bound that cut its connect.
fn connect_cut(
    cluster: &Cluster,
    app: &weft_sim::Pod,
    url: &str,
    cut: &str,
    what: &str,
) -> Result<()> {
    converge(what, || {
        let out = app.run_http(&["get", url, "--timeout", "6"], TIMEOUT)?;
        ensure!(
            !out.success(),
            "a connect to a port that drops SYNs succeeded: {out:?}"
        );
        Ok(cluster.node("node-1")?.agent_log().contains(cut))
    })
}

#[test]
fn destination_rules_pick_balance_limit_and_eject_on_tcp_ports() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("db", &[AMBIENT])?;
        let tcp = [ServicePort::tcp("tcp", 5432, 5432)];
        // `pg`: three pods. `capped`: one. `flaky`: one pod serving 5432,
        // one whose app listens elsewhere (its 5432 refuses).
        let pg = [("app", "pg")];
        let _pg: Vec<_> = (0..3)
            .map(|i| backend(cluster, if i == 0 { "node-1" } else { "node-2" }, "db", &format!("pg-{i}"), &pg, 5432, &[]))
            .collect::<Result<_>>()?;
        let _capped = backend(cluster, "node-2", "db", "capped-0", &[("app", "capped")], 5432, &[])?;
        let flaky = [("app", "flaky")];
        let _up = backend(cluster, "node-2", "db", "flaky-up", &flaky, 5432, &[])?;
        let _down = backend(cluster, "node-2", "db", "flaky-down", &flaky, 5433, &[])?;
        // `quiet` and `patient`: one pod that answers after 3 s of
        // silence; `bounded`: one that answers at once.
        let slow = [("slow", "yes")];
        let _slow = backend(cluster, "node-2", "db", "slow-0", &slow, 5432, &["--delay-ms", "3000"])?;
        let _bounded = backend(cluster, "node-2", "db", "bounded-0", &[("app", "bounded")], 5432, &[])?;
        let clients = [
            client(cluster, "node-1", "db", "app-a")?,
            client(cluster, "node-1", "db", "app-b")?,
            client(cluster, "node-2", "db", "app-c")?,
        ];
        let pg_vip = cluster.add_service("db", "pg", &pg, &tcp)?;
        let capped_vip = cluster.add_service("db", "capped", &[("app", "capped")], &tcp)?;
        let flaky_vip = cluster.add_service("db", "flaky", &flaky, &tcp)?;
        let quiet_vip = cluster.add_service("db", "quiet", &slow, &tcp)?;
        let patient_vip = cluster.add_service("db", "patient", &slow, &tcp)?;
        let bounded_vip = cluster.add_service("db", "bounded", &[("app", "bounded")], &tcp)?;
        let ported_vip = cluster.add_service("db", "ported", &slow, &tcp)?;
        rule(cluster, "pg", "    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n")?;
        rule(cluster, "capped", "    connectionPool:\n      tcp:\n        maxConnections: 1\n")?;
        rule(
            cluster,
            "flaky",
            "    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 5m\n      maxEjectionPercent: 100\n",
        )?;
        rule(cluster, "quiet", "    connectionPool:\n      tcp:\n        idleTimeout: 1s\n")?;
        rule(cluster, "bounded", "    connectionPool:\n      tcp:\n        maxConnectionDuration: 1s\n")?;
        // Port-level settings for the port, with a longer idle timeout:
        // Envoy's TCP proxy takes its idle timeout from the top level.
        rule(
            cluster,
            "ported",
            "    connectionPool:\n      tcp:\n        idleTimeout: 1s\n    portLevelSettings:\n    - port:\n        number: 5432\n      loadBalancer:\n        simple: ROUND_ROBIN\n      connectionPool:\n        tcp:\n          idleTimeout: 30s\n",
        )?;
        let app = &clients[0];

        // useSourceIp: every connection of a client pod to one backend
        // (at random, ten connections over three pods almost never would).
        let url = format!("http://{pg_vip}:5432/pg");
        converge("hashing connections on the source address", || {
            let pods: BTreeSet<String> = (0..8).map(|_| served_by(app, &url)).collect::<Result<_>>()?;
            Ok(pods.len() == 1)
        })?;
        for pod in &clients {
            let pods: BTreeSet<String> = (0..10).map(|_| served_by(pod, &url)).collect::<Result<_>>()?;
            ensure!(pods.len() == 1, "{}'s connections must all go to one pod: {pods:?}", pod.name());
        }

        // maxConnections: 1. While one connection is open (a body that
        // takes 4 s), the next is refused; once it has closed, the next
        // is served.
        let url = format!("http://{capped_vip}:5432/capped");
        let slow = format!("http://{capped_vip}:5432/drip/4000");
        converge("the second connection refused at maxConnections: 1", || {
            let mut held = app.spawn_http(&["get", &slow])?;
            std::thread::sleep(Duration::from_millis(500));
            let refused = httpapp::get_one(&clients[1], &url, &[]).is_err();
            held.kill();
            std::thread::sleep(Duration::from_millis(300));
            Ok(refused)
        })?;
        let mut held = app.spawn_http(&["get", &slow])?;
        std::thread::sleep(Duration::from_millis(500));
        let second = httpapp::get_one(&clients[1], &url, &[]);
        ensure!(second.is_err(), "a second connection while the first is open: {second:?}");
        // Counted as ztunnel counts a failed connection, under Envoy's
        // flag for the breaker.
        let metrics = cluster.node("node-1")?.agent_metrics()?;
        ensure!(
            metrics.lines().any(|l| l.starts_with("istio_tcp_connections_failed_total{")
                && l.contains(r#"response_flags="UO""#)
                && l.contains(r#"destination_service="capped.db.svc.cluster.local""#)),
            "no istio_tcp_connections_failed_total with response_flags=\"UO\" for capped"
        );
        let done = held.wait_exit(Duration::from_secs(20))?;
        ensure!(done.success(), "the held connection's request: {}", held.log_tail(5));
        let after = served_by(&clients[1], &url)?;
        ensure!(after == "capped-0", "after the first closed: {after}");

        // Outlier detection: flaky-down refuses; after two refusals it is
        // ejected for 5 minutes and every connection goes to flaky-up.
        let url = format!("http://{flaky_vip}:5432/flaky");
        converge("flaky-down ejected", || {
            let results: Vec<bool> = (0..16).map(|_| served_by(app, &url).is_ok()).collect();
            Ok(results[6..].iter().all(|ok| *ok))
        })?;
        for _ in 0..20 {
            let pod = served_by(app, &url)?;
            ensure!(pod == "flaky-up", "with flaky-down ejected, a connection went to {pod}");
        }

        // tcp.idleTimeout: 1s closes a connection that carries nothing
        // for a second (the answer takes 3); the same pod behind a
        // Service without the rule answers.
        let answer = served_by(app, &format!("http://{patient_vip}:5432/patient"))?;
        ensure!(answer == "slow-0", "without the rule: {answer}");
        converge("the idle connection closed", || {
            Ok(httpapp::get_one(app, &format!("http://{quiet_vip}:5432/quiet"), &[]).is_err())
        })?;
        converge("the idle connection closed at the top level's idleTimeout", || {
            Ok(httpapp::get_one(app, &format!("http://{ported_vip}:5432/ported"), &[]).is_err())
        })?;
        // tcp.maxConnectionDuration: 1s closes a connection whose body is
        // still coming after a second (capped's 4 s one came whole).
        ensure!(served_by(app, &format!("http://{bounded_vip}:5432/quick"))? == "bounded-0");
        converge("the connection closed at its maximum duration", || {
            Ok(httpapp::get_one(app, &format!("http://{bounded_vip}:5432/drip/3000"), &[]).is_err())
        })?;

        // tcp.connectTimeout: 1s bounds the connect to a pod outside the
        // mesh (plaintext) whose port drops every SYN: the client's agent
        // gives up after a second.
        cluster.add_namespace("legacy", &[])?;
        let dark = cluster.add_pod(PodSpec::new("node-2", "legacy", "dark-0").label("app", "dark"))?;
        drop_syns(&dark)?;
        let dark_vip = cluster.add_service("legacy", "dark", &[("app", "dark")], &tcp)?;
        apply(cluster, "dark-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dark\n  namespace: legacy\nspec:\n  host: dark.legacy.svc.cluster.local\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 1s\n")?;
        // The client's agent says which bound cut it (the agent's own is
        // 10 s).
        let cut = format!("connecting to {}: no answer within 1s", dark.addr(5432));
        let url = format!("http://{dark_vip}:5432/dark");
        connect_cut(cluster, app, &url, &cut, "the DestinationRule's connect timeout cut a connect")?;

        // The same bound on the same node: `shy-0` is in the mesh on the
        // client's node, so node-1's agent connects to its app directly
        // (no tunnel), and that connect is the client's upstream connect.
        let shy = backend(cluster, "node-1", "db", "shy-0", &[("app", "shy")], 5432, &[])?;
        drop_syns(&shy.pod)?;
        let shy_vip = cluster.add_service("db", "shy", &[("app", "shy")], &tcp)?;
        rule(cluster, "shy", "    connectionPool:\n      tcp:\n        connectTimeout: 1s\n")?;
        let cut = format!("the app at {}: connecting to the app did not finish within 1s", shy.pod.addr(5432));
        let url = format!("http://{shy_vip}:5432/shy");
        connect_cut(cluster, app, &url, &cut, "the DestinationRule's connect timeout cut a same-node connect")?;
        // And on an HTTP port of the same pod: the destination's HTTP side
        // connects to the app within the client's bound too (503).
        let shy_web_vip = cluster.add_service("db", "shy-web", &[("app", "shy")], &[ServicePort::http("http", 80, 5432)])?;
        rule(cluster, "shy-web", "    connectionPool:\n      tcp:\n        connectTimeout: 1s\n")?;
        let url = format!("http://{shy_web_vip}/shy");
        converge("the connect timeout cut a same-node connect for an HTTP port", || {
            let reply = httpapp::get_one(app, &url, &["--timeout", "6"])?;
            ensure!(reply.status == 503, "a connect to a port that drops SYNs: {reply:?}");
            let log = cluster.node("node-1")?.agent_log();
            Ok(log.lines().any(|l| l.contains("delivery to the app failed") && l.contains(&cut)))
        })?;
        Ok(())
    })
}
