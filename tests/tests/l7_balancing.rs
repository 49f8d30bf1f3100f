//! DestinationRule load balancing and VirtualService mirroring, end to
//! end with weft's real binaries: consistent hashing keeps a user on one
//! pod (by header as the app sent it, upgrades too, by a cookie the proxy generates, by
//! source address, by query parameter), round robin shares evenly where least request spares
//! a slow pod, a mirror gets copies while the client sees only the
//! primary's answers. Needs root and the binaries.

mod common;

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp, wait_for};

#[test]
fn consistent_hashing_by_header_and_generated_cookie() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("lb", &[AMBIENT])?;
        let _pods: Vec<_> = (0..3)
            .map(|i| backend(cluster, if i == 0 { "node-1" } else { "node-2" }, "lb", &format!("cart-{i}"), &[("app", "cart")], 8080, &[]))
            .collect::<Result<_>>()?;
        let client = client(cluster, "node-1", "lb", "shopper")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let cart = cluster.add_service("lb", "cart", &[("app", "cart")], &port)?;
        let sticky = cluster.add_service("lb", "sticky", &[("app", "cart")], &port)?;
        apply(cluster, "cart-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: cart\n  namespace: lb\nspec:\n  host: cart\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n")?;
        apply(cluster, "sticky-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: sticky\n  namespace: lb\nspec:\n  host: sticky\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        maglev:\n          tableSize: 65537\n        httpCookie:\n          name: session\n          path: /\n          ttl: 60s\n")?;

        let url = format!("http://{cart}/cart");
        converge("hashing on x-user", || {
            let load = httpapp::load(&client, &url, &["--count", "30", "--concurrency", "3", "--header", "x-user: alice"])?;
            Ok(load.served_by.len() == 1)
        })?;
        let mut servers = BTreeSet::new();
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"] {
            let header = format!("x-user: {user}");
            let load = httpapp::load(&client, &url, &["--count", "40", "--concurrency", "4", "--header", &header])?;
            ensure!(load.ok == 40 && load.served_by.len() == 1, "{user} must stay on one pod: {load:?}");
            servers.extend(load.served_by.keys().cloned());
        }
        ensure!(servers.len() >= 2, "12 users should spread over the pods, all went to {servers:?}");
        // Upgrades (WebSocket-style) are balanced by the same hash.
        let upgraded_by = |user: &str| -> Result<String> {
            let header = format!("x-user: {user}");
            let out = client.run_http(&["ws", &format!("{cart}:80"), "--message", "hi", "--header", &header, "--print-server"], TIMEOUT)?;
            let server = out.stdout.lines().find_map(|l| l.strip_prefix("served-by "));
            ensure!(out.success() && server.is_some(), "ws as {user}: {out:?}");
            Ok(server.unwrap_or_default().to_string())
        };
        for user in ["alice", "bob", "carol"] {
            let by_request = httpapp::get_one(&client, &url, &["--header", &format!("x-user: {user}")])?;
            let pod = by_request.header("x-served-by").unwrap_or("-").to_string();
            for _ in 0..5 {
                let got = upgraded_by(user)?;
                ensure!(got == pod, "{user}'s upgrade went to {got}, their requests to {pod}");
            }
        }

        // A route that sets the hashed header: the first attempt is hashed
        // on the header as the app sent it, the route's value goes
        // upstream (Envoy picks the endpoint before it applies the route's
        // edits). The route matches on `x-forwarded-proto`, which Envoy's
        // connection manager adds before routing.
        let tagged = cluster.add_service("lb", "tagged", &[("app", "cart")], &port)?;
        apply(cluster, "tagged-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: tagged\n  namespace: lb\nspec:\n  host: tagged\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n")?;
        apply(cluster, "tagged-vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tagged\n  namespace: lb\nspec:\n  hosts: [tagged]\n  http:\n  - match:\n    - headers:\n        x-forwarded-proto:\n          exact: http\n    route:\n    - destination:\n        host: tagged\n    headers:\n      request:\n        set:\n          x-user: everyone\n")?;
        let url = format!("http://{tagged}/tagged");
        converge("the tagged route and its hash", || {
            let reply = httpapp::get_one(&client, &url, &["--header", "x-user: alice"])?;
            Ok(reply.status == 200 && reply.body.contains(r#""x-user":"everyone""#))
        })?;
        let mut servers = BTreeSet::new();
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"] {
            let header = format!("x-user: {user}");
            let load = httpapp::load(&client, &url, &["--count", "20", "--concurrency", "4", "--header", &header])?;
            ensure!(load.ok == 20 && load.served_by.len() == 1, "{user} must stay on one pod: {load:?}");
            servers.extend(load.served_by.keys().cloned());
        }
        ensure!(
            servers.len() >= 2,
            "hashed on the app's x-user, 12 users spread over the pods; all went to {servers:?}"
        );

        // No cookie yet: the proxy makes one; with it, one pod.
        let url = format!("http://{sticky}/sticky");
        let first = wait_for("a generated session cookie", TIMEOUT, || {
            let reply = httpapp::get_one(&client, &url, &[])?;
            Ok(reply.header("set-cookie").filter(|c| c.starts_with("session=")).map(str::to_string))
        })?;
        ensure!(first.contains("Max-Age=60") && first.contains("Path=/"), "cookie attributes: {first}");
        // Generated from the connection's address, as Envoy's: the
        // requests of one connection get the same cookie.
        let replies = httpapp::get(&client, &url, &["--count", "3"])?;
        let cookies: Vec<Option<&str>> = replies.iter().map(|r| r.header("set-cookie")).collect();
        ensure!(
            cookies.len() == 3 && cookies[0].is_some() && cookies.iter().all(|c| *c == cookies[0]),
            "one connection, one generated cookie: {cookies:?}"
        );
        let value = first.split(';').next().context("cookie value")?;
        let with_cookie = format!("cookie: {value}");
        let load = httpapp::load(&client, &url, &["--count", "60", "--concurrency", "3", "--header", &with_cookie])?;
        ensure!(load.ok == 60 && load.served_by.len() == 1, "one session, one pod: {load:?}");
        Ok(())
    })
}

