//! L7 routing end to end on a 2-node simulated cluster with weft's real
//! binaries: a Service port declared HTTP is terminated by the client's
//! node proxy, and VirtualService routes decide each request (weighted
//! subsets, header and cookie matches, redirects, direct responses,
//! rewrites, header edits, no route), as Istio's would. Needs root and
//! the binaries (`cargo xtask test` builds them).

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp};

const REVIEWS_RULE: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
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
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - name: testers
    match:
    - headers:
        cookie:
          regex: "^(.*?; ?)?(user=tester)(;.*)?$"
    route:
    - destination:
        host: reviews
        subset: v2
  - name: split
    route:
    - destination:
        host: reviews
        subset: v1
      weight: {v1}
    - destination:
        host: reviews
        subset: v2
      weight: {v2}
"#
    )
}

#[test]
fn canary_split_header_and_cookie_matches_and_a_live_weight_change() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("shop", &[AMBIENT])?;
        // v1 across the nodes (HBONE), v2 on the client's node (same-node
        // delivery): both paths carry L7 traffic.
        let _v1 = backend(
            cluster,
            "node-2",
            "shop",
            "reviews-v1",
            &[("app", "reviews"), ("version", "v1")],
            9080,
            &[],
        )?;
        let _v2 = backend(
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
        let url = format!("http://{vip}:9080/reviews/1");
        apply(cluster, "reviews-dr", REVIEWS_RULE)?;
        apply(cluster, "reviews-vs", &reviews_routes(90, 10))?;

        // A/B by header and by cookie: every request to v2.
        converge("end-user: jason routed to v2", || {
            let load = httpapp::load(
                &client,
                &url,
                &["--count", "20", "--header", "end-user: jason"],
            )?;
            Ok(load.served_by("reviews-v2") == 20)
        })?;
        let cookie = httpapp::load(
            &client,
            &url,
            &[
                "--count",
                "50",
                "--header",
                "cookie: theme=dark; user=tester; lang=en",
            ],
        )?;
        ensure!(
            cookie.served_by("reviews-v2") == 50,
            "cookie user=tester must go to v2: {cookie:?}"
        );
        let near_miss = httpapp::load(
            &client,
            &url,
            &["--count", "200", "--header", "cookie: user=testers"],
        )?;
        ensure!(
            near_miss.served_by("reviews-v1") > 0,
            "cookie user=testers must not match: {near_miss:?}"
        );

        // The 90/10 canary over 10,000 requests lands within 90 ± 1.5%.
        let split = httpapp::load(&client, &url, &["--count", "10000", "--concurrency", "8"])?;
        ensure!(
            split.ok == 10_000 && split.errors == 0,
            "every request answered 2xx: {split:?}"
        );
        let v1 = split.served_by("reviews-v1") as f64 / 10_000.0 * 100.0;
        ensure!(
            (88.5..=91.5).contains(&v1),
            "v1 got {v1:.2}% of the split, expected 90 ± 1.5: {split:?}"
        );
        ensure!(
            split.connections == 8,
            "keep-alive: 8 connections for 10,000 requests: {split:?}"
        );

        // The access log names the route, the destination and its subset.
        let log = access_log(cluster, "node-1")?;
        ensure!(
            log.iter().any(|e| e["route_name"] == "shop/reviews.jason"
                && subset(e) == Some("v2")
                && e["response_code"] == 200
                && e["method"] == "GET"
                && e["path"] == "/reviews/1"),
            "no access-log line for the jason route:\n{}",
            last_entries(&log, 5)
        );

        // New weights apply to new requests, on the connections already
        // open: a paced load runs across the change without an error or a
        // reconnect.
        std::thread::scope(|scope| -> Result<()> {
            let running = scope.spawn(|| {
                httpapp::load(
                    &client,
                    &url,
                    &["--count", "4000", "--concurrency", "4", "--rate", "400"],
                )
            });
            std::thread::sleep(std::time::Duration::from_secs(2));
            apply(cluster, "reviews-vs", &reviews_routes(0, 100))?;
            converge("the new weights (0/100)", || {
                let load = httpapp::load(&client, &url, &["--count", "20"])?;
                Ok(load.served_by("reviews-v2") == 20)
            })?;
            let across = running.join().expect("load thread")?;
            ensure!(
                across.errors == 0 && across.ok == 4000,
                "requests failed across the change: {across:?}"
            );
            ensure!(
                across.connections == 4,
                "connections were dropped across the change: {across:?}"
            );
            ensure!(
                across.served_by("reviews-v1") > 0
                    && across.served_by("reviews-v2") > across.served_by("reviews-v1"),
                "the change did not apply to new requests: {across:?}"
            );
            Ok(())
        })
    })
}

