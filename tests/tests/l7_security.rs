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

#[test]
fn http_authorization_decides_each_request_and_keeps_the_connection() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        for ns in ["shop", "frontend", "other"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        // Outside the mesh: plaintext, steered to the destination's proxy.
        cluster.add_namespace("legacy", &[])?;
        let outsider = client(cluster, "node-1", "legacy", "outsider")?;
        let api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "frontend", "web")?;
        // On the server's node: same-node traffic takes no HBONE hop, and
        // is decided per request all the same.
        let neighbour = client(cluster, "node-2", "frontend", "neighbour")?;
        let intruder = client(cluster, "node-1", "other", "intruder")?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let base = format!("http://{vip}:8080");

        // The seed's example: GET /api/* from namespace frontend, nothing else.
        api_policy(
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
        let got = statuses(&neighbour, &base, &sequence, &[])?;
        ensure!(
            got == [200, 403, 403, 403, 403, 403, 200],
            "same node: {sequence:?} answered {got:?}"
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
        // Plaintext (PERMISSIVE) is decided per request too: no namespace.
        let direct = format!("http://{}", api.pod.addr(8080));
        // To the pod's own address (no Service VIP, so no L7 at the
        // client's side): the destination still decides per request.
        for (who, from) in [("cross-node", &web), ("same-node", &neighbour)] {
            let got = statuses(from, &direct, &["GET /api/items", "POST /api/items"], &[])?;
            ensure!(got == [200, 403], "{who}, to the pod's address: {got:?}");
        }
        ensure!(
            statuses(&outsider, &direct, &["GET /api/items"], &[])? == [403],
            "a plaintext client has no namespace"
        );
        api_policy(
            cluster,
            "allow-legacy-public",
            "",
            &format!(
                "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{}\"]\n    to:\n    - operation:\n        paths: [\"/public/*\"]\n",
                outsider.ip()
            ),
        )?;
        converge("the plaintext client's ALLOW reached node-2", || {
            Ok(statuses(&outsider, &direct, &["GET /public/x"], &[])? == [200])
        })?;
        let got = statuses(&outsider, &direct, &["GET /public/x", "GET /api/items", "GET /public/y"], &[])?;
        ensure!(got == [200, 403, 200], "plaintext on one connection: {got:?}");
        // The app sees the path the policy saw; an encoded slash is refused.
        let merged = httpapp::get_one(&web, &format!("{base}//api///items"), &[])?;
        ensure!(merged.status == 200, "{merged:?}");
        let seen = merged.seen()?;
        ensure!(seen["path"] == "/api/items", "the app saw {}", seen["path"]);
        let encoded = httpapp::get_one(&web, &format!("{base}/api%2Fitems"), &[])?;
        ensure!(encoded.status == 400, "an encoded slash: {encoded:?}");

        // A DENY on a header value, evaluated before the ALLOW. Its first
        // rule can never match (disjoint IP blocks), so the control plane
        // drops it: the header's rule is still rule 1.
        api_policy(
            cluster,
            "deny-mallory",
            "",
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/8\"], remoteIpBlocks: [\"192.0.2.0/24\"]}\n  - when:\n    - key: request.headers[x-user]\n      values: [\"mallory*\"]\n",
        )?;
        converge("the DENY policy reached node-2", || {
            Ok(statuses(&web, &base, &["GET /api/items"], &["x-user: mallory-2"])? == [403])
        })?;
        ensure!(
            statuses(&web, &base, &["GET /api/items"], &["x-user: bob"])? == [200],
            "another user is let through"
        );
        // More of a rule's forms, each on a request the ALLOW lets in: a
        // path suffix, a path template (`{*}` is one segment), a source
        // that is not a principal, and two conditions together (a header
        // and the destination port).
        api_policy(
            cluster,
            "deny-forms",
            "",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"*.secret\"]\n  - to:\n    - operation:\n        paths: [\"/api/{*}/raw\"]\n  - from:\n    - source:\n        notPrincipals: [\"cluster.local/ns/frontend/sa/web\"]\n    to:\n    - operation:\n        paths: [\"/api/np\"]\n  - when:\n    - key: request.headers[x-deny-port]\n      values: [\"yes\"]\n    - key: destination.port\n      values: [\"8080\"]\n",
        )?;
        converge("the forms' DENY reached node-2", || {
            Ok(statuses(&web, &base, &["GET /api/x.secret"], &[])? == [403])
        })?;
        let forms = ["GET /api/x.secret", "GET /api/x.txt", "GET /api/a/raw", "GET /api/a/b/raw", "GET /api/np"];
        let got = statuses(&web, &base, &forms, &[])?;
        ensure!(got == [403, 200, 403, 200, 200], "{forms:?} from web answered {got:?}");
        let got = statuses(&neighbour, &base, &["GET /api/np"], &[])?;
        ensure!(got == [403], "another principal than web, to /api/np: {got:?}");
        let got = statuses(&web, &base, &["GET /api/items"], &["x-deny-port: yes"])?;
        ensure!(got == [403], "a header and the destination port, both: {got:?}");
        let got = statuses(&web, &base, &["GET /api/items"], &["x-deny-port: no"])?;
        ensure!(got == [200], "the header alone does not match: {got:?}");

        // The condition keys, each with a header that picks its rule: the
        // source's namespace, principal and address, the destination's
        // address, and a path that is not one listed.
        api_policy(
            cluster,
            "deny-keys",
            "",
            &format!(
                "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-k]\n      values: [ns]\n    - key: source.namespace\n      values: [frontend]\n  - when:\n    - key: request.headers[x-k]\n      values: [principal]\n    - key: source.principal\n      values: [\"cluster.local/ns/frontend/sa/web\"]\n  - when:\n    - key: request.headers[x-k]\n      values: [ip]\n    - key: source.ip\n      values: [\"{neighbour}\"]\n  - when:\n    - key: request.headers[x-k]\n      values: [dip]\n    - key: destination.ip\n      values: [\"{api}\"]\n  - to:\n    - operation:\n        notPaths: [\"/api/items\"]\n    when:\n    - key: request.headers[x-k]\n      values: [notpath]\n  - when:\n    - key: request.headers[x-k]\n      values: [rip]\n    - key: remote.ip\n      values: [\"{web}\"]\n",
                neighbour = neighbour.ip(),
                api = api.pod.ip(),
                web = web.ip(),
            ),
        )?;
        converge("the keys' DENY reached node-2", || {
            Ok(statuses(&web, &base, &["GET /api/items"], &["x-k: ns"])? == [403])
        })?;
        for (from, who, header, requests, want) in [
            (&web, "web", "x-k: principal", &["GET /api/items"][..], &[403][..]),
            (&neighbour, "neighbour", "x-k: principal", &["GET /api/items"][..], &[200][..]),
            (&web, "web", "x-k: ip", &["GET /api/items"][..], &[200][..]),
            (&neighbour, "neighbour", "x-k: ip", &["GET /api/items"][..], &[403][..]),
            (&web, "web", "x-k: dip", &["GET /api/items"][..], &[403][..]),
            (&web, "web", "x-k: notpath", &["GET /api/items", "GET /api/other"][..], &[200, 403][..]),
            (&web, "web", "x-k: rip", &["GET /api/items"][..], &[403][..]),
            (&neighbour, "neighbour", "x-k: rip", &["GET /api/items"][..], &[200][..]),
            (&web, "web", "x-k: none", &["GET /api/items"][..], &[200][..]),
        ] {
            let got = statuses(from, &base, requests, &[header])?;
            ensure!(got == want, "{who} with {header}: {requests:?} answered {got:?}, want {want:?}");
        }

        // The server side's lines name the DENY policy's rule as Istio
        // names it for Envoy's RBAC filter; no ALLOW match names none.
        let lines: Vec<_> = access_log_entries(cluster, "node-2")?
            .into_iter()
            .filter(|e| is_http(e) && !is_client(e) && e["response_code"] == 403)
            .collect();
        for details in [
            "rbac_access_denied_matched_policy[ns[shop]-policy[deny-mallory]-rule[1]]",
            "rbac_access_denied_matched_policy[none]",
        ] {
            ensure!(
                lines.iter().any(|e| e["response_code_details"] == details
                    // Envoy's RBAC filter sets no response flag.
                    && e["response_flags"] == "-"
                    && e["upstream_host"].is_null()),
                "no 403 line with the details {details}:\n{}",
                last_entries(&lines, 12)
            );
        }

        // AUDIT and dry-run: logged, never enforced.
        api_policy(
            cluster,
            "audit-posts",
            "",
            "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n",
        )?;
        api_policy(
            cluster,
            "deny-items-dry",
            "  annotations:\n    istio.io/dry-run: \"true\"\n",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/items\"]\n",
        )?;
        let node = cluster.node("node-2")?;
        // Allowed decisions are logged at debug (the access log has every
        // request); turn it on as a user would.
        let mut level = std::process::Command::new(cluster.bin_dir().join("weftctl"));
        level.args(["proxy-config", "log", "--level", "debug"]);
        node.run(level, TIMEOUT)?
            .check("weftctl proxy-config log --level debug")?;
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

        // Every decision is logged with its policy (denials at info,
        // allowed ones at debug), and counted.
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

#[test]
fn custom_policies_ask_an_ext_authz_provider_and_honour_fail_open() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("shop", &[AMBIENT])?;
        cluster.add_namespace("authz", &[])?;
        // The provider: Envoy's ext_authz over gRPC, in a pod of its own.
        let provider = cluster.add_pod(
            weft_sim::PodSpec::new("node-1", "authz", "ext-authz").label("app", "ext-authz"),
        )?;
        let _provider = provider.spawn_http(&["authz-server", "--port", "9000"])?;
        // And Envoy's HTTP service API, in the same pod.
        let _http_provider = provider.spawn_http(&["authz-server", "--http", "--port", "8000"])?;
        cluster.add_service(
            "authz",
            "ext-authz",
            &[("app", "ext-authz")],
            &[ServicePort::http("grpc", 9000, 9000), ServicePort::http("http", 8000, 8000)],
        )?;
        let mesh = cluster.dir().join("mesh.yaml");
        std::fs::write(
            &mesh,
            format!(
                "extensionProviders:\n- name: ext-grpc\n  envoyExtAuthzGrpc:\n    service: ext-authz.authz.svc.cluster.local\n    port: 9000\n    timeout: 2s\n- name: down-open\n  envoyExtAuthzGrpc:\n    service: {ip}\n    port: 9999\n    failOpen: true\n- name: down-closed\n  envoyExtAuthzGrpc:\n    service: {ip}\n    port: 9999\n    statusOnError: '503'\n\
- name: ext-http\n  envoyExtAuthzHttp:\n    service: ext-authz.authz.svc.cluster.local\n    port: 8000\n    timeout: 2s\n    pathPrefix: /authz\n    \
includeRequestHeadersInCheck: ['x-ext-authz*', X-User]\n    includeAdditionalHeadersInCheck: {{x-from: weft}}\n    \
includeRequestBodyInCheck: {{maxRequestBytes: 16}}\n    headersToUpstreamOnAllow: [x-ext-authz-check]\n    \
headersToDownstreamOnAllow: [x-ext-authz-response, '*-seen']\n    headersToDownstreamOnDeny: [x-ext-authz-check]\n\
- name: ext-http-partial\n  envoyExtAuthzHttp:\n    service: ext-authz.authz.svc.cluster.local\n    port: 8000\n    \
includeRequestHeadersInCheck: ['x-ext-authz*']\n    includeRequestBodyInCheck: {{maxRequestBytes: 16, allowPartialMessage: true}}\n    \
headersToDownstreamOnAllow: [x-ext-authz-seen]\n\
- name: ext-grpc-body\n  envoyExtAuthzGrpc:\n    service: ext-authz.authz.svc.cluster.local\n    port: 9000\n    \
includeRequestBodyInCheck: {{maxRequestBytes: 16, allowPartialMessage: true, packAsBytes: true}}\n",
                ip = provider.ip()
            ),
        )?;
        cluster
            .control()
            .restart_with(&["--mesh-config", &mesh.to_string_lossy()])?;

        let _api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "shop", "web")?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let custom = |name: &str| {
            api_policy(
                cluster,
                "ext",
                "",
                &format!("  action: CUSTOM\n  provider:\n    name: {name}\n  rules:\n  - to:\n    - operation:\n        paths: [\"/ext/*\"]\n"),
            )
        };
        let get = |path: &str, headers: &[&str]| -> Result<httpapp::Reply> {
            let mut args = Vec::new();
            for h in headers {
                args.extend(["--header", *h]);
            }
            httpapp::get_one(&web, &format!("http://{vip}:8080{path}"), &args)
        };

        custom("ext-grpc")?;
        converge("the CUSTOM policy reached node-2", || Ok(get("/ext/a", &[])?.status == 403))?;
        let denied = get("/ext/a", &[])?;
        ensure!(
            denied.body == "denied by ext_authz" && denied.header("x-ext-authz-check") == Some("denied"),
            "the provider's denial as it wrote it: {denied:?}"
        );
        ensure!(get("/ext/a", &["x-ext-authz-status: 429"])?.status == 429, "the provider's status");
        let allowed = get("/ext/a", &["x-ext-authz: allow"])?;
        ensure!(allowed.status == 200, "{allowed:?}");
        ensure!(
            allowed.header("x-ext-authz-response") == Some("yes"),
            "the provider's response header: {allowed:?}"
        );
        let seen = allowed.seen()?;
        ensure!(seen["headers"]["x-ext-authz-check"] == "allowed", "the provider's request header: {seen}");
        ensure!(get("/other", &[])?.status == 200, "a request the rules do not name is not sent");

        // DENY still applies to what the provider allowed.
        api_policy(
            cluster,
            "deny-mallory",
            "",
            "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-user]\n      values: [mallory]\n",
        )?;
        converge("the DENY policy reached node-2", || {
            Ok(get("/ext/a", &["x-ext-authz: allow", "x-user: mallory"])?.status == 403)
        })?;

        // A provider that cannot be reached: failOpen lets requests in,
        // otherwise statusOnError answers.
        custom("down-open")?;
        converge("failOpen", || Ok(get("/ext/a", &[])?.status == 200))?;
        custom("down-closed")?;
        converge("statusOnError", || Ok(get("/ext/a", &[])?.status == 503))?;
        let node = cluster.node("node-2")?;
        ensure!(
            node.agent_log_tail(400)
                .lines()
                .any(|l| l.contains("inbound request") && l.contains("policy=shop/ext")),
            "no decision naming the CUSTOM policy:\n{}",
            node.agent_log_tail(40)
        );

        // envoyExtAuthzHttp: the provider gets the method, pathPrefix +
        // path, Host, Authorization, the headers it asked for and its
        // additional ones; its answer goes back with the listed headers.
        let post = |path: &str, body: &str, headers: &[&str]| -> Result<httpapp::Reply> {
            let mut args = vec!["--method", "POST", "--body", body];
            for h in headers {
                args.extend(["--header", *h]);
            }
            httpapp::get_one(&web, &format!("http://{vip}:8080{path}"), &args)
        };
        let seen_by_provider = |reply: &httpapp::Reply| -> Result<serde_json::Value> {
            let seen = reply
                .header("x-ext-authz-seen")
                .with_context(|| format!("no x-ext-authz-seen: {reply:?}"))?;
            Ok(serde_json::from_str(seen)?)
        };
        custom("ext-http")?;
        converge("the HTTP provider decides", || {
            let reply = get("/ext/a", &[])?;
            Ok(reply.status == 403 && reply.body.starts_with('{'))
        })?;
        let denied = get(
            "/ext/a?q=1",
            &["X-User: bob", "x-not-asked: 1", "authorization: Basic dXNlcg=="],
        )?;
        let asked = denied.seen()?;
        ensure!(denied.status == 403, "{denied:?}");
        ensure!(
            asked["method"] == "GET" && asked["path"] == "/authz/ext/a?q=1",
            "method and pathPrefix + path: {asked}"
        );
        let h = &asked["headers"];
        ensure!(
            h["x-user"] == "bob" && h["authorization"] == "Basic dXNlcg==" && h["x-from"] == "weft",
            "asked-for, Authorization and additional headers: {asked}"
        );
        ensure!(
            h["host"].as_str().is_some_and(|host| host.starts_with(&vip.to_string())),
            "the original Host: {asked}"
        );
        ensure!(
            h.get("x-not-asked").is_none() && h.get("x-envoy-auth-partial-body").is_none() && h["content-length"] == "0",
            "only what was asked for, no body: {asked}"
        );
        ensure!(
            denied.header("x-ext-authz-check") == Some("denied") && denied.header("x-ext-authz-extra").is_none(),
            "headersToDownstreamOnDeny picks the provider's headers: {denied:?}"
        );
        ensure!(get("/ext/a", &["x-ext-authz-status: 429"])?.status == 429, "the provider's status");
        let failed = get("/ext/a", &["x-ext-authz-status: 500"])?;
        ensure!(
            failed.status == 403 && failed.body.is_empty(),
            "a 5xx from the provider is a failure (statusOnError): {failed:?}"
        );
        let allowed = get("/ext/a", &["x-ext-authz: allow"])?;
        ensure!(allowed.status == 200, "{allowed:?}");
        ensure!(
            allowed.header("x-ext-authz-response") == Some("yes") && allowed.header("x-ext-authz-extra").is_none(),
            "headersToDownstreamOnAllow: {allowed:?}"
        );
        ensure!(
            allowed.seen()?["headers"]["x-ext-authz-check"] == "allowed",
            "headersToUpstreamOnAllow reached the app: {allowed:?}"
        );

        // includeRequestBodyInCheck: a fitting body goes to the provider
        // and, whole, to the app; a larger one is 413.
        let allowed = post("/ext/a", "0123456789", &["x-ext-authz: allow"])?;
        ensure!(allowed.status == 200, "{allowed:?}");
        let asked = seen_by_provider(&allowed)?;
        ensure!(
            asked["method"] == "POST"
                && asked["body"] == "0123456789"
                && asked["headers"]["x-envoy-auth-partial-body"] == "false"
                && asked["headers"]["content-length"] == "10",
            "the body in the check: {asked}"
        );
        ensure!(allowed.seen()?["body_bytes"] == 10, "the app's body: {allowed:?}");
        let large = post("/ext/a", "0123456789abcdefghij", &["x-ext-authz: allow"])?;
        ensure!(large.status == 413, "larger than maxRequestBytes: {large:?}");

        // allowPartialMessage: the provider gets the first bytes, the app
        // all of them.
        custom("ext-http-partial")?;
        converge("allowPartialMessage", || {
            Ok(post("/ext/a", "0123456789abcdefghij", &["x-ext-authz: allow"])?.status == 200)
        })?;
        let allowed = post("/ext/a", "0123456789abcdefghij", &["x-ext-authz: allow"])?;
        let asked = seen_by_provider(&allowed)?;
        ensure!(
            asked["body"] == "0123456789abcdef" && asked["headers"]["x-envoy-auth-partial-body"] == "true",
            "the first maxRequestBytes, marked partial: {asked}"
        );
        ensure!(allowed.seen()?["body_bytes"] == 20, "the app gets the whole body: {allowed:?}");

        // envoyExtAuthzGrpc with the body, as bytes (packAsBytes).
        custom("ext-grpc-body")?;
        converge("the gRPC provider with the body", || {
            let reply = post("/ext/a", "0123456789abcdefghij", &["x-ext-authz: allow"])?;
            Ok(reply.status == 200 && seen_by_provider(&reply).is_ok_and(|s| s["raw_body"].is_string()))
        })?;
        let allowed = post("/ext/a", "0123456789abcdefghij", &["x-ext-authz: allow"])?;
        let asked = seen_by_provider(&allowed)?;
        ensure!(
            asked["raw_body"] == "0123456789abcdef" && asked["body"] == "" && asked["partial_body"] == "true",
            "raw_body with the first bytes: {asked}"
        );
        ensure!(allowed.seen()?["body_bytes"] == 20, "the app gets the whole body: {allowed:?}");
        let fitting = post("/ext/a", "hello", &["x-ext-authz: allow"])?;
        let asked = seen_by_provider(&fitting)?;
        ensure!(
            asked["raw_body"] == "hello" && asked["partial_body"] == "false",
            "a fitting body: {asked}"
        );
        Ok(())
    })
}

