//! L7 authorization end to end on a 2-node simulated cluster with weft's
//! real binaries: on a port a Service declares HTTP, the destination's node
//! agent reads each request inside the HBONE stream and decides it with
//! the AuthorizationPolicy's HTTP attributes (methods, paths after Istio's
//! normalisation, headers), answering `403 RBAC: access denied` itself
//! while the connection carries on. Needs root and the binaries
//! (`cargo xtask test` builds them).

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp, wait_for};

fn policy(cluster: &Cluster, name: &str, annotations: &str, spec: &str) -> Result<()> {
    apply(
        cluster,
        name,
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}spec:\n  selector:\n    matchLabels:\n      app: api\n{spec}"
        ),
    )
}

/// The statuses of `requests` (`METHOD /path`) sent one after the other on
/// one connection from `from`, with `headers`; fails if they did not all
/// share that connection.
fn statuses(
    from: &weft_sim::Pod,
    base: &str,
    requests: &[&str],
    headers: &[&str],
) -> Result<Vec<u16>> {
    let (first_method, first_path) = requests[0].split_once(' ').context("METHOD /path")?;
    let mut args = vec!["--method", first_method];
    for then in &requests[1..] {
        args.extend(["--then", then]);
    }
    for h in headers {
        args.extend(["--header", h]);
    }
    let replies = httpapp::get(from, &format!("{base}{first_path}"), &args)?;
    ensure!(
        replies.iter().all(|r| r.connection == 1),
        "a request needed a new connection: {replies:?}"
    );
    Ok(replies.iter().map(|r| r.status).collect())
}

#[test]
fn http_authorization_decides_each_request_and_keeps_the_connection() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "frontend", "other"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let _api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "frontend", "web")?;
        let intruder = client(cluster, "node-1", "other", "intruder")?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let base = format!("http://{vip}:8080");

        // The seed's example: GET /api/* from namespace frontend, nothing else.
        policy(
            cluster,
            "allow-frontend-get-api",
            "",
            "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        namespaces: [frontend]\n    to:\n    - operation:\n        methods: [GET]\n        paths: [\"/api/*\"]\n",
        )?;
        converge("the ALLOW policy reached node-2", || {
            Ok(statuses(&web, &base, &["POST /api/items"], &[])? == [403])
        })?;
        let sequence = [
            "GET /api/items",
            "POST /api/items",
            "GET /admin",
            "GET /api/../admin",
            "GET /api/%2e%2e/admin",
            "GET /API/items",
            "GET /api/items?next=/admin",
        ];
        let got = statuses(&web, &base, &sequence, &[])?;
        ensure!(
            got == [200, 403, 403, 403, 403, 403, 200],
            "{sequence:?} answered {got:?}"
        );
        let denied = httpapp::get_one(&web, &format!("{base}/admin"), &[])?;
        ensure!(
            denied.status == 403 && denied.body == "RBAC: access denied",
            "a denial is Envoy's: {denied:?}"
        );
        ensure!(
            statuses(&intruder, &base, &["GET /api/items"], &[])? == [403],
            "another namespace is denied"
        );
        // The app sees the path the policy saw; an encoded slash is refused.
        let merged = httpapp::get_one(&web, &format!("{base}//api///items"), &[])?;
        ensure!(merged.status == 200, "{merged:?}");
        let seen = merged.seen()?;
        ensure!(seen["path"] == "/api/items", "the app saw {}", seen["path"]);
        let encoded = httpapp::get_one(&web, &format!("{base}/api%2Fitems"), &[])?;
        ensure!(encoded.status == 400, "an encoded slash: {encoded:?}");

        // A DENY on a header value, evaluated before the ALLOW.
        policy(
            cluster,
            "deny-mallory",
            "",
            "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-user]\n      values: [\"mallory*\"]\n",
        )?;
        converge("the DENY policy reached node-2", || {
            Ok(statuses(&web, &base, &["GET /api/items"], &["x-user: mallory-2"])? == [403])
        })?;
        ensure!(
            statuses(&web, &base, &["GET /api/items"], &["x-user: bob"])? == [200],
            "another user is let through"
        );

        // AUDIT and dry-run: logged, never enforced.
        policy(
            cluster,
            "audit-posts",
            "",
            "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n",
        )?;
        policy(
            cluster,
            "deny-items-dry",
            "  annotations:\n    istio.io/dry-run: \"true\"\n",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/items\"]\n",
        )?;
        let node = cluster.node("node-2")?;
        wait_for("the audit and the dry-run verdict in the log", TIMEOUT, || {
            let got = statuses(&web, &base, &["GET /api/items", "POST /api/items"], &[])?;
            ensure!(got == [200, 403], "AUDIT or dry-run changed a verdict: {got:?}");
            let log = node.agent_log_tail(400);
            let audited = log
                .lines()
                .any(|l| l.contains("audit: request matched") && l.contains("shop/audit-posts"));
            let dry = log.lines().any(|l| {
                l.contains("dry-run policy evaluated") && l.contains("shop/deny-items-dry")
            });
            Ok((audited && dry).then_some(()))
        })
        .with_context(|| node.agent_log_tail(60))?;

        // Every decision is logged with its policy, and counted.
        let log = node.agent_log_tail(400);
        ensure!(
            log.lines().any(|l| l.contains("inbound request")
                && l.contains("status=403")
                && l.contains("policy=shop/deny-mallory")),
            "no denial naming its policy in:\n{log}"
        );
        ensure!(
            log.lines().any(|l| l.contains("inbound request")
                && l.contains("status=200")
                && l.contains("policy=shop/allow-frontend-get-api")),
            "no allow naming its policy in:\n{log}"
        );
        let stats = node.admin_json("/stats")?;
        let counted = &stats["http_requests_authorized"];
        for verdict in ["allowed", "denied", "bad_path"] {
            ensure!(
                counted[verdict].as_u64().unwrap_or(0) > 0,
                "{verdict} not counted: {stats}"
            );
        }
        Ok(())
    })
}