#[test]
fn redirects_direct_responses_rewrites_header_edits_and_no_route() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("web", &[AMBIENT])?;
        let _api = backend(
            cluster,
            "node-2",
            "web",
            "api",
            &[("app", "api")],
            8080,
            &[],
        )?;
        let client = client(cluster, "node-1", "web", "frontend")?;
        // Clients the routes tell apart by their labels and namespace.
        let canary = cluster.add_pod(
            weft_sim::PodSpec::new("node-1", "web", "canary")
                .service_account("canary")
                .label("role", "canary"),
        )?;
        cluster.add_namespace("other", &[AMBIENT])?;
        let outsider = common::client(cluster, "node-2", "other", "elsewhere")?;
        let vip = cluster.add_service(
            "web",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http-api", 80, 8080)],
        )?;
        let base = format!("http://{vip}:80");
        apply(
            cluster,
            "api-vs",
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
  namespace: web
spec:
  hosts:
  - api.web.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /old/
    redirect:
      uri: /new/
      authority: api.example.com
      redirectCode: 308
  - match:
    - uri:
        exact: /health
    directResponse:
      status: 200
      body:
        string: "ok from the proxy"
  - match:
    - uri:
        exact: /created
    directResponse:
      status: 201
  - match:
    - uri:
        prefix: /v1/
      ignoreUriCase: true
    rewrite:
      uri: /api/
      authority: api.internal
    headers:
      request:
        set:
          x-route: v1
        add:
          x-added: "yes"
        remove:
        - x-secret
      response:
        set:
          x-served-through: weft
        remove:
        - x-served-by
    route:
    - destination:
        host: api
  - match:
    - uri:
        prefix: /nowhere
    route:
    - destination:
        host: no-such-service
  - match:
    - uri:
        prefix: /no-subset
    route:
    - destination:
        host: api
        subset: v7
  - match:
    - uri:
        regex: "/re/[a-z]+/[0-9]+"
    rewrite:
      uriRegexRewrite:
        match: "^/re/([a-z]+)/([0-9]+)$"
        rewrite: "/items/\\2/\\1"
    route:
    - destination:
        host: api
  - match:
    - uri:
        exact: /to-tls
    redirect:
      uri: /secure
      scheme: https
      port: 8443
  - match:
    - uri:
        prefix: /hdr/
      headers:
        x-tier:
          prefix: gold
      withoutHeaders:
        x-blocked: {}
    directResponse:
      status: 200
      body:
        string: "gold tier"
    headers:
      response:
        add:
          x-tier-seen: gold
  - match:
    - uri:
        prefix: /who/
      sourceLabels:
        role: canary
    directResponse:
      status: 200
      body:
        string: "a canary client"
  - match:
    - uri:
        prefix: /who/
      sourceNamespace: other
    directResponse:
      status: 200
      body:
        string: "a client of namespace other"
  - match:
    - uri:
        prefix: /who/
      authority:
        prefix: "api."
    directResponse:
      status: 200
      body:
        string: "by its authority"
  - match:
    - uri:
        prefix: /cors/down
    fault:
      abort:
        httpStatus: 503
        percentage:
          value: 100
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example
    route:
    - destination:
        host: api
  - match:
    - uri:
        prefix: /cors/
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      maxAge: 1h
    route:
    - destination:
        host: api
  - match:
    - uri:
        prefix: /cors-strict/
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example
      allowMethods: [GET, POST]
      unmatchedPreflights: IGNORE
    route:
    - destination:
        host: api
  - match:
    - uri:
        regex: "/users/[0-9]+"
      method:
        exact: GET
      queryParams:
        format:
          exact: json
    route:
    - destination:
        host: api
"#,
        )?;
        converge("the api routes", || {
            Ok(
                httpapp::get_one(&client, &format!("{base}/health"), &[])?.body
                    == "ok from the proxy",
            )
        })?;
        // Routes match the normalised path, as Envoy's connection manager
        // normalises it first (Istio's default): `.` and `..` segments,
        // repeated slashes and escaped unreserved characters.
        for dotted in ["/x/../health", "/./health", "//health", "/%68ealth"] {
            let reply = httpapp::get_one(&client, &format!("{base}{dotted}"), &[])?;
            // A direct response is Envoy's local reply: text/plain.
            ensure!(
                reply.status == 200
                    && reply.body == "ok from the proxy"
                    && reply.header("content-type") == Some("text/plain"),
                "{dotted} is /health: {reply:?}"
            );
        }

        // A direct 201 (or 3xx) points at the request's own URL, as Envoy's.
        let created = httpapp::get_one(&client, &format!("{base}/created?id=3"), &[])?;
        ensure!(
            created.status == 201 && created.header("location") == Some(format!("{base}/created?id=3").as_str()),
            "a direct 201's location: {created:?}"
        );

        let redirect = httpapp::get_one(&client, &format!("{base}/old/page?q=1"), &[])?;
        ensure!(redirect.status == 308, "redirect code: {redirect:?}");
        ensure!(
            redirect.header("location") == Some("http://api.example.com/new/?q=1"),
            "redirect location: {redirect:?}"
        );

        let rewritten = httpapp::get_one(
            &client,
            &format!("{base}/V1/items?id=7"),
            &["--header", "x-secret: s3cr3t", "--header", "x-envoy-max-retries: 9"],
        )?;
        ensure!(rewritten.status == 200, "rewritten request: {rewritten:?}");
        let seen = rewritten.seen()?;
        ensure!(
            seen["path"] == "/api/items?id=7",
            "prefix rewrite (case-insensitive match): {seen}"
        );
        ensure!(
            seen["authority"] == "api.internal",
            "authority rewrite: {seen}"
        );
        ensure!(
            seen["headers"]["x-route"] == "v1" && seen["headers"]["x-added"] == "yes",
            "request headers set/add: {seen}"
        );
        ensure!(
            seen["headers"].get("x-secret").is_none(),
            "request header removed: {seen}"
        );
        ensure!(
            seen["headers"]["x-forwarded-proto"] == "http"
                && seen["headers"].get("x-request-id").is_some(),
            "proxy headers: {seen}"
        );
        // What an Istio sidecar's Envoy adds: the attempt's number, the
        // path before the rewrite (as received, case and query kept); and
        // to the response, the time upstream took. What it removes: the
        // app's internal `x-envoy-*` headers.
        ensure!(
            seen["headers"]["x-envoy-attempt-count"] == "1"
                && seen["headers"]["x-envoy-original-path"] == "/V1/items?id=7"
                && seen["headers"].get("x-envoy-max-retries").is_none(),
            "Envoy's request headers: {seen}"
        );
        ensure!(
            rewritten
                .header("x-envoy-upstream-service-time")
                .is_some_and(|t| t.parse::<u64>().is_ok()),
            "Envoy's x-envoy-upstream-service-time: {rewritten:?}"
        );
        ensure!(
            rewritten.header("x-served-through") == Some("weft")
                && rewritten.header("x-served-by").is_none(),
            "response header edits: {rewritten:?}"
        );

        // A regex rewrite with capture groups, a redirect to another
        // scheme and port, and a match on a header's prefix and another's
        // absence (its direct response with a response header added).
        let regex_rewritten = httpapp::get_one(&client, &format!("{base}/re/abc/42"), &[])?;
        ensure!(
            regex_rewritten.seen()?["path"] == "/items/42/abc",
            "uriRegexRewrite: {regex_rewritten:?}"
        );
        let to_tls = httpapp::get_one(&client, &format!("{base}/to-tls"), &[])?;
        ensure!(
            to_tls.status == 301
                && to_tls.header("location") == Some(&format!("https://{vip}:8443/secure")),
            "redirect scheme and port: {to_tls:?}"
        );
        let tier = |headers: &[&str]| {
            let mut args = Vec::new();
            for h in headers {
                args.extend(["--header", h]);
            }
            httpapp::get_one(&client, &format!("{base}/hdr/x"), &args)
        };
        let gold = tier(&["x-tier: gold-plus"])?;
        ensure!(
            gold.status == 200
                && gold.body == "gold tier"
                && gold.header("x-tier-seen") == Some("gold"),
            "a header's prefix: {gold:?}"
        );
        for (headers, why) in [
            (
                &["x-tier: gold-plus", "x-blocked: 1"][..],
                "a header withoutHeaders names",
            ),
            (&["x-tier: silver"][..], "a header that does not match"),
        ] {
            let reply = tier(headers)?;
            ensure!(
                reply.status == 404,
                "{why}: no route, expected 404: {reply:?}"
            );
        }

        // Matches on who the client is and on the request's authority.
        let who = |pod: &weft_sim::Pod, args: &[&str]| -> Result<(u16, String)> {
            let reply = httpapp::get_one(pod, &format!("{base}/who/x"), args)?;
            Ok((reply.status, reply.body))
        };
        for (name, pod, args, want) in [
            (
                "a canary client",
                &canary,
                &[][..],
                (200, "a canary client"),
            ),
            (
                "another namespace's client",
                &outsider,
                &[][..],
                (200, "a client of namespace other"),
            ),
            (
                "an authority of api.",
                &client,
                &["--header", "host: api.web"][..],
                (200, "by its authority"),
            ),
            ("none of them", &client, &[][..], (404, "")),
        ] {
            let (status, body) = who(pod, args)?;
            ensure!(
                status == want.0 && (want.1.is_empty() || body == want.1),
                "{name}: got {status} {body:?}, want {want:?}"
            );
        }

        // CORS, as Envoy's filter does it: a preflight from an allowed
        // origin is answered by the proxy; a request from it gets the
        // origin back; one from another origin is forwarded (the
        // default) or, with IGNORE, answered without the origin.
        let preflight = |path: &str, origin: &str| {
            httpapp::get_one(
                &client,
                &format!("{base}{path}"),
                &[
                    "--method",
                    "OPTIONS",
                    "--header",
                    &format!("origin: {origin}"),
                    "--header",
                    "access-control-request-method: POST",
                ],
            )
        };
        let allowed = preflight("/cors/a", "https://shop.example")?;
        ensure!(
            allowed.status == 200
                && allowed.seen().is_err()
                && allowed.header("access-control-allow-origin") == Some("https://shop.example")
                && allowed.header("access-control-allow-methods") == Some("GET,POST")
                && allowed.header("access-control-allow-headers") == Some("x-token")
                && allowed.header("access-control-max-age") == Some("3600"),
            "a preflight from an allowed origin, answered by the proxy: {allowed:?}"
        );
        let simple = httpapp::get_one(
            &client,
            &format!("{base}/cors/a"),
            &["--header", "origin: https://shop.example"],
        )?;
        ensure!(
            simple.status == 200
                && simple.seen().is_ok()
                && simple.header("access-control-allow-origin") == Some("https://shop.example"),
            "a request from an allowed origin: {simple:?}"
        );
        // A fault's abort carries the CORS headers too (Envoy's CORS
        // filter decorates it), so a browser sees the 503.
        let aborted = httpapp::get_one(
            &client,
            &format!("{base}/cors/down"),
            &["--header", "origin: https://shop.example"],
        )?;
        ensure!(
            aborted.status == 503
                && aborted.header("access-control-allow-origin") == Some("https://shop.example"),
            "a fault's abort to an allowed origin: {aborted:?}"
        );
        let forwarded = preflight("/cors/a", "https://evil.example")?;
        ensure!(
            forwarded
                .seen()
                .is_ok_and(|seen| seen["method"] == "OPTIONS")
                && forwarded.header("access-control-allow-origin").is_none(),
            "a preflight from another origin goes to the app: {forwarded:?}"
        );
        let ignored = preflight("/cors-strict/a", "https://evil.example")?;
        ensure!(
            ignored.status == 200
                && ignored.seen().is_err()
                && ignored.header("access-control-allow-origin").is_none()
                && ignored.header("access-control-allow-methods") == Some("GET,POST"),
            "IGNORE answers it without the origin: {ignored:?}"
        );

        let regex = httpapp::get_one(&client, &format!("{base}/users/42?format=json"), &[])?;
        ensure!(
            regex.status == 200,
            "regex + method + query match: {regex:?}"
        );
        // Regexes match the whole path; a query param must match too.
        for miss in [
            "/users/42x?format=json",
            "/users/42?format=xml",
            "/elsewhere",
        ] {
            let reply = httpapp::get_one(&client, &format!("{base}{miss}"), &[])?;
            ensure!(
                reply.status == 404,
                "{miss}: no route, expected 404 (NR): {reply:?}"
            );
        }
        // A destination host no Service or ServiceEntry has: 503, never a
        // hang, and a flag that says why.
        let missing = httpapp::get_one(&client, &format!("{base}/nowhere"), &[])?;
        ensure!(missing.status == 503, "a missing host: {missing:?}");
        // A subset no DestinationRule defines has no cluster either (istiod
        // builds none): Envoy's 503 with no body, not "no healthy upstream".
        let no_subset = httpapp::get_one(&client, &format!("{base}/no-subset"), &[])?;
        ensure!(
            no_subset.status == 503 && no_subset.body.is_empty(),
            "a subset no DestinationRule defines: {no_subset:?}"
        );
        let log = access_log(cluster, "node-1")?;
        // The log reads the request as the route sent it, as Envoy's does:
        // the rewritten authority; the path before the rewrite, through
        // `x-envoy-original-path`.
        let request_id = seen["headers"]["x-request-id"].as_str().context("the rewritten request's id")?;
        ensure!(
            log.iter().any(|e| e["request_id"] == request_id
                && e["authority"] == "api.internal"
                && e["path"] == "/V1/items?id=7"),
            "the rewritten request's line:\n{}",
            last_entries(&log, 12)
        );
        for path in ["/nowhere", "/no-subset"] {
            ensure!(
                log.iter().any(|e| e["response_flags"] == "NC"
                    && e["response_code_details"] == "cluster_not_found"
                    && e["path"] == path),
                "no NC line for {path} in the access log:\n{}",
                last_entries(&log, 5)
            );
        }
        ensure!(
            log.iter()
                .any(|e| e["response_flags"] == "NR" && e["path"] == "/elsewhere"),
            "no NR line in the access log:\n{}",
            last_entries(&log, 5)
        );
        // The log has the path as routed, normalised (Envoy's `:path`).
        ensure!(
            !log.iter().any(|e| e["path"] == "/x/../health"),
            "a line with the path before normalisation:\n{}",
            last_entries(&log, 8)
        );
        // The redirect and the direct response were the proxy's own
        // answers: no time to an answer from upstream and Envoy's router's
        // details; the rewritten request had an answer from upstream.
        // The last line of each: `/health` was also asked before its
        // route arrived.
        let line = |path: &str| log.iter().rev().find(|e| e["path"] == path);
        ensure!(
            line("/old/page?q=1").is_some_and(|e| e["response_code"] == 308
                && e["upstream_host"].is_null()
                && e["response_duration"].is_null()
                && e["response_code_details"] == "direct_response"),
            "the redirect's line:\n{}",
            last_entries(&log, 8)
        );
        ensure!(
            line("/health").is_some_and(|e| e["response_code"] == 200
                && e["upstream_host"].is_null()
                && e["response_code_details"] == "direct_response"),
            "the direct response's line:\n{}",
            last_entries(&log, 8)
        );
        ensure!(
            line("/V1/items?id=7").is_some_and(|e| e["response_code"] == 200
                && e["response_duration"].as_u64().is_some()
                && e["response_code_details"] == "via_upstream"),
            "the rewritten request's line:\n{}",
            last_entries(&log, 8)
        );

        // A DestinationRule's `maxRequestsPerConnection: 1`: each request
        // on a connection of its own to the destination, which the app
        // sees as a new client port; before it, three requests in a row
        // share one.
        let peers = || -> Result<Vec<String>> {
            httpapp::get(&client, &format!("{base}/v1/conn"), &["--count", "3"])?
                .iter()
                .map(|reply| Ok(reply.seen()?["peer"].as_str().context("the app's peer")?.to_string()))
                .collect()
        };
        let shared = peers()?;
        ensure!(
            shared.len() == 3 && shared.iter().all(|p| *p == shared[0]),
            "kept upstream connection: {shared:?}"
        );
        apply(
            cluster,
            "api-dr",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: web\nspec:\n  host: api.web.svc.cluster.local\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 1\n",
        )?;
        converge("one request per upstream connection", || {
            let each = peers()?;
            Ok(each[0] != each[1] && each[1] != each[2] && each[0] != each[2])
        })?;
        // The service port's own settings (`portLevelSettings`) win over
        // the DestinationRule's: 100 requests a connection on port 80.
        apply(
            cluster,
            "api-dr",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: web\nspec:\n  host: api.web.svc.cluster.local\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 1\n    portLevelSettings:\n    - port:\n        number: 80\n      connectionPool:\n        http:\n          maxRequestsPerConnection: 100\n",
        )?;
        converge("the port's own connection limit", || {
            let each = peers()?;
            Ok(each.iter().all(|p| *p == each[0]))
        })?;

        // A VirtualService none of whose routes is for this client (its one
        // route is for `role: canary` clients): istiod leaves it out of the
        // client's routes and the service's default route serves it, where
        // a route for the client that no request matches answers 404.
        let docs_vip = cluster.add_service(
            "web",
            "docs",
            &[("app", "api")],
            &[ServicePort::http("http-docs", 80, 8080)],
        )?;
        apply(
            cluster,
            "docs-vs",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: docs\n  namespace: web\nspec:\n  hosts:\n  - docs.web.svc.cluster.local\n  http:\n  - match:\n    - sourceLabels:\n        role: canary\n    directResponse:\n      status: 200\n      body:\n        string: \"canary only\"\n",
        )?;
        let docs = format!("http://{docs_vip}:80/docs");
        converge("the canary's route to docs", || {
            Ok(httpapp::get_one(&canary, &docs, &[])?.body == "canary only")
        })?;
        let plain = httpapp::get_one(&client, &docs, &[])?;
        ensure!(
            plain.status == 200 && plain.seen().is_ok(),
            "a client no route of docs is for: the service itself, not {plain:?}"
        );
        Ok(())
    })
}
