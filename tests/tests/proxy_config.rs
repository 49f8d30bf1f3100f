//! `weftctl proxy-config routes|clusters|endpoints|secret|listeners|log`
//! and `weftctl bug-report` against a running agent on a 2-node simulated
//! cluster with weft's real binaries: a VirtualService with a weighted
//! route and a DestinationRule with subsets show up as the agent holds
//! them (text and `-o json`), the log level changes at runtime, and the
//! bug report archives every dump. Needs root and the binaries
//! (weftctl included: `cargo build -p weftctl`).

mod common;

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};
use common::*;
use serde_json::Value;
use weft_sim::{Cluster, Finished, Node, ServicePort, httpapp, wait_for};

const REVIEWS_RULE: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    connectionPool:
      tcp:
        maxConnections: 50
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5s
      baseEjectionTime: 15s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: RANDOM
"#;

fn reviews_routes(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts:
  - reviews
  http:
  - name: canary
    match:
    - uri:
        prefix: /reviews
    route:
    - destination:
        host: reviews
        subset: v1
      weight: {v1}
    - destination:
        host: reviews
        subset: v2
      weight: {v2}
    timeout: 3s
    retries:
      attempts: 2
      perTryTimeout: 1s
"#
    )
}

const HOST: &str = "reviews.shop.svc.cluster.local";

/// Runs `weftctl args` in `node`'s network namespace (where the agent's
/// admin API listens on 127.0.0.1:15000).
fn weftctl(cluster: &Cluster, node: &Node, args: &[&str]) -> Result<Finished> {
    let mut cmd = Command::new(cluster.bin_dir().join("weftctl"));
    cmd.args(args);
    node.run(cmd, TIMEOUT)
}

/// `weftctl args`, which must succeed; its standard output.
fn text(cluster: &Cluster, node: &Node, args: &[&str]) -> Result<String> {
    let what = format!("weftctl {}", args.join(" "));
    Ok(weftctl(cluster, node, args)?.check(&what)?.stdout)
}

/// `weftctl proxy-config SECTION -o json`, parsed.
fn json(cluster: &Cluster, node: &Node, section: &str) -> Result<Value> {
    let out = text(cluster, node, &["proxy-config", section, "-o", "json"])?;
    serde_json::from_str(&out).with_context(|| format!("proxy-config {section} -o json: {out}"))
}

/// The line of `table` that contains every one of `cells`.
fn row<'a>(table: &'a str, cells: &[&str]) -> Result<&'a str> {
    table
        .lines()
        .find(|l| cells.iter().all(|c| l.contains(c)))
        .with_context(|| format!("no row with {cells:?} in:\n{table}"))
}

/// The element of a JSON array whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> Result<&'a Value> {
    list.as_array()
        .and_then(|l| l.iter().find(|v| v[key] == value))
        .with_context(|| format!("no element with {key}={value} in {list:#}"))
}