/// An HTTP route to a port that its own Service declares TCP, on a pod of
/// the client's node: the client's agent pools that upstream connection
/// and delivers into the pod directly, with the pod's L4 policy. A DENY
/// added while the pooled connection is open closes it (as the
/// destination's inbound proxy would an open L4 connection), and the next
/// requests are refused, instead of riding the connection the policy no
/// longer allows.
#[test]
fn a_policy_change_closes_a_pooled_same_node_upstream_connection() -> Result<()> {
    let cluster = Cluster::builder().nodes(1).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("shop", &[AMBIENT])?;
        let _api = backend(cluster, "node-1", "shop", "api", &[("app", "api")], 9000, &[])?;
        cluster.add_service("shop", "api", &[("app", "api")], &[ServicePort::tcp("tcp", 9000, 9000)])?;
        // `front` has no pods: its HTTP port is routed to api's TCP port.
        let front = cluster.add_service("shop", "front", &[("app", "front")], &[ServicePort::http("http", 80, 80)])?;
        apply(
            cluster,
            "front-vs",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: front\n  namespace: shop\nspec:\n  hosts:\n  - front\n  http:\n  - route:\n    - destination:\n        host: api\n        port:\n          number: 9000\n",
        )?;
        let web = client(cluster, "node-1", "shop", "web")?;
        let url = format!("http://{front}/");
        converge("front's route to api", || {
            Ok(httpapp::get_one(&web, &url, &[]).is_ok_and(|r| r.status == 200 && r.header("x-served-by") == Some("api")))
        })?;
        let node = cluster.node("node-1")?;
        let revoked_before = node.admin_json("/stats")?["connections_denied"]["policy_revoked"]
            .as_u64()
            .unwrap_or(0);

        api_policy(
            cluster,
            "deny-web",
            "",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/web\"]\n",
        )?;
        converge("the DENY to reach the pooled connection", || {
            Ok(httpapp::get_one(&web, &url, &[]).is_ok_and(|r| r.status != 200))
        })?;
        for _ in 0..5 {
            let reply = httpapp::get_one(&web, &url, &[])?;
            ensure!(reply.status != 200, "a request after the DENY was served: {}", reply.status);
        }
        wait_for("the closing in the agent's log, with the policy", TIMEOUT, || {
            Ok(node
                .agent_log_tail(400)
                .lines()
                .any(|l| {
                    l.contains("closing an open connection")
                        && l.contains("shop/deny-web")
                        && l.contains("spiffe://cluster.local/ns/shop/sa/web")
                })
                .then_some(()))
        })
        .with_context(|| node.agent_log_tail(100))?;
        let revoked = node.admin_json("/stats")?["connections_denied"]["policy_revoked"]
            .as_u64()
            .unwrap_or(0);
        ensure!(revoked > revoked_before, "policy_revoked counted {revoked} (was {revoked_before})");
        Ok(())
    })
}

