//! Resilience at L7, end to end with weft's real binaries: retries turn a
//! flaky server into a reliable one, timeouts cut slow ones (504, `UT`),
//! fault injection delays and aborts at the configured rates, outlier
//! detection ejects a failing endpoint and brings it back (and, counting
//! gateway errors only, leaves one answering 500; and one the route's
//! timeout keeps cutting), connection-pool
//! limits answer 503 (`UO`) under overload, upstream connections close
//! after the pool's `idleTimeout` and `maxConnectionDuration`, `minHealthPercent` turns on Envoy's
//! panic; MeshConfig's `defaultHttpRetryPolicy` and `retryIgnorePreviousHosts`;
//! the destination's side's retries to its app
//! (`defaultInboundHttpRetryPolicy`).
//! Needs root and the binaries.

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp, wait_for};

fn virtual_service(name: &str, ns: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts:\n  - {name}\n  http:\n{http}"
    )
}

fn destination_rule(name: &str, ns: &str, policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {name}\n  trafficPolicy:\n{policy}"
    )
}

/// Lines of the client agent's access log for requests to `path`
/// whose `response_flags` contain `flag`.
fn flagged(cluster: &Cluster, flag: &str, path: &str) -> Result<usize> {
    Ok(access_log(cluster, "node-1")?
        .iter()
        .filter(|e| e["path"] == path)
        .filter(|e| has_flag(e, flag))
        .count())
}