#[test]
fn proxy_config_shows_routes_clusters_endpoints_secrets_listeners_and_changes_the_log_level()
-> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("shop", &[AMBIENT])?;
        let v1 = backend(
            cluster,
            "node-2",
            "shop",
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            9080,
            &[],
        )?;
        let v2 = backend(
            cluster,
            "node-1",
            "shop",
            "reviews-v2",
            &[("app", "reviews"), ("version", "v2")],
            9080,
            &[],
        )?;
        let client = client(cluster, "node-1", "shop", "productpage")?;
        let vip = cluster.add_service(
            "shop",
            "reviews",
            &[("app", "reviews")],
            &[ServicePort::http("http", 9080, 9080)],
        )?;
        apply(cluster, "reviews-dr", REVIEWS_RULE)?;
        apply(cluster, "reviews-vs", &reviews_routes(80, 20))?;
        let node = cluster.node("node-1")?;
        let url = format!("http://{vip}:9080/reviews/1");
        converge("the 80/20 route at the client's agent", || {
            let load = httpapp::load(&client, &url, &["--count", "20"])?;
            let routes = json(cluster, node, "routes")?;
            Ok(load.ok == 20 && routes.to_string().contains("shop/reviews"))
        })?;

        // routes: the VirtualService as the agent compiled it.
        let routes = text(cluster, node, &["proxy-config", "routes"])?;
        ensure!(
            routes.starts_with("NAME ")
                && routes.lines().next().is_some_and(|h| h.contains("VHOST")
                    && h.contains("MATCH")
                    && h.ends_with("VIRTUAL SERVICE")),
            "routes header:\n{routes}"
        );
        row(
            &routes,
            &[
                &format!("shop/{HOST}"),
                "canary",
                "/reviews*",
                "reviews.shop:9080|v1 80%, reviews.shop:9080|v2 20%",
                "3s",
                "2 (per try 1s)",
                "reviews.shop",
            ],
        )?;
        let routes = json(cluster, node, "routes")?;
        let config = find(&routes, "hostname", HOST)?;
        let canary = find(&config["http"], "name", "canary")?;
        ensure!(canary["virtual_service"] == "shop/reviews", "{canary:#}");
        ensure!(
            canary["match"][0]["uri"]["prefix"] == "/reviews",
            "{canary:#}"
        );
        ensure!(
            canary["timeout"] == "3s" && canary["retries"]["attempts"] == 2,
            "{canary:#}"
        );
        let dests = &canary["route"];
        ensure!(
            dests[0]["subset"] == "v1"
                && dests[0]["weight"] == 80
                && dests[1]["subset"] == "v2"
                && dests[1]["weight"] == 20,
            "weights: {dests:#}"
        );

        // clusters: one row per host, port and subset, with the rule.
        let clusters = text(cluster, node, &["proxy-config", "clusters"])?;
        ensure!(
            clusters.starts_with("SERVICE FQDN   ") && clusters.contains("DESTINATION RULE"),
            "clusters header:\n{clusters}"
        );
        row(
            &clusters,
            &[
                HOST,
                " 9080 ",
                " v1 ",
                "outbound",
                "EDS",
                "reviews.shop",
                "ROUND_ROBIN",
                "5xx=7",
                "conn=50",
            ],
        )?;
        row(
            &clusters,
            &[HOST, " 9080 ", " v2 ", "reviews.shop", "RANDOM"],
        )?;
        row(&clusters, &[HOST, " 9080 ", " - ", "ROUND_ROBIN"])?;
        let clusters = json(cluster, node, "clusters")?;
        let v1_cluster = find(&clusters, "name", &format!("outbound|9080|v1|{HOST}"))?;
        ensure!(
            v1_cluster["destination_rules"][0] == "shop/reviews",
            "{v1_cluster:#}"
        );
        let policy = &v1_cluster["policy"];
        ensure!(
            policy["load_balancer"] == "ROUND_ROBIN"
                && policy["connection_pool"]["max_connections"] == 50
                && policy["outlier_detection"]["consecutive_5xx_errors"] == 7
                && policy["outlier_detection"]["base_ejection_time"] == "15s",
            "v1 policy: {policy:#}"
        );
        let v2_cluster = find(&clusters, "name", &format!("outbound|9080|v2|{HOST}"))?;
        ensure!(
            v2_cluster["policy"]["load_balancer"] == "RANDOM",
            "{v2_cluster:#}"
        );

        // endpoints: each subset's pod, healthy, not ejected.
        let v1_addr = format!("{}:9080", v1.pod.ip());
        let v2_addr = format!("{}:9080", v2.pod.ip());
        let endpoints = text(cluster, node, &["proxy-config", "endpoints"])?;
        ensure!(
            endpoints.starts_with("ENDPOINT ") && endpoints.contains("OUTLIER CHECK"),
            "endpoints header:\n{endpoints}"
        );
        row(
            &endpoints,
            &[
                &v1_addr,
                "HEALTHY",
                " OK ",
                &format!("outbound|9080|v1|{HOST}"),
            ],
        )?;
        row(
            &endpoints,
            &[
                &v2_addr,
                "HEALTHY",
                " OK ",
                &format!("outbound|9080|v2|{HOST}"),
            ],
        )?;
        ensure!(
            !endpoints
                .lines()
                .any(|l| l.contains(&v2_addr) && l.contains("|v1|")),
            "v2's pod listed in the v1 subset:\n{endpoints}"
        );
        let endpoints = json(cluster, node, "endpoints")?;
        let v1_endpoint = endpoints
            .as_array()
            .and_then(|l| {
                l.iter().find(|e| {
                    e["address"] == v1_addr && e["cluster"] == format!("outbound|9080|v1|{HOST}")
                })
            })
            .with_context(|| format!("no {v1_addr} in the v1 subset: {endpoints:#}"))?;
        ensure!(
            v1_endpoint["health"] == "HEALTHY" && v1_endpoint["outlier_ejected"] == false,
            "{v1_endpoint:#}"
        );

        // secret: the certificates of node-1's pods.
        let secrets = text(cluster, node, &["proxy-config", "secret"])?;
        for identity in [
            "spiffe://cluster.local/ns/shop/sa/productpage",
            "spiffe://cluster.local/ns/shop/sa/reviews",
        ] {
            row(&secrets, &[identity, "Cert Chain", "VALID"])?;
        }
        let secrets = json(cluster, node, "secret")?;
        let cert = find(
            &secrets,
            "identity",
            "spiffe://cluster.local/ns/shop/sa/productpage",
        )?;
        ensure!(
            cert["serial"].as_str().is_some_and(|s| s.len() >= 2)
                && cert["root"].as_str().is_some_and(|r| !r.is_empty())
                && cert["not_before"]
                    .as_u64()
                    .is_some_and(|from| { cert["not_after"].as_u64().is_some_and(|to| from < to) }),
            "certificate: {cert:#}"
        );

        // listeners: the agent's own and the three in each enrolled pod.
        let listeners = text(cluster, node, &["proxy-config", "listeners"])?;
        row(&listeners, &["(agent)", "admin", "127.0.0.1:15000"])?;
        row(
            &listeners,
            &["shop/productpage", "outbound", "127.0.0.1:15001"],
        )?;
        row(
            &listeners,
            &["shop/productpage", "inbound plaintext", "127.0.0.1:15006"],
        )?;
        row(
            &listeners,
            &[
                "shop/productpage",
                "HBONE",
                &format!("{}:15008", client.ip()),
            ],
        )?;
        row(
            &listeners,
            &[
                "shop/reviews-v2",
                "HBONE",
                &format!("{}:15008", v2.pod.ip()),
            ],
        )?;
        let listeners = json(cluster, node, "listeners")?;
        let hbone: Vec<&Value> = listeners
            .as_array()
            .context("listeners is a list")?
            .iter()
            .filter(|l| l["name"] == "HBONE")
            .collect();
        ensure!(
            hbone.len() == 2,
            "one HBONE listener per pod on node-1: {listeners:#}"
        );

        // log: read, refuse a bad level, change it at runtime.
        ensure!(text(cluster, node, &["proxy-config", "log"])? == "log level: info\n");
        let debug_lines = || {
            node.agent_log()
                .lines()
                .filter(|l| l.contains(" DEBUG "))
                .count()
        };
        ensure!(
            debug_lines() == 0,
            "debug lines at level info:\n{}",
            node.agent_log_tail(20)
        );
        let bad = weftctl(
            cluster,
            node,
            &["proxy-config", "log", "--level", "verbose"],
        )?;
        ensure!(
            !bad.success() && bad.stderr.contains("`verbose` is not a log level"),
            "a bad level must be refused, naming it: {bad:?}"
        );
        ensure!(
            text(cluster, node, &["proxy-config", "log", "--level", "debug"])?
                == "log level: debug\n"
        );
        let level = text(cluster, node, &["proxy-config", "log", "-o", "json"])?;
        ensure!(
            serde_json::from_str::<Value>(&level)?["level"] == "debug",
            "{level}"
        );
        // A config change now logs its xDS update at debug level.
        apply(cluster, "reviews-vs", &reviews_routes(50, 50))?;
        wait_for("a debug line from the agent", TIMEOUT, || {
            Ok(node
                .agent_log()
                .lines()
                .any(|l| l.contains(" DEBUG ") && l.contains("applied update"))
                .then_some(()))
        })
        .with_context(|| node.agent_log_tail(30))?;

        // bug-report: both agents asked; node-2's admin API is on its own
        // localhost, so from node-1 it is down: noted, not fatal.
        let archive = cluster.dir().join("bug-report.tar.gz");
        let control = cluster.control().debug_addr().to_string();
        let node2 = format!("{}:15000", cluster.node("node-2")?.ip());
        let report = weftctl(
            cluster,
            node,
            &[
                "bug-report",
                "--control",
                &control,
                "--agent",
                "127.0.0.1:15000",
                "--agent",
                &node2,
                "-o",
                archive.to_str().context("archive path")?,
            ],
        )?
        .check("weftctl bug-report")?;
        ensure!(report.stdout.contains("6 failed"), "{}", report.stdout);
        check_archive(&archive, &node2)
    })
}