/// An operation's `hosts` (exact, with or without the port, a suffix
/// wildcard) and `notHosts`, `notMethods`, a `{**}` path template and
/// `*`, and a source's `serviceAccounts` and `notServiceAccounts`, each
/// decided per request at the destination against the clients they name
/// and one they do not.
#[test]
fn hosts_negations_path_templates_and_service_accounts() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "frontend", "other"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "frontend", "web")?;
        let ops = client(cluster, "node-1", "frontend", "ops")?;
        let intruder = client(cluster, "node-1", "other", "intruder")?;
        // The Service says port 8080 speaks HTTP: the destination decides
        // per request.
        cluster.add_service("shop", "api", &[("app", "api")], &[ServicePort::http("http", 8080, 8080)])?;
        api_policy(
            cluster,
            "allow-by-account",
            "",
            "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [frontend/web]\n    to:\n    - operation:\n        hosts: [api.shop.example, \"*.internal\"]\n        notMethods: [DELETE]\n        paths: [\"/v1/{**}\", /health]\n  - from:\n    - source:\n        namespaces: [frontend]\n        notServiceAccounts: [frontend/web]\n    to:\n    - operation:\n        notHosts: [admin.shop.example]\n        paths: [\"*\"]\n",
        )?;
        // To the pod's address (no L7 at the client's side) with a Host of
        // the test's choosing.
        let direct = format!("http://{}", api.pod.addr(8080));
        let ask = |from: &weft_sim::Pod, request: &str, host: &str| -> Result<u16> {
            let host = format!("Host: {host}");
            Ok(statuses(from, &direct, &[request], &[&host])?[0])
        };
        converge("the ALLOW policy reached node-2", || {
            Ok(ask(&intruder, "GET /v1/items", "api.shop.example")? == 403)
        })?;
        let cases: &[(&str, &weft_sim::Pod, &str, &str, u16)] = &[
            ("web, a template's many segments", &web, "GET /v1/a/b/items", "api.shop.example", 200),
            ("web, an exact path", &web, "GET /health", "api.shop.example", 200),
            ("web, the host with a port", &web, "GET /v1/items", "api.shop.example:8080", 200),
            ("web, a suffix host", &web, "GET /v1/items", "db.internal", 200),
            ("web, the host in capitals", &web, "GET /v1/items", "API.Shop.Example", 200),
            ("web, another host", &web, "GET /v1/items", "api.other.example", 403),
            ("web, a method it must not use", &web, "DELETE /v1/items", "api.shop.example", 403),
            ("web, a path outside the template", &web, "GET /v2/items", "api.shop.example", 403),
            ("web, the second rule excludes it", &web, "GET /v2/items", "other.example", 403),
            ("ops, any path", &ops, "DELETE /anything/at/all", "api.shop.example", 200),
            ("ops, the host it must not use", &ops, "GET /v1/items", "admin.shop.example", 403),
            ("intruder, another namespace", &intruder, "GET /v1/items", "api.shop.example", 403),
        ];
        for (what, from, request, host, want) in cases {
            let got = ask(from, request, host)?;
            ensure!(got == *want, "{what} ({request}, Host {host}): got {got}, want {want}");
        }
        Ok(())
    })
}
