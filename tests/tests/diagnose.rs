//! `weftctl diagnose` on a 2-node simulated cluster with weft's real
//! binaries: each cause of the Istio "503 drill" is produced for real
//! (the request fails), then diagnose must name it, with the object and
//! field to fix and the verdict's cause, in its JSON and in its text. One
//! cluster serves every case; each case undoes what it did. Needs root
//! and the binaries, `weftctl` included (`cargo xtask test` builds them).
//!
//! weftctl runs in the control plane's network namespace, as an operator
//! with a port-forward to 15014 would; it finds each agent at the address
//! its xDS stream comes from, so the agents serve their admin API on the
//! node's address here (`--admin-addr 0.0.0.0:15000`).

mod common;

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use common::*;
use serde_json::Value;
use weft_sim::{Cluster, Pod, ServicePort, httpapp, wait_for};

/// What one run of `weftctl diagnose` gave.
struct Diagnosis {
    /// 0: nothing failed; 1: a check failed.
    code: i32,
    text: String,
    json: Value,
}

impl Diagnosis {
    fn cause(&self) -> &str {
        self.json["verdict"]["cause"].as_str().unwrap_or("")
    }

    fn status(&self) -> &str {
        self.json["verdict"]["status"].as_str().unwrap_or("")
    }

    /// The failed checks.
    fn failed(&self) -> Vec<&Value> {
        self.checks().filter(|c| c["status"] == "fail").collect()
    }

    fn checks(&self) -> impl Iterator<Item = &Value> {
        self.json["checks"].as_array().into_iter().flatten()
    }

    /// The verdict's fix: `(object, field)`.
    fn fix(&self) -> (&str, &str) {
        let fix = &self.json["verdict"]["fix"];
        (
            fix["object"].as_str().unwrap_or(""),
            fix["field"].as_str().unwrap_or(""),
        )
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n{}", self.code, self.text)
    }
}

