//! VirtualService matching and delegation end to end on a 2-node
//! simulated cluster with weft's real binaries: a route picked by the
//! service port the app dialled, redirects whose port comes from the
//! request or the scheme (`derivePort`), a `prefixRewrite` redirect and one that keeps the app's
//! `x-forwarded-proto` (an HTTP/2 app's own `:scheme`), and a root VirtualService that
//! hands a path prefix to a delegate VirtualService in another namespace
//! (the delegate's routes merged under the root's match, its conflicting
//! ones left out, nothing when it is not exported to the root's
//! namespace); header values with Envoy's command operators
//! (`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(x)%`, `%UPSTREAM_HOST%`); TCP routes by source labels, destination subnets and
//! weights. Needs root and the binaries (`cargo xtask test` builds them).

mod common;

use anyhow::{Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp};

const API_SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: web\nspec:\n  host: api\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n";

const ROOT: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: web\nspec:\n  hosts:\n  - api\n  http:\n  - match:\n    - uri:\n        prefix: /old/\n    redirect:\n      prefixRewrite: /new/\n  - match:\n    - port: 8080\n      uri:\n        prefix: /keep-port\n    redirect:\n      uri: /moved\n      derivePort: FROM_REQUEST_PORT\n  - match:\n    - uri:\n        prefix: /default-port\n    redirect:\n      uri: /moved\n      derivePort: FROM_PROTOCOL_DEFAULT\n  - match:\n    - uri:\n        prefix: /team\n    delegate:\n      name: team-routes\n      namespace: team\n  - match:\n    - port: 8080\n    headers:\n      request:\n        set:\n          x-client: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\"\n          x-user-was: \"%REQ(x-user)% over %PROTOCOL%, 100%%\"\n          x-user: changed\n          x-try: \"%UPSTREAM_REQUEST_ATTEMPT_COUNT%\"\n      response:\n        add:\n          x-answered-by: \"%UPSTREAM_HOST% %RESPONSE_CODE%\"\n    route:\n    - destination:\n        host: api\n        subset: v2\n  - route:\n    - destination:\n        host: api\n        subset: v1\n";

/// The delegate, exported to `export_to` (YAML, e.g. `[\"*\"]`).
fn delegate(export_to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: team-routes\n  namespace: team\nspec:\n  exportTo: {export_to}\n  http:\n  - match:\n    - uri:\n        prefix: /team/beta\n    route:\n    - destination:\n        host: beta\n  - match:\n    - uri:\n        prefix: /elsewhere\n    route:\n    - destination:\n        host: beta\n  - route:\n    - destination:\n        host: api.web.svc.cluster.local\n        subset: v2\n"
    )
}

#[test]
fn port_matches_derived_redirect_ports_and_a_delegate() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["web", "team"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let _v1 = backend(
            cluster,
            "node-2",
            "web",
            "api-v1",
            &[("app", "api"), ("version", "v1")],
            8080,
            &[],
        )?;
        let v2 = backend(
            cluster,
            "node-2",
            "web",
            "api-v2",
            &[("app", "api"), ("version", "v2")],
            8080,
            &[],
        )?;
        let _beta = backend(
            cluster,
            "node-2",
            "team",
            "beta",
            &[("app", "beta")],
            8080,
            &[],
        )?;
        let client = client(cluster, "node-1", "web", "shopper")?;
        let vip = cluster.add_service(
            "web",
            "api",
            &[("app", "api")],
            &[
                ServicePort::http("http", 80, 8080),
                ServicePort::http("http-alt", 8080, 8080),
            ],
        )?;
        cluster.add_service(
            "team",
            "beta",
            &[("app", "beta")],
            &[ServicePort::http("http", 80, 8080)],
        )?;
        apply(cluster, "api-dr", API_SUBSETS)?;
        apply(cluster, "api-vs", ROOT)?;
        apply(cluster, "team-vs", &delegate("[\"*\"]"))?;

        let served_by = |url: &str| -> Result<String> {
            let reply = httpapp::get_one(&client, url, &[])?;
            ensure!(reply.status == 200, "{url}: {reply:?}");
            Ok(reply.header("x-served-by").unwrap_or("-").to_string())
        };
        let on_80 = format!("http://{vip}");
        let on_8080 = format!("http://{vip}:8080");
        converge("the delegate's routes", || {
            Ok(served_by(&format!("{on_80}/team/beta/x"))? == "beta")
        })?;
        let cases = [
            ("port 80, the default route", format!("{on_80}/"), "api-v1"),
            (
                "port 8080, the port's route",
                format!("{on_8080}/"),
                "api-v2",
            ),
            (
                "the delegate's prefix route",
                format!("{on_8080}/team/beta/y"),
                "beta",
            ),
            (
                "the delegate's default route",
                format!("{on_80}/team/other"),
                "api-v2",
            ),
            (
                "the delegate's route outside the root's match",
                format!("{on_80}/elsewhere"),
                "api-v1",
            ),
        ];
        for (what, url, want) in &cases {
            let got = served_by(url)?;
            ensure!(got == *want, "{what} ({url}): served by {got}, want {want}");
        }

        // Header values with Envoy's command operators, rendered per
        // request: the request's from what it came with (before the
        // route's own edits), the response's from the endpoint that
        // answered.
        let reply = httpapp::get_one(
            &client,
            &format!("{on_8080}/"),
            &["--header", "x-user: ann"],
        )?;
        let seen = reply.seen()?;
        let (client_ip, v2_ip) = (client.ip(), v2.pod.ip());
        ensure!(
            seen["headers"]["x-client"] == client_ip.to_string()
                && seen["headers"]["x-user-was"] == "ann over HTTP/1.1, 100%"
                && seen["headers"]["x-user"] == "changed"
                && seen["headers"]["x-try"] == "1",
            "request header values rendered: {seen}"
        );
        ensure!(
            reply.header("x-answered-by") == Some(format!("{v2_ip}:8080 200").as_str()),
            "a response header value rendered: {reply:?}"
        );

        // Redirects: the port the request came to; for FROM_PROTOCOL_DEFAULT
        // (no port from istiod, Envoy's default) the Host as it came, its
        // port included.
        for (path, want) in [
            ("/keep-port?a=1", format!("http://{vip}:8080/moved?a=1")),
            ("/default-port", format!("http://{vip}:8080/moved")),
            // prefixRewrite: the matched prefix replaced, the rest kept.
            ("/old/x?a=1", format!("http://{vip}:8080/new/x?a=1")),
        ] {
            let reply = httpapp::get_one(&client, &format!("{on_8080}{path}"), &[])?;
            ensure!(
                reply.status == 301 && reply.header("location") == Some(want.as_str()),
                "{path}: want 301 to {want}, got {reply:?}"
            );
        }
        // The app's `x-forwarded-proto` is the request's scheme (Envoy's
        // `:scheme` on a sidecar's outbound side): a redirect that sets no
        // scheme keeps it.
        let reply = httpapp::get_one(
            &client,
            &format!("{on_8080}/keep-port"),
            &["--header", "x-forwarded-proto: https"],
        )?;
        let want = format!("https://{vip}:8080/moved");
        ensure!(
            reply.status == 301 && reply.header("location") == Some(want.as_str()),
            "a forwarded https request: want 301 to {want}, got {reply:?}"
        );
        // An HTTP/2 request has a `:scheme` of its own, which Envoy keeps
        // over its `x-forwarded-proto`.
        let reply = httpapp::get_one(
            &client,
            &format!("{on_8080}/keep-port"),
            &["--h2", "true", "--header", "x-forwarded-proto: https"],
        )?;
        let want = format!("http://{vip}:8080/moved");
        ensure!(
            reply.status == 301 && reply.header("location") == Some(want.as_str()),
            "an HTTP/2 request's own scheme: want 301 to {want}, got {reply:?}"
        );
        // On port 80 the port-matched redirect does not apply: the default
        // route answers.
        ensure!(
            served_by(&format!("{on_80}/keep-port"))? == "api-v1",
            "a port match on another port"
        );

        // Exported only to its own namespace: the root's prefix is left
        // with nothing, so the request falls through to the routes after.
        apply(cluster, "team-vs", &delegate("[\".\"]"))?;
        converge("the delegate withdrawn", || {
            Ok(served_by(&format!("{on_80}/team/beta/x"))? == "api-v1")
        })?;
        Ok(())
    })
}