/// The archive holds the README, the control plane's dumps and the
/// reachable agent's; its config dump is JSON; the README names what
/// failed.
fn check_archive(archive: &Path, down_agent: &str) -> Result<()> {
    let tar = |args: &[&str]| -> Result<String> {
        let out = Command::new("tar").args(args).arg(archive).output()?;
        ensure!(
            out.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let listing = tar(&["-tzf"])?;
    let files: Vec<&str> = listing.lines().collect();
    let top = files
        .first()
        .and_then(|f| f.split('/').next())
        .context("an empty archive")?;
    ensure!(top.starts_with("weft-bug-report-"), "{listing}");
    let mut expected = vec!["README.txt".to_string()];
    for f in [
        "syncz.json",
        "config_errors.json",
        "config.json",
        "metrics.txt",
        "ready.txt",
    ] {
        expected.push(format!("control/{f}"));
    }
    for f in [
        "config_dump.json",
        "stats.json",
        "stats_prometheus.txt",
        "config.json",
        "logging.json",
        "logs.txt",
    ] {
        expected.push(format!("agents/127.0.0.1_15000/{f}"));
    }
    let expected: Vec<String> = expected.into_iter().map(|f| format!("{top}/{f}")).collect();
    ensure!(
        files == expected,
        "archive files:\n{listing}\nexpected:\n{}",
        expected.join("\n")
    );
    let extract = |file: &str| {
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(archive)
            .arg(format!("{top}/{file}"))
            .output()?;
        ensure!(out.status.success(), "extracting {file}");
        Ok(String::from_utf8(out.stdout)?)
    };
    let dump: Value = serde_json::from_str(&extract("agents/127.0.0.1_15000/config_dump.json")?)
        .context("the agent's config dump in the archive is not JSON")?;
    ensure!(
        dump["l7"]["routes"].to_string().contains("shop/reviews") && dump["clusters"].is_array(),
        "config dump: {dump:#}"
    );
    let logs = extract("agents/127.0.0.1_15000/logs.txt")?;
    ensure!(
        logs.contains("log level changed"),
        "recent log lines: {logs}"
    );
    let readme = extract("README.txt")?;
    let down_dir = down_agent.replace(':', "_");
    ensure!(
        readme.contains(&format!("agents/{down_dir}/config_dump.json  (GET http://{down_agent}/config_dump): cannot reach"))
            && readme.contains("control/syncz.json  ("),
        "README.txt:\n{readme}"
    );
    Ok(())
}