#[test]
fn mirrored_requests_reach_the_mirror_and_only_the_primary_answers() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("mirror", &[AMBIENT])?;
        let _primary = backend(cluster, "node-2", "mirror", "orders-v1", &[("app", "orders")], 8080, &[])?;
        let shadow = backend(cluster, "node-2", "mirror", "orders-shadow", &[("app", "orders-shadow")], 8080, &["--verbose"])?;
        let client = client(cluster, "node-1", "mirror", "checkout")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let orders = cluster.add_service("mirror", "orders", &[("app", "orders")], &port)?;
        cluster.add_service("mirror", "orders-shadow", &[("app", "orders-shadow")], &port)?;
        apply(cluster, "orders-vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: orders\n  namespace: mirror\nspec:\n  hosts:\n  - orders\n  http:\n  - route:\n    - destination:\n        host: orders\n    mirror:\n      host: orders-shadow\n    mirrorPercentage:\n      value: 100\n")?;
        let url = format!("http://{orders}/mirrored");
        let mirrored = || shadow.server.log().lines().filter(|l| l.contains(" GET /mirrored ")).count();
        converge("the mirror", || {
            httpapp::get_one(&client, &url, &[])?;
            Ok(mirrored() > 0)
        })?;
        let before = mirrored();
        let load = httpapp::load(&client, &url, &["--count", "100", "--concurrency", "4"])?;
        ensure!(load.ok == 100 && load.served_by("orders-v1") == 100, "only the primary answers: {load:?}");
        wait_for("100 copies at the mirror", TIMEOUT, || Ok((mirrored() - before >= 100).then_some(())))?;

        // `mirrors`, Istio's list form, with a percentage below 100: about
        // half the requests are copied, to the new mirror only.
        let audit = backend(cluster, "node-2", "mirror", "orders-audit", &[("app", "orders-audit")], 8080, &["--verbose"])?;
        cluster.add_service("mirror", "orders-audit", &[("app", "orders-audit")], &port)?;
        apply(cluster, "orders-vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: orders\n  namespace: mirror\nspec:\n  hosts:\n  - orders\n  http:\n  - route:\n    - destination:\n        host: orders\n    mirrors:\n    - destination:\n        host: orders-audit\n      percentage:\n        value: 50\n")?;
        let audited = || audit.server.log().lines().filter(|l| l.contains(" GET /mirrored ")).count();
        converge("the list's mirror", || {
            httpapp::get_one(&client, &url, &[])?;
            Ok(audited() > 0)
        })?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (shadow_before, audit_before) = (mirrored(), audited());
        let load = httpapp::load(&client, &url, &["--count", "200", "--concurrency", "4"])?;
        ensure!(load.ok == 200 && load.served_by("orders-v1") == 200, "only the primary answers: {load:?}");
        std::thread::sleep(std::time::Duration::from_secs(1));
        let copies = audited() - audit_before;
        // Binomial(200, 0.5): 100 on average, outside 60..=140 about once
        // in 10^8 runs.
        ensure!((60..=140).contains(&copies), "{copies} of 200 requests copied at 50%");
        ensure!(mirrored() == shadow_before, "the replaced mirror still gets copies");
        Ok(())
    })
}