#[test]
fn retries_timeouts_and_fault_injection() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("res", &[AMBIENT])?;
        let flaky: Vec<_> = ["flaky-a", "flaky-b"]
            .iter()
            .map(|name| backend(cluster, "node-2", "res", name, &[("app", "flaky")], 8080, &["--fail-rate", "0.5", "--fail-status", "503"]))
            .collect::<Result<_>>()?;
        let _slow = backend(cluster, "node-2", "res", "slow", &[("app", "slow")], 8080, &["--delay-ms", "2000"])?;
        let _steady = backend(cluster, "node-2", "res", "steady", &[("app", "faulty")], 8080, &[])?;
        let client = client(cluster, "node-1", "res", "caller")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let flaky_vip = cluster.add_service("res", "flaky", &[("app", "flaky")], &port)?;
        let slow_vip = cluster.add_service("res", "slow", &[("app", "slow")], &port)?;
        let faulty_vip = cluster.add_service("res", "faulty", &[("app", "faulty")], &port)?;

        // Retries: each attempt fails with probability 0.5; with 10 retries
        // a request fails with probability 0.5^11.
        apply(cluster, "flaky-vs", &virtual_service("flaky", "res", "  - retries:\n      attempts: 10\n      perTryTimeout: 2s\n      retryOn: 5xx\n    route:\n    - destination:\n        host: flaky\n"))?;
        let url = format!("http://{flaky_vip}/retried");
        converge("the retry policy", || {
            let load = httpapp::load(&client, &url, &["--count", "40"])?;
            Ok(load.ok == 40)
        })?;
        let retried = httpapp::load(&client, &url, &["--count", "1000", "--concurrency", "4"])?;
        ensure!(retried.ok >= 990, "retries should turn 50% failures into >= 99% success: {retried:?}");
        let log = access_log(cluster, "node-1")?;
        let with_retries = log
            .iter()
            .filter(|e| e["path"] == "/retried")
            .filter(|e| e["attempts"].as_u64().is_some_and(|a| a > 1))
            .count();
        ensure!(with_retries > 300, "retries should show in the access log (attempts > 1), saw {with_retries}");
        // The server sees which attempt it answers (Envoy's header); not
        // the per-try timeout the client side sent with it, which the
        // destination's side removes, as Istio's inbound listener does. The
        // access log has the time upstream took.
        let seen: Vec<serde_json::Value> = httpapp::get(&client, &url, &["--count", "24"])?
            .iter()
            .map(|r| r.seen())
            .collect::<Result<_>>()?;
        let header = |s: &serde_json::Value, name: &str| s["headers"][name].as_str().and_then(|v| v.parse::<u64>().ok());
        ensure!(
            seen.iter().all(|s| header(s, "x-envoy-attempt-count").is_some_and(|n| n >= 1) && s["headers"].get("x-envoy-expected-rq-timeout-ms").is_none())
                && seen.iter().any(|s| header(s, "x-envoy-attempt-count").is_some_and(|n| n > 1)),
            "x-envoy-attempt-count and x-envoy-expected-rq-timeout-ms: {seen:?}"
        );
        ensure!(
            log.iter().filter(|e| e["path"] == "/retried" && e["response_code"] == 200).all(|e| e["upstream_service_time"].as_str().is_some_and(|t| t.parse::<u64>().is_ok())),
            "the access log's upstream_service_time"
        );
        drop(flaky);

        // A route timeout cuts a slow server: 504, flag UT.
        apply(cluster, "slow-vs", &virtual_service("slow", "res", "  - timeout: 300ms\n    route:\n    - destination:\n        host: slow\n"))?;
        let url = format!("http://{slow_vip}/slow");
        converge("the timeout", || Ok(httpapp::get_one(&client, &url, &[])?.status == 504))?;
        let reply = httpapp::get_one(&client, &url, &[])?;
        ensure!(reply.body.contains("upstream request timeout"), "Envoy's timeout body: {reply:?}");
        ensure!(flagged(cluster, "UT", "/slow")? > 0, "no UT in the access log");
        // The timeout covers the response's body, not only its head: a
        // body that takes 3 s is cut at 1 s (the head already sent, the
        // stream is reset), one that takes 200 ms arrives whole.
        apply(cluster, "drip-vs", &virtual_service("faulty", "res", "  - match:\n    - uri:\n        prefix: /drip\n    timeout: 1s\n    route:\n    - destination:\n        host: faulty\n"))?;
        let base = format!("http://{faulty_vip}");
        converge("the body's timeout", || {
            Ok(httpapp::get_one(&client, &format!("{base}/drip/3000"), &[]).is_err())
        })?;
        let whole = httpapp::get_one(&client, &format!("{base}/drip/200"), &[])?;
        ensure!(whole.status == 200 && whole.body == "..........", "a body within the timeout: {whole:?}");
        ensure!(flagged(cluster, "UT", "/drip/3000")? > 0, "a body cut by the timeout is flagged UT");
        cluster.remove_config_file("drip-vs.yaml")?;

        // Faults: half the requests delayed 100 ms, half aborted with 418,
        // independently; 1,000 requests land within 5 standard deviations
        // (±79) of 500 each.
        apply(cluster, "faulty-vs", &virtual_service("faulty", "res", "  - fault:\n      delay:\n        percentage:\n          value: 50\n        fixedDelay: 100ms\n      abort:\n        percentage:\n          value: 50\n        httpStatus: 418\n    route:\n    - destination:\n        host: faulty\n"))?;
        let url = format!("http://{faulty_vip}/faults");
        converge("the fault policy", || {
            let load = httpapp::load(&client, &url, &["--count", "40", "--concurrency", "8"])?;
            Ok(load.status(418) > 0)
        })?;
        let before_delayed = flagged(cluster, "DI", "/faults")?;
        let faults = httpapp::load(&client, &url, &["--count", "1000", "--concurrency", "25"])?;
        let aborted = faults.status(418);
        ensure!((421..=579).contains(&aborted), "aborts: {aborted} of 1000 at 50%: {faults:?}");
        ensure!(faults.status(418) + faults.status(200) == 1000, "only 418 or 200: {faults:?}");
        ensure!(faults.served_by("-") == aborted, "aborted requests never reach the server: {faults:?}");
        let delayed = wait_for("the access log of 1,000 requests", TIMEOUT, || {
            let n = flagged(cluster, "DI", "/faults")? - before_delayed;
            Ok((n >= 421).then_some(n))
        });
        let delayed = with_log(cluster, "node-1", delayed)?;
        ensure!(delayed <= 579, "delays: {delayed} of 1000 at 50%");
        ensure!(flagged(cluster, "FI", "/faults")? >= aborted as usize, "aborts flagged FI");

        // A server that always fails, two retries each, and a retry budget
        // of one (`maxRetries: 1`) for ten requests at once: a request
        // whose retry the budget refuses is flagged `UO`, one that used
        // its attempts `URX`, as Envoy flags them.
        let _broken = backend(cluster, "node-2", "res", "broken", &[("app", "broken")], 8080, &["--fail-rate", "1", "--delay-ms", "200"])?;
        let broken_vip = cluster.add_service("res", "broken", &[("app", "broken")], &port)?;
        apply(cluster, "broken-vs", &virtual_service("broken", "res", "  - retries:\n      attempts: 2\n      retryOn: 5xx\n    route:\n    - destination:\n        host: broken\n"))?;
        apply(cluster, "broken-dr", &destination_rule("broken", "res", "    connectionPool:\n      http:\n        maxRetries: 1\n"))?;
        let url = format!("http://{broken_vip}/broken");
        converge("the retry budget spent (UO) and attempts used up (URX)", || {
            let load = httpapp::load(&client, &url, &["--count", "20", "--concurrency", "10"])?;
            ensure!(load.ok == 0, "a request succeeded: {load:?}");
            Ok(flagged(cluster, "UO", "/broken")? > 0 && flagged(cluster, "URX", "/broken")? > 0)
        })?;
        Ok(())
    })
}