/// The store's TCP routes: writers (by `sourceLabels`) to v2, then a
/// route for connections to `subnet` (`destinationSubnets`), then the
/// rest split 75/25 between v1 and v2.
fn store_routes(subnet: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: store\n  namespace: data\nspec:\n  hosts:\n  - store\n  tcp:\n  - match:\n    - sourceLabels:\n        role: writer\n    route:\n    - destination:\n        host: store\n        subset: v2\n  - match:\n    - destinationSubnets: [\"{subnet}\"]\n    route:\n    - destination:\n        host: store\n        subset: v2\n  - route:\n    - destination:\n        host: store\n        subset: v1\n      weight: 75\n    - destination:\n        host: store\n        subset: v2\n      weight: 25\n"
    )
}

#[test]
fn tcp_routes_by_source_labels_destination_subnets_and_weights() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("data", &[AMBIENT])?;
        let labels = |v| [("app", "store"), ("version", v)];
        let _v1 = backend(cluster, "node-2", "data", "store-v1", &labels("v1"), 7000, &[])?;
        let _v2 = backend(cluster, "node-2", "data", "store-v2", &labels("v2"), 7000, &[])?;
        let pod = |name: &str, role: &str| {
            cluster.add_pod(weft_sim::PodSpec::new("node-1", "data", name).service_account(name).label("role", role))
        };
        let (reader, writer) = (pod("reader", "reader")?, pod("writer", "writer")?);
        let vip = cluster.add_service("data", "store", &[("app", "store")], &[ServicePort::tcp("tcp-store", 7000, 7000)])?;
        apply(cluster, "store-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: store\n  namespace: data\nspec:\n  host: store\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n")?;
        apply(cluster, "store-vs", &store_routes("203.0.113.0/24"))?;
        // Each request on a connection of its own (the app closes it),
        // routed once.
        let url = format!("http://{vip}:7000/");
        let connections = |from: &weft_sim::Pod, n: &str| -> Result<httpapp::LoadSummary> {
            let load = httpapp::load(from, &url, &["--count", n, "--concurrency", "4", "--header", "Connection: close"])?;
            ensure!(load.connections == load.sent, "a connection per request: {load:?}");
            Ok(load)
        };
        converge("the writers' route", || Ok(connections(&writer, "20")?.served_by("store-v2") == 20))?;
        let load = connections(&writer, "100")?;
        ensure!(load.served_by("store-v2") == 100, "a writer's connections all to v2: {load:?}");
        // Binomial(200, 0.75): 150 on average, outside 115..=185 about
        // once in 10^6 runs.
        let load = connections(&reader, "200")?;
        ensure!(
            load.ok == 200 && (115..=185).contains(&load.served_by("store-v1")),
            "a reader's connections split 75/25: {load:?}"
        );
        // The subnet route now holds the VIP: the readers' too go to v2.
        apply(cluster, "store-vs", &store_routes(&format!("{vip}/32")))?;
        converge("the subnet route", || Ok(connections(&reader, "40")?.served_by("store-v2") == 40))?;
        Ok(())
    })
}