/// A DestinationRule for `host` in namespace `ns` with `load_balancer`'s
/// lines under `trafficPolicy.loadBalancer`.
fn balancer(cluster: &weft_sim::Cluster, ns: &str, host: &str, load_balancer: &str) -> Result<()> {
    apply(
        cluster,
        &format!("{host}-dr"),
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {host}\n  namespace: {ns}\nspec:\n  host: {host}\n  trafficPolicy:\n    loadBalancer:\n{load_balancer}"
        ),
    )
}

/// The `simple` balancers and the other hash keys, each behind a Service
/// of its own: `ROUND_ROBIN` shares requests evenly, a slow pod included,
/// where `LEAST_REQUEST` (Envoy's two choices) sends the slow pod few;
/// `useSourceIp` keeps each client pod on one backend, and
/// `httpQueryParameterName` with a ring hash keeps each user (the query's
/// `user`) on one backend while users spread.
#[test]
fn simple_balancers_and_hash_keys_as_the_destination_rule_names_them() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("lb", &[AMBIENT])?;
        // `mixed`: one pod answering after 300 ms, two at once. `hashed`:
        // three quick pods.
        let slow = [("app", "pool"), ("mixed", "yes")];
        let _slow = backend(cluster, "node-2", "lb", "slow-0", &slow, 8080, &["--delay-ms", "300"])?;
        let both = [("app", "pool"), ("mixed", "yes"), ("hashed", "yes")];
        let _quick1 = backend(cluster, "node-2", "lb", "quick-1", &both, 8080, &[])?;
        let _quick2 = backend(cluster, "node-1", "lb", "quick-2", &both, 8080, &[])?;
        let _quick3 = backend(cluster, "node-2", "lb", "quick-3", &[("app", "pool"), ("hashed", "yes")], 8080, &[])?;
        let clients = [
            client(cluster, "node-1", "lb", "shopper-a")?,
            client(cluster, "node-1", "lb", "shopper-b")?,
            client(cluster, "node-2", "lb", "shopper-c")?,
        ];
        let port = [ServicePort::http("http", 80, 8080)];
        let mixed = [("mixed", "yes")];
        let rr = cluster.add_service("lb", "rr", &mixed, &port)?;
        let lr = cluster.add_service("lb", "lr", &mixed, &port)?;
        let hashed = [("hashed", "yes")];
        let by_ip = cluster.add_service("lb", "by-ip", &hashed, &port)?;
        let by_user = cluster.add_service("lb", "by-user", &hashed, &port)?;
        balancer(cluster, "lb", "rr", "      simple: ROUND_ROBIN\n")?;
        balancer(cluster, "lb", "lr", "      simple: LEAST_REQUEST\n")?;
        balancer(cluster, "lb", "by-ip", "      consistentHash:\n        useSourceIp: true\n")?;
        balancer(cluster, "lb", "by-user", "      consistentHash:\n        httpQueryParameterName: user\n        ringHash:\n          minimumRingSize: 1024\n")?;
        let shopper = &clients[0];

        // Round robin: a third each, whatever each pod's speed. Until the
        // rule arrives the default (least request) gives the slow pod
        // few, so this also waits for it.
        let url = format!("http://{rr}/rr");
        converge("round robin over the mixed pods", || {
            let load = httpapp::load(shopper, &url, &["--count", "60", "--concurrency", "6"])?;
            ensure!(load.ok == 60, "{load:?}");
            Ok(load.served_by("slow-0") == 20)
        })?;
        let load = httpapp::load(shopper, &url, &["--count", "120", "--concurrency", "6"])?;
        ensure!(
            load.ok == 120 && ["slow-0", "quick-1", "quick-2"].iter().all(|p| load.served_by(p) == 40),
            "round robin gives each pod 40 of 120: {load:?}"
        );

        // Least request: the slow pod, holding its requests for 300 ms,
        // loses most two-way choices against an idle quick one.
        let url = format!("http://{lr}/lr");
        converge("least request reaches the mixed pods", || {
            let load = httpapp::load(shopper, &url, &["--count", "6"])?;
            Ok(load.ok == 6)
        })?;
        let load = httpapp::load(shopper, &url, &["--count", "120", "--concurrency", "6"])?;
        ensure!(load.ok == 120, "{load:?}");
        ensure!(
            load.served_by("slow-0") <= 20 && load.served_by("quick-1") + load.served_by("quick-2") >= 100,
            "least request keeps the slow pod's share below round robin's 40 of 120: {load:?}"
        );

        // The source's address: each client on one pod, every request.
        let url = format!("http://{by_ip}/by-ip");
        converge("hashing on the source address", || {
            let load = httpapp::load(shopper, &url, &["--count", "30", "--concurrency", "3"])?;
            Ok(load.ok == 30 && load.served_by.len() == 1)
        })?;
        for pod in &clients {
            let load = httpapp::load(pod, &url, &["--count", "40", "--concurrency", "4"])?;
            ensure!(load.ok == 40 && load.served_by.len() == 1, "{} must stay on one pod: {load:?}", pod.name());
        }

        // A query parameter: each user on one pod, users spread; a
        // request without it is still served.
        let base = format!("http://{by_user}/by-user");
        converge("hashing on ?user=", || {
            let load = httpapp::load(shopper, &format!("{base}?user=alice"), &["--count", "30", "--concurrency", "3"])?;
            Ok(load.ok == 30 && load.served_by.len() == 1)
        })?;
        let mut servers = BTreeSet::new();
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"] {
            let load = httpapp::load(shopper, &format!("{base}?page=2&user={user}"), &["--count", "20", "--concurrency", "4"])?;
            ensure!(load.ok == 20 && load.served_by.len() == 1, "{user} must stay on one pod: {load:?}");
            servers.extend(load.served_by.keys().cloned());
        }
        ensure!(servers.len() >= 2, "12 users should spread over the pods, all went to {servers:?}");
        let anonymous = httpapp::load(shopper, &base, &["--count", "10"])?;
        ensure!(anonymous.ok == 10, "no parameter, no hash, still served: {anonymous:?}");
        Ok(())
    })
}