/// MeshConfig's `defaultHttpRetryPolicy` replaces Istio's default policy
/// on the default route (no VirtualService) and on every route without
/// its own `retries`; a route's own replaces it. And `previous_hosts`:
/// with one destination that balances by consistent hash, a retry goes
/// where the hash leads (the same failing endpoint) unless the route says
/// `retryIgnorePreviousHosts: true`.
#[test]
fn the_mesh_default_retry_policy_and_previous_hosts() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("mr", &[AMBIENT])?;
        let _flaky: Vec<_> = ["flaky-a", "flaky-b"]
            .iter()
            .map(|name| backend(cluster, "node-2", "mr", name, &[("app", "flaky")], 8080, &["--fail-rate", "0.5", "--fail-status", "503"]))
            .collect::<Result<_>>()?;
        let _good = backend(cluster, "node-2", "mr", "sticky-good", &[("app", "sticky")], 8080, &[])?;
        let _bad = backend(cluster, "node-2", "mr", "sticky-bad", &[("app", "sticky")], 8080, &["--fail-rate", "1", "--fail-status", "503"])?;
        let client = client(cluster, "node-1", "mr", "caller")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let flaky_vip = cluster.add_service("mr", "flaky", &[("app", "flaky")], &port)?;
        let sticky_vip = cluster.add_service("mr", "sticky", &[("app", "sticky")], &port)?;
        let url = format!("http://{flaky_vip}/mesh-retries");
        let load = |count: &str| httpapp::load(&client, &url, &["--count", count, "--concurrency", "4"]);

        // Istio's default policy does not retry a 503: about half fail.
        let plain = load("400")?;
        ensure!((100..=300).contains(&plain.ok), "Istio's default retries no 503: {plain:?}");

        // The mesh's policy, 10 retries on 5xx: the default route fails
        // one request in 2^11.
        apply(cluster, "mesh-config", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    defaultHttpRetryPolicy:\n      attempts: 10\n      retryOn: 5xx\n")?;
        converge("the mesh's retries on the default route", || Ok(load("40")?.ok == 40))?;
        let retried = load("400")?;
        ensure!(retried.ok >= 396, "the mesh's retries on the default route: {retried:?}");

        // A VirtualService route without `retries` takes them too (the
        // response header tells that the route is in force).
        let routed = |tag: &str, retries: &str| {
            virtual_service("flaky", "mr", &format!("  - headers:\n      response:\n        set:\n          x-route: {tag}\n{retries}    route:\n    - destination:\n        host: flaky\n"))
        };
        let in_force = |tag: &str| {
            converge(&format!("the route tagged {tag}"), || {
                Ok(httpapp::get(&client, &url, &["--count", "4"])?.iter().any(|r| r.header("x-route") == Some(tag)))
            })
        };
        apply(cluster, "flaky-vs", &routed("mesh", ""))?;
        in_force("mesh")?;
        let retried = load("400")?;
        ensure!(retried.ok >= 396, "the mesh's retries on a route without its own: {retried:?}");
        // Its own `retries` replace the mesh's whole.
        apply(cluster, "flaky-vs", &routed("own", "    retries:\n      attempts: 0\n"))?;
        in_force("own")?;
        let own = load("400")?;
        ensure!((100..=300).contains(&own.ok), "the route's own retries (none): {own:?}");

        // Consistent hash by `x-user`, one endpoint always failing, three
        // retries on 5xx: the users the hash sends to it (about half) fail
        // every attempt, unless the route ignores previous hosts. Then a
        // retry takes the next points of the ring, up to six, as Envoy's
        // ring hash does: a user whose next five are the failing
        // endpoint's too (1 in 32) still fails.
        apply(cluster, "sticky-dr", &destination_rule("sticky", "mr", "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n"))?;
        let sticky = |tag: &str, ignore: &str| {
            virtual_service("sticky", "mr", &format!("  - headers:\n      response:\n        set:\n          x-route: {tag}\n    retries:\n      attempts: 3\n      retryOn: 5xx\n{ignore}    route:\n    - destination:\n        host: sticky\n"))
        };
        let sticky_url = format!("http://{sticky_vip}/sticky");
        let by_user = || -> Result<Vec<(String, u16, Option<String>)>> {
            (0..48)
                .map(|u| {
                    let user = format!("x-user: user-{u}");
                    let r = httpapp::get_one(&client, &sticky_url, &["--header", &user])?;
                    Ok((user, r.status, r.header("x-route").map(str::to_string)))
                })
                .collect()
        };
        apply(cluster, "sticky-vs", &sticky("hashed", ""))?;
        converge("the hashed route, with a user on the failing endpoint", || {
            let replies = by_user()?;
            Ok(replies.iter().all(|r| r.2.as_deref() == Some("hashed")) && replies.iter().any(|r| r.1 == 503))
        })?;
        let replies = by_user()?;
        let stuck = replies.iter().filter(|r| r.1 == 503).count();
        ensure!((8..=40).contains(&stuck), "a hashed retry goes back where the hash leads: {replies:?}");
        apply(cluster, "sticky-vs", &sticky("moving", "      retryIgnorePreviousHosts: true\n"))?;
        converge("the route that ignores previous hosts", || {
            Ok(by_user()?.iter().all(|r| r.2.as_deref() == Some("moving")))
        })?;
        let replies = by_user()?;
        let still = replies.iter().filter(|r| r.1 == 503).count();
        ensure!(still * 4 <= stuck && replies.iter().all(|r| matches!(r.1, 200 | 503)), "retries move off the failing endpoint ({stuck} users failed before): {replies:?}");
        Ok(())
    })
}