/// `weftctl <args>` in the control plane's netns: exit code, stdout,
/// stderr.
fn weftctl(cluster: &Cluster, args: &[&str]) -> Result<(i32, String, String)> {
    let binary = cluster.bin_dir().join("weftctl");
    ensure!(
        binary.is_file(),
        "{} is missing: build it first (cargo build -p weftctl, or cargo xtask test)",
        binary.display()
    );
    let control = cluster.control().debug_addr().to_string();
    let out = cluster
        .control()
        .netns()
        .run(|| {
            Command::new(&binary)
                .args(["--timeout", "2s"])
                .args(args)
                .args(["--control", &control])
                .output()
        })?
        .context("running weftctl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `weftctl diagnose SRC DST` twice, as JSON and as text.
fn diagnose(cluster: &Cluster, src: &str, dst: &str) -> Result<Diagnosis> {
    let (code, json, stderr) = weftctl(cluster, &["diagnose", src, dst, "--output", "json"])?;
    ensure!(
        code == 0 || code == 1,
        "diagnose failed to run (exit {code}): {stderr}"
    );
    let json: Value =
        serde_json::from_str(&json).with_context(|| format!("not JSON: {json}\n{stderr}"))?;
    let (text_code, text, stderr) = weftctl(cluster, &["diagnose", src, dst])?;
    ensure!(
        text_code == code,
        "text exit {text_code} vs json exit {code}: {stderr}"
    );
    Ok(Diagnosis { code, text, json })
}

/// Runs diagnose until `want` holds (config reaches the control plane and
/// the agents asynchronously); the last diagnosis on failure.
fn diagnose_until(
    cluster: &Cluster,
    src: &str,
    dst: &str,
    what: &str,
    want: impl Fn(&Diagnosis) -> bool,
) -> Result<Diagnosis> {
    let mut last = None;
    let found = wait_for(what, TIMEOUT, || {
        let d = diagnose(cluster, src, dst)?;
        let hit = want(&d);
        last = Some(d);
        Ok(hit.then_some(()))
    });
    let last = last.context("diagnose never ran")?;
    found.with_context(|| format!("last diagnosis:\n{last}"))?;
    Ok(last)
}

/// The verdict names `cause`, the fix names `object` (and a field starting
/// with `field`), and the text's last line says the same.
fn expect_verdict(d: &Diagnosis, cause: &str, object: &str, field: &str) -> Result<()> {
    ensure!(d.code == 1 && d.status() == "fail", "not a failure:\n{d}");
    ensure!(
        d.cause() == cause,
        "verdict cause {} instead of {cause}:\n{d}",
        d.cause()
    );
    let (o, f) = d.fix();
    ensure!(
        o == object && f.starts_with(field),
        "fix ({o}, {f}) instead of ({object}, {field}…):\n{d}"
    );
    let verdict = d.text.lines().last().unwrap_or("");
    ensure!(
        verdict.starts_with("verdict: ✗") && verdict.contains(&format!("({cause})")),
        "text verdict: {verdict}\n{d}"
    );
    let fix_line = format!("[fix: {object} {f}]");
    ensure!(
        d.text
            .lines()
            .any(|l| l.starts_with("✗") && l.contains(&fix_line)),
        "no failed line with {fix_line}:\n{d}"
    );
    Ok(())
}

fn vs(cluster: &Cluster, destination: &str) -> Result<()> {
    apply(
        cluster,
        "vs-api",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  hosts: [api]\n  http:\n  - route:\n    - destination:\n{destination}"
        ),
    )
}

/// The status of `GET /` from `from` to `url` (0: no answer).
fn status(from: &Pod, url: &str) -> u16 {
    httpapp::get_one(from, url, &["--timeout", "3"]).map_or(0, |r| r.status)
}

fn converge_status(from: &Pod, url: &str, want: u16) -> Result<()> {
    let mut got = 0;
    wait_for(&format!("{url} to answer {want}"), TIMEOUT, || {
        got = status(from, url);
        Ok((got == want).then_some(()))
    })
    .with_context(|| format!("last status {got}"))
}

#[test]
fn diagnose_names_each_cause_of_a_failing_request() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--admin-addr", "0.0.0.0:15000"])
        .build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("shop", &[AMBIENT])?;
        cluster.add_namespace("frontend", &[AMBIENT])?;
        cluster.add_namespace("legacy", &[])?;
        let api = backend(cluster, "node-2", "shop", "api-v1", &[("app", "api"), ("version", "v1")], 8080, &[])?;
        let cart = backend(cluster, "node-2", "shop", "cart-0", &[("app", "cart")], 8080, &[])?;
        let web = client(cluster, "node-1", "frontend", "web")?;
        let outsider = client(cluster, "node-1", "legacy", "outsider")?;
        let api_vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let url = format!("http://{api_vip}:8080/");
        converge_status(&web, &url, 200)?;

        // Healthy: every check passes, and the counters saw the 200s.
        let healthy = diagnose_until(cluster, "frontend/web", "api.shop:8080", "a healthy diagnosis", |d| {
            d.status() == "ok"
        })?;
        ensure!(healthy.code == 0, "{healthy}");
        ensure!(
            healthy.checks().all(|c| c["status"] == "ok"),
            "a check is not ok:\n{healthy}"
        );
        for check in ["sync", "mesh", "endpoints", "route", "protocol", "mtls", "authorization", "certificates", "telemetry"] {
            ensure!(healthy.checks().any(|c| c["check"] == check), "no {check} check:\n{healthy}");
        }
        ensure!(
            healthy.text.contains("resolves to 1 endpoint(s): api-v1")
                && healthy.text.contains("is HTTP (appProtocol http)")
                && healthy.text.contains("request(s) answered 200"),
            "{healthy}"
        );
        ensure!(
            healthy.text.lines().last() == Some("verdict: ✓ all checks passed: the request should succeed"),
            "{healthy}"
        );

        // Unknown names: said so, with close names.
        let (code, _, stderr) = weftctl(cluster, &["diagnose", "frontend/wbe", "api.shop"])?;
        ensure!(
            code == 1 && stderr.contains("SRC `frontend/wbe` is not a pod") && stderr.contains("did you mean frontend/web?"),
            "exit {code}: {stderr}"
        );
        let (code, _, stderr) = weftctl(cluster, &["diagnose", "frontend/web", "apj.shop:8080"])?;
        ensure!(code == 1 && stderr.contains("did you mean api.shop"), "exit {code}: {stderr}");

        // 1. A VirtualService to a host that does not exist, then to a
        //    port the Service does not have.
        vs(cluster, "        host: api-v9\n")?;
        converge_status(&web, &url, 503)?;
        let d = diagnose_until(cluster, "frontend/web", "api.shop:8080", "a route to no host", |d| d.cause() == "route")?;
        expect_verdict(&d, "route", "VirtualService shop/api", "spec.http[0].route[0].destination.host")?;
        ensure!(d.text.contains("routes to host api-v9, which is no Service or ServiceEntry"), "{d}");
        vs(cluster, "        host: api\n        port:\n          number: 9999\n")?;
        let d = diagnose_until(cluster, "frontend/web", "api.shop:8080", "a route to no port", |d| {
            d.fix().1.ends_with("port.number")
        })?;
        expect_verdict(&d, "route", "VirtualService shop/api", "spec.http[0].route[0].destination.port.number")?;
        ensure!(d.text.contains("port 9999, which Service shop/api does not have (it has 8080)"), "{d}");

        // 2. A subset the DestinationRule does not define.
        apply(
            cluster,
            "dr-api",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  host: api\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n",
        )?;
        vs(cluster, "        host: api\n        subset: v2\n")?;
        converge_status(&web, &url, 503)?;
        let d = diagnose_until(cluster, "frontend/web", "api.shop:8080", "a missing subset", |d| {
            d.fix().0 == "DestinationRule shop/api"
        })?;
        expect_verdict(&d, "route", "DestinationRule shop/api", "spec.subsets")?;
        ensure!(d.text.contains("names subset v2 of api, but DestinationRule shop/api has no such subset (it has v1)"), "{d}");
        cluster.remove_config_file("vs-api.yaml")?;
        cluster.remove_config_file("dr-api.yaml")?;
        converge_status(&web, &url, 200)?;

        // 3. The service down: its only pod deleted.
        let cart_vip = cluster.add_service("shop", "cart", &[("app", "cart")], &[ServicePort::http("http", 8080, 8080)])?;
        let cart_url = format!("http://{cart_vip}:8080/");
        converge_status(&web, &cart_url, 200)?;
        cluster.delete_pod(&cart.pod)?;
        converge_status(&web, &cart_url, 503)?;
        let d = diagnose_until(cluster, "frontend/web", "cart.shop:8080", "no endpoints", |d| d.cause() == "endpoints")?;
        expect_verdict(&d, "endpoints", "Service shop/cart", "spec.selector")?;
        ensure!(d.text.contains("has no endpoints: no running pod in shop has labels {app=cart}"), "{d}");

        // 4. STRICT mTLS at the destination, a client outside the mesh.
        apply(
            cluster,
            "pa-strict",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: shop\nspec:\n  mtls:\n    mode: STRICT\n",
        )?;
        // No kube-proxy here: a client outside the mesh dials the pod.
        let direct = format!("http://{}/", api.pod.addr(8080));
        converge_status(&outsider, &direct, 0)?;
        let d = diagnose_until(cluster, "legacy/outsider", "shop/api-v1:8080", "STRICT refusing plaintext", |d| {
            d.cause() == "mtls"
        })?;
        expect_verdict(&d, "mtls", "PeerAuthentication shop/strict", "spec.mtls.mode")?;
        ensure!(
            d.text.contains("sets STRICT mTLS for Pod shop/api-v1 port 8080, and the client Pod legacy/outsider is not in the mesh (namespace legacy is not labelled istio.io/dataplane-mode=ambient)"),
            "{d}"
        );
        cluster.remove_config_file("pa-strict.yaml")?;
        converge_status(&outsider, &direct, 200)?;

        // 5. An AuthorizationPolicy denies: the deciding policy and rule.
        apply(
            cluster,
            "ap-deny",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-frontend\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [frontend]\n",
        )?;
        converge_status(&web, &url, 403)?;
        let d = diagnose_until(cluster, "frontend/web", "api.shop:8080", "a denial", |d| {
            d.cause() == "authorization" && d.text.contains("403 RBAC")
        })?;
        expect_verdict(&d, "authorization", "AuthorizationPolicy shop/deny-frontend", "spec.rules[0]")?;
        ensure!(
            d.text.contains("AuthorizationPolicy shop/deny-frontend (DENY) denies frontend/web -> Pod shop/api-v1: rule 0 matches"),
            "{d}"
        );
        let telemetry = d.checks().find(|c| c["check"] == "telemetry").context("no telemetry")?;
        ensure!(
            telemetry["status"] == "warn"
                && telemetry["message"].as_str().is_some_and(|m| m.contains("answered 403: an AuthorizationPolicy's denial")),
            "{d}"
        );
        println!("--- a denied request, as diagnose reports it:\n{}", d.text);
        cluster.remove_config_file("ap-deny.yaml")?;
        converge_status(&web, &url, 200)?;

        // 6. Stale config: node-2's agent stopped (SIGSTOP), config changed.
        let node2 = cluster.node("node-2")?;
        let pid = node2.agent_pid().context("node-2 has no agent")?;
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
        let stale = (|| {
            apply(
                cluster,
                "ap-allow-all",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-all\n  namespace: shop\nspec:\n  action: ALLOW\n  rules:\n  - {}\n",
            )?;
            diagnose_until(
                cluster,
                "frontend/web",
                "api.shop:8080",
                "node-2 not synced",
                |d| {
                    let stale = |m: &str| m.contains("node-2 has not acknowledged");
                    d.cause() == "sync"
                        && d.failed()
                            .iter()
                            .any(|c| c["message"].as_str().is_some_and(stale))
                        && d.text.lines().any(stale)
                },
            )
        })();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
        let d = stale?;
        expect_verdict(&d, "sync", "weft-agent on node-2", "xDS stream")?;
        ensure!(
            d.failed().iter().any(|c| c["message"].as_str().is_some_and(|m| m.contains("AUTHORIZATIONS") || m.contains("Authorization"))),
            "the stale type is not named:\n{d}"
        );
        cluster.remove_config_file("ap-allow-all.yaml")?;
        // (The counters keep the failures of the cases above: a warning.)
        diagnose_until(cluster, "frontend/web", "api.shop:8080", "node-2 synced again", |d| d.failed().is_empty())?;

        // 7. The network: node-2's link to the fabric down.
        cluster.fabric().ip(&["link", "set", "n2", "down"])?;
        let down = diagnose_until(cluster, "frontend/web", "api.shop:8080", "node-2 unreachable", |d| {
            d.cause() == "network"
        });
        let request = status(&web, &url);
        cluster.fabric().ip(&["link", "set", "n2", "up"])?;
        let d = down?;
        ensure!(request != 200, "a request crossed a link that is down ({request})");
        expect_verdict(&d, "network", "Node node-2", "network")?;
        ensure!(d.text.contains("cannot reach node-2"), "{d}");
        converge_status(&web, &url, 200)?;
        diagnose_until(cluster, "frontend/web", "api.shop:8080", "healthy again", |d| d.failed().is_empty())?;
        Ok(())
    })
}