/// The destination's side retries the requests it sends to its app as
/// Istio's inbound route does (MeshConfig's
/// `defaultInboundHttpRetryPolicy`): by default twice, a request that
/// never reached the app (here: refused, the Service's `targetPort` has
/// no listener), and never on a gRPC port; a mesh policy with conditions
/// past the send (`5xx`) sends an answered request again.
#[test]
fn the_destinations_side_retries_to_its_app() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("ir", &[AMBIENT])?;
        let _closed = backend(
            cluster,
            "node-2",
            "ir",
            "closed-1",
            &[("app", "closed")],
            8080,
            &[],
        )?;
        let _flaky = backend(
            cluster,
            "node-2",
            "ir",
            "flaky-1",
            &[("app", "flaky")],
            8080,
            &["--fail-rate", "0.5", "--fail-status", "503"],
        )?;
        let client = client(cluster, "node-1", "ir", "caller")?;
        // Nothing listens on 8081 and 8082: every connection to the app is
        // refused.
        let closed_vip = cluster.add_service(
            "ir",
            "closed",
            &[("app", "closed")],
            &[
                ServicePort::http("http", 80, 8081),
                ServicePort::tcp("grpc-closed", 9090, 8082),
            ],
        )?;
        let flaky_vip = cluster.add_service(
            "ir",
            "flaky",
            &[("app", "flaky")],
            &[ServicePort::http("http", 80, 8080)],
        )?;
        let closed =
            |path: &str| httpapp::get_one(&client, &format!("http://{closed_vip}{path}"), &[]);
        // The server side's entry (on node-2) of the last request to `path`.
        let served = |path: &str| -> Result<serde_json::Value> {
            access_log_entries(cluster, "node-2")?
                .into_iter()
                .rev()
                .find(|e| is_http(e) && !is_client(e) && e["path"] == path)
                .with_context(|| format!("no server-side entry for {path}"))
        };
        let attempts_and_flags = |e: &serde_json::Value| {
            (
                e["attempts"].as_u64(),
                has_flag(e, "UF"),
                has_flag(e, "URX"),
            )
        };

        // Istio's default: the request and two retries, then 503 UF with
        // the attempts used up (URX); the client sees the 503.
        converge("the refused app answered by the destination's side", || {
            Ok(closed("/refused")?.status == 503)
        })?;
        let e = served("/refused")?;
        ensure!(
            attempts_and_flags(&e) == (Some(3), true, true),
            "Istio's default inbound retries: {e}"
        );
        // A gRPC port's requests are not retried.
        let grpc = httpapp::get_one(&client, &format!("http://{closed_vip}:9090/grpc-port"), &[])?;
        ensure!(grpc.status == 503, "the gRPC port's refused app: {grpc:?}");
        let e = served("/grpc-port")?;
        ensure!(
            attempts_and_flags(&e) == (Some(1), true, false),
            "no inbound retries on a gRPC port: {e}"
        );
        // An answer is not retried under the default: about half of the
        // flaky app's requests fail.
        let url = format!("http://{flaky_vip}/flaky");
        let load =
            |count: &str| httpapp::load(&client, &url, &["--count", count, "--concurrency", "4"]);
        let plain = load("400")?;
        ensure!(
            (100..=300).contains(&plain.ok),
            "Istio's default inbound retries no 503: {plain:?}"
        );

        // The mesh's policy, 10 retries on 5xx: the destination's side
        // sends an answered request again (its body kept), so a request
        // fails one time in 2^11; the refused app is tried 11 times.
        // (The JSON access log kept, to read the attempts.)
        let mesh = |policy: &str| {
            json_access_log_mesh(&format!("    defaultInboundHttpRetryPolicy: {policy}\n"))
        };
        apply(
            cluster,
            "mesh-config",
            &mesh("{attempts: 10, retryOn: 5xx, backoff: 1ms}"),
        )?;
        converge("the mesh's inbound retries", || Ok(load("40")?.ok == 40))?;
        let retried = load("400")?;
        ensure!(
            retried.ok >= 396,
            "the mesh's inbound retries on 5xx: {retried:?}"
        );
        let posted = httpapp::get_one(
            &client,
            &url,
            &["--method", "POST", "--body", "kept for the retries"],
        )?;
        ensure!(
            posted.status == 200,
            "a request with a body, retried: {posted:?}"
        );
        ensure!(
            closed("/refused-11")?.status == 503,
            "the refused app still refused"
        );
        let e = served("/refused-11")?;
        ensure!(
            attempts_and_flags(&e) == (Some(11), true, true),
            "the mesh's attempts: {e}"
        );

        // `attempts: 0`: none at all.
        apply(cluster, "mesh-config", &mesh("{attempts: 0}"))?;
        converge("inbound retries off", || {
            closed("/refused-once")?;
            Ok(served("/refused-once")?["attempts"].as_u64() == Some(1))
        })?;
        let e = served("/refused-once")?;
        ensure!(
            attempts_and_flags(&e) == (Some(1), true, false),
            "no inbound retries: {e}"
        );
        Ok(())
    })
}

#[test]
fn outlier_detection_ejects_and_restores_and_pool_limits_overflow() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("od", &[AMBIENT])?;
        let fail_flag = cluster.dir().join("ep-c-fails");
        std::fs::write(&fail_flag, b"fail").context("creating the failure flag")?;
        let flag = fail_flag.to_string_lossy().into_owned();
        let _a = backend(cluster, "node-2", "od", "ep-a", &[("app", "cart")], 8080, &[])?;
        let _b = backend(cluster, "node-2", "od", "ep-b", &[("app", "cart")], 8080, &[])?;
        let _c = backend(cluster, "node-1", "od", "ep-c", &[("app", "cart")], 8080, &["--fail-while-exists", &flag])?;
        let _tight = backend(cluster, "node-2", "od", "tight", &[("app", "tight")], 8080, &["--delay-ms", "300"])?;
        let client = client(cluster, "node-1", "od", "shopper")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let cart = cluster.add_service("od", "cart", &[("app", "cart")], &port)?;
        let tight = cluster.add_service("od", "tight", &[("app", "tight")], &port)?;

        // Two consecutive 5xx eject ep-c for 3 s (then 6 s, ...). No
        // retries, so that its failures are seen before the ejection.
        apply(cluster, "cart-dr", &destination_rule("cart", "od", "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 3s\n      maxEjectionPercent: 100\n"))?;
        apply(cluster, "cart-vs", &virtual_service("cart", "od", "  - retries:\n      attempts: 0\n    route:\n    - destination:\n        host: cart\n"))?;
        let url = format!("http://{cart}/cart");
        converge("ep-c ejected: 60 requests, none to it", || {
            let load = httpapp::load(&client, &url, &["--count", "60"])?;
            Ok(load.status(503) == 0 && load.served_by("ep-a") > 0 && load.served_by("ep-b") > 0)
        })?;
        let ejected = httpapp::load(&client, &url, &["--count", "300", "--concurrency", "3"])?;
        ensure!(ejected.ok == 300, "with ep-c ejected every request succeeds: {ejected:?}");
        std::fs::remove_file(&fail_flag).context("removing the failure flag")?;
        // Back after its ejection time: it serves again.
        converge("ep-c back in rotation", || {
            let load = httpapp::load(&client, &url, &["--count", "30"])?;
            Ok(load.served_by("ep-c") > 0)
        })?;

        // One connection and one pending request at most: 10 concurrent
        // slow requests overflow with 503 UO.
        apply(cluster, "tight-dr", &destination_rule("tight", "od", "    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRetries: 1\n"))?;
        let url = format!("http://{tight}/tight");
        converge("the pool limits", || {
            let load = httpapp::load(&client, &url, &["--count", "20", "--concurrency", "10"])?;
            Ok(load.status(503) > 0)
        })?;
        let burst = httpapp::load(&client, &url, &["--count", "40", "--concurrency", "10"])?;
        ensure!(burst.status(503) >= 10 && burst.ok >= 2, "overflow answered 503, the rest served: {burst:?}");
        ensure!(burst.errors == 0, "overflow is a 503, not a reset: {burst:?}");
        ensure!(flagged(cluster, "UO", "/tight")? >= 10, "overflow flagged UO in the access log");
        Ok(())
    })
}

/// `consecutiveGatewayErrors` counts only gateway errors (502, 503, 504):
/// a pod answering 503 is ejected, one answering 500 is not, with
/// `consecutive5xxErrors: 0` turning Envoy's default 5xx detector off as
/// Istio does.
#[test]
fn gateway_errors_eject_and_other_5xx_do_not() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("gw", &[AMBIENT])?;
        let fail_flag = cluster.dir().join("gw-fails");
        std::fs::write(&fail_flag, b"fail").context("creating the failure flag")?;
        let flag = fail_flag.to_string_lossy().into_owned();
        let _ok = backend(cluster, "node-2", "gw", "ep-ok", &[("app", "cart")], 8080, &[])?;
        let _unavailable = backend(cluster, "node-2", "gw", "ep-503", &[("app", "cart")], 8080, &["--fail-while-exists", &flag, "--fail-status", "503"])?;
        let _broken = backend(cluster, "node-1", "gw", "ep-500", &[("app", "cart")], 8080, &["--fail-while-exists", &flag, "--fail-status", "500"])?;
        let client = client(cluster, "node-1", "gw", "shopper")?;
        let cart = cluster.add_service("gw", "cart", &[("app", "cart")], &[ServicePort::http("http", 80, 8080)])?;
        apply(cluster, "cart-dr", &destination_rule("cart", "gw", "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutiveGatewayErrors: 2\n      consecutive5xxErrors: 0\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n"))?;
        apply(cluster, "cart-vs", &virtual_service("cart", "gw", "  - retries:\n      attempts: 0\n    route:\n    - destination:\n        host: cart\n"))?;
        let url = format!("http://{cart}/cart");
        converge("ep-503 ejected: 30 requests, none to it", || {
            let load = httpapp::load(&client, &url, &["--count", "30"])?;
            Ok(load.status(503) == 0 && load.served_by("ep-ok") > 0)
        })?;
        // Round robin over the two left: every other request is ep-500's
        // 500, far more than two in a row at that pod, and it stays in.
        let load = httpapp::load(&client, &url, &["--count", "60"])?;
        ensure!(
            load.status(503) == 0 && load.served_by("ep-503") == 0,
            "ep-503 stays ejected: {load:?}"
        );
        ensure!(
            load.status(500) == 30 && load.served_by("ep-500") == 30 && load.served_by("ep-ok") == 30,
            "500 is not a gateway error: ep-500 keeps its share: {load:?}"
        );
        Ok(())
    })
}

/// A request the route's `timeout` cuts (no retries, so no per-try
/// timeout) counts against the endpoint it was waiting on, as Envoy's
/// router reports it to outlier detection: a pod that never answers in
/// time is ejected, and the next requests all go to the one that does.
#[test]
fn a_route_timeout_counts_at_outlier_detection() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("to", &[AMBIENT])?;
        let _fast = backend(cluster, "node-2", "to", "stock-fast", &[("app", "stock")], 8080, &[])?;
        let _slow = backend(cluster, "node-2", "to", "stock-slow", &[("app", "stock")], 8080, &["--delay-ms", "3000"])?;
        let client = client(cluster, "node-1", "to", "buyer")?;
        let stock = cluster.add_service("to", "stock", &[("app", "stock")], &[ServicePort::http("http", 80, 8080)])?;
        apply(cluster, "stock-dr", &destination_rule("stock", "to", "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n"))?;
        apply(cluster, "stock-vs", &virtual_service("stock", "to", "  - timeout: 500ms\n    retries:\n      attempts: 0\n    route:\n    - destination:\n        host: stock\n"))?;
        let url = format!("http://{stock}/stock");
        converge("the route timeout cut a request", || {
            Ok(httpapp::load(&client, &url, &["--count", "4"])?.status(504) > 0)
        })?;
        converge("stock-slow ejected: 20 requests, none cut", || {
            let load = httpapp::load(&client, &url, &["--count", "20"])?;
            Ok(load.status(504) == 0 && load.served_by("stock-fast") == 20)
        })?;
        Ok(())
    })
}

/// `http2MaxRequests` caps a destination's requests in flight (503 `UO`
/// beyond it), a pool's `idleTimeout` closes an upstream connection left
/// idle and `maxConnectionDuration` one grown old, and `minHealthPercent` keeps sending to ejected endpoints (Envoy's
/// panic) when too few are left.
#[test]
fn request_limit_idle_connections_and_panic() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("lim", &[AMBIENT])?;
        let fail_flag = cluster.dir().join("lim-fails");
        std::fs::write(&fail_flag, b"fail").context("creating the failure flag")?;
        let flag = fail_flag.to_string_lossy().into_owned();
        let _slow = backend(cluster, "node-2", "lim", "slowpoke", &[("app", "slowpoke")], 8080, &["--delay-ms", "300"])?;
        let _idle = backend(cluster, "node-2", "lim", "idler", &[("app", "idler")], 8080, &[])?;
        let failing = ["--fail-while-exists", flag.as_str()];
        let _x = backend(cluster, "node-2", "lim", "ep-x", &[("app", "sick")], 8080, &failing)?;
        let _y = backend(cluster, "node-1", "lim", "ep-y", &[("app", "sick")], 8080, &failing)?;
        let client = client(cluster, "node-1", "lim", "shopper")?;
        let port = [ServicePort::http("http", 80, 8080)];
        let slowpoke = cluster.add_service("lim", "slowpoke", &[("app", "slowpoke")], &port)?;
        let idler = cluster.add_service("lim", "idler", &[("app", "idler")], &port)?;
        let sick = cluster.add_service("lim", "sick", &[("app", "sick")], &port)?;

        // Two requests in flight at most, whatever the connections.
        apply(cluster, "slowpoke-dr", &destination_rule("slowpoke", "lim", "    connectionPool:\n      http:\n        http2MaxRequests: 2\n"))?;
        apply(cluster, "slowpoke-vs", &virtual_service("slowpoke", "lim", "  - retries:\n      attempts: 0\n    route:\n    - destination:\n        host: slowpoke\n"))?;
        let url = format!("http://{slowpoke}/slow");
        converge("the request limit", || {
            let load = httpapp::load(&client, &url, &["--count", "8", "--concurrency", "8"])?;
            Ok(load.status(503) > 0)
        })?;
        let burst = httpapp::load(&client, &url, &["--count", "24", "--concurrency", "8"])?;
        ensure!(
            burst.status(503) >= 8 && burst.ok >= 2 && burst.served_by("slowpoke") == burst.ok,
            "beyond two in flight, 503; the rest served: {burst:?}"
        );
        ensure!(flagged(cluster, "UO", "/slow")? >= 8, "the overflow flagged UO in the access log");

        // Idle upstream connections: kept across a pause by default,
        // closed after the pool's `idleTimeout`.
        let base = format!("http://{idler}");
        let peer = |path: &str| -> Result<String> {
            let reply = httpapp::get_one(&client, &format!("{base}{path}"), &[])?;
            Ok(reply.seen()?["peer"].as_str().context("the app's peer")?.to_string())
        };
        let pause = std::time::Duration::from_millis(2500);
        let first = peer("/kept-1")?;
        std::thread::sleep(pause);
        ensure!(peer("/kept-2")? == first, "an idle connection is kept by default");
        apply(cluster, "idler-dr", &destination_rule("idler", "lim", "    connectionPool:\n      http:\n        idleTimeout: 1s\n"))?;
        converge("the idle timeout", || {
            let before = peer("/idle-1")?;
            std::thread::sleep(pause);
            Ok(peer("/idle-2")? != before)
        })?;
        let before = peer("/idle-3")?;
        ensure!(peer("/idle-4")? == before, "a busy connection is kept");
        // The same on a port that speaks HTTP/2 upstream, whose
        // connections are shared rather than taken in turn.
        let idler_h2 = cluster.add_service("lim", "idler-h2", &[("app", "idler")], &[ServicePort::tcp("http2", 80, 8080)])?;
        let h2_peer = |path: &str| -> Result<String> {
            let reply = httpapp::get_one(&client, &format!("http://{idler_h2}{path}"), &[])?;
            ensure!(reply.seen()?["version"] == "HTTP/2", "{reply:?}");
            Ok(reply.seen()?["peer"].as_str().context("the app's peer")?.to_string())
        };
        converge("the HTTP/2 service", || Ok(h2_peer("/h2-warm").is_ok()))?;
        let first = h2_peer("/h2-kept-1")?;
        std::thread::sleep(pause);
        ensure!(h2_peer("/h2-kept-2")? == first, "an idle HTTP/2 connection is kept by default");
        apply(cluster, "idler-h2-dr", &destination_rule("idler-h2", "lim", "    connectionPool:\n      http:\n        idleTimeout: 1s\n"))?;
        converge("the HTTP/2 idle timeout", || {
            let before = h2_peer("/h2-idle-1")?;
            std::thread::sleep(pause);
            Ok(h2_peer("/h2-idle-2")? != before)
        })?;
        // `maxConnectionDuration`: a connection in steady use is replaced
        // once it is a second old; ten requests over 2.5 s use 2 to 5.
        apply(cluster, "idler-dr", &destination_rule("idler", "lim", "    connectionPool:\n      tcp:\n        maxConnectionDuration: 1s\n"))?;
        converge("the connection duration limit", || {
            let mut seen = std::collections::BTreeSet::new();
            for k in 0..10 {
                seen.insert(peer(&format!("/aged-{k}"))?);
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            ensure!(seen.len() <= 5, "a connection per request or so: {seen:?}");
            Ok(seen.len() >= 2)
        })?;

        // Both sick endpoints fail. Without a floor, both are ejected and
        // the proxy answers 503 UH itself (no `x-served-by`).
        let od = "    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n";
        apply(cluster, "sick-dr", &destination_rule("sick", "lim", od))?;
        apply(cluster, "sick-vs", &virtual_service("sick", "lim", "  - retries:\n      attempts: 0\n    route:\n    - destination:\n        host: sick\n"))?;
        let url = format!("http://{sick}/sick");
        converge("both sick endpoints ejected", || {
            let load = httpapp::load(&client, &url, &["--count", "10"])?;
            Ok(load.served_by("-") == 10)
        })?;
        // With `minHealthPercent: 60`, one ejection of two leaves 50%
        // healthy: panic, and every request reaches an endpoint.
        apply(cluster, "sick-dr", &destination_rule("sick", "lim", &format!("{od}      minHealthPercent: 60\n")))?;
        converge("panic below the floor", || {
            let load = httpapp::load(&client, &url, &["--count", "40"])?;
            Ok(load.served_by("-") == 0)
        })?;
        let load = httpapp::load(&client, &url, &["--count", "40"])?;
        ensure!(
            load.served_by("-") == 0 && load.served_by("ep-x") > 0 && load.served_by("ep-y") > 0,
            "in panic both ejected endpoints still serve: {load:?}"
        );
        Ok(())
    })
}
