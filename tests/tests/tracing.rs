//! Distributed tracing end to end on a 2-node simulated cluster with
//! weft's real binaries and an OTLP/gRPC receiver in a pod outside the
//! mesh (`weft-sim-http otlp-receiver`, named in the mesh config as
//! Istio's `opentelemetry` provider by its Service's hostname). A request
//! from `web` to `productpage`, which calls `reviews` and propagates the
//! trace headers as Istio asks apps to, makes one connected trace of four
//! spans (CLIENT and SERVER on each hop, from both agents); the agents
//! continue an app's W3C and B3 contexts, keep a caller's "not sampled",
//! follow the Telemetry API's sampling percentage and custom tags, and
//! trace an L4 connection through the HBONE CONNECT's `traceparent`;
//! without a Telemetry, the mesh config's sampling, the single `b3`
//! header and `enableTracing: false` take effect. Needs root and the binaries (`cargo xtask test` builds them).

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{
    Cluster, Process, ServicePort, httpapp,
    otlp::{self, SPAN_TIMEOUT, Span},
};

const MESH: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    extensionProviders:\n    - name: otel\n      opentelemetry:\n        service: otel-collector.observability.svc.cluster.local\n        port: 4317\n    defaultProviders:\n      tracing: [otel]\n";

/// The mesh-wide Telemetry, with `sampling` percent.
fn mesh_telemetry(cluster: &Cluster, sampling: u32) -> Result<()> {
    apply(
        cluster,
        "telemetry-mesh",
        &format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  tracing:\n  - randomSamplingPercentage: {sampling}\n    customTags:\n      team:\n        literal:\n          value: bookinfo\n      user:\n        header:\n          name: x-user\n          defaultValue: anonymous\n"
        ),
    )
}

/// `reviews` in `shop` on `node`, serving HTTP on 9080 behind its
/// Service, and the Service's VIP.
fn reviews_on(cluster: &Cluster, node: &str) -> Result<(Backend, std::net::Ipv4Addr)> {
    let pod = backend(
        cluster,
        node,
        "shop",
        "reviews",
        &[("app", "reviews")],
        9080,
        &[],
    )?;
    let vip = cluster.add_service(
        "shop",
        "reviews",
        &[("app", "reviews")],
        &[ServicePort::http("http", 9080, 9080)],
    )?;
    Ok((pod, vip))
}

/// The spans of the request with this `x-request-id` (the app propagates
/// it, so every hop's spans carry it).
fn of_request<'a>(spans: &'a [Span], id: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.attribute("guid:x-request-id") == Some(id))
        .collect()
}

/// The span of `kind` reported for `service` among `spans`.
fn find<'a>(spans: &[&'a Span], kind: &str, service: &str) -> Result<&'a Span> {
    spans
        .iter()
        .find(|s| s.kind == kind && s.service == service)
        .copied()
        .with_context(|| {
            format!(
                "no {kind} span of {service} in:\n{}",
                otlp::describe(&spans.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
            )
        })
}

/// Waits for the four spans of request `id`.
fn four_spans(receiver: &Process, id: &str) -> Result<Vec<Span>> {
    let spans = otlp::wait_for_spans(
        receiver,
        &format!("the four spans of request {id}"),
        SPAN_TIMEOUT,
        |spans| of_request(spans, id).len() >= 4,
    )?;
    let mine: Vec<Span> = of_request(&spans, id).into_iter().cloned().collect();
    ensure!(
        mine.len() == 4,
        "request {id}: {} spans, not 4:\n{}",
        mine.len(),
        otlp::describe(&mine)
    );
    Ok(mine)
}

/// `GET /call` from `web` to productpage with `headers`; the
/// `traceparent` (and `x-b3-spanid`) that reviews, at the end of the
/// chain, received.
fn call(web: &weft_sim::Pod, base: &str, headers: &[String]) -> Result<serde_json::Value> {
    let mut args = Vec::new();
    for h in headers {
        args.extend(["--header", h.as_str()]);
    }
    let reply = httpapp::get_one(web, &format!("{base}/call"), &args)?;
    ensure!(reply.status == 200, "GET /call: {reply:?}");
    let body: serde_json::Value = serde_json::from_str(&reply.body)?;
    Ok(body["upstream"]["headers"].clone())
}

#[test]
fn a_request_through_two_services_is_one_trace() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "front"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let mut receiver = otlp::collector(cluster)?;
        let (_reviews, reviews) = reviews_on(cluster, "node-1")?;
        let chain = format!("http://{reviews}:9080/reviews/1");
        let _productpage = backend(
            cluster,
            "node-2",
            "shop",
            "productpage",
            &[("app", "productpage")],
            9080,
            &["--call", &chain],
        )?;
        let productpage = cluster.add_service(
            "shop",
            "productpage",
            &[("app", "productpage")],
            &[ServicePort::http("http", 9080, 9080)],
        )?;
        // An opaque TCP port: traced at L4.
        let _db = backend(cluster, "node-2", "shop", "db", &[("app", "db")], 7070, &[])?;
        let db = cluster.add_service(
            "shop",
            "db",
            &[("app", "db")],
            &[ServicePort::tcp("tcp", 7070, 7070)],
        )?;
        let web = client(cluster, "node-1", "front", "web")?;
        let base = format!("http://{productpage}:9080");
        apply(cluster, "mesh", MESH)?;
        mesh_telemetry(cluster, 100)?;

        // Tracing reaches both agents: a request's four spans arrive.
        let mut probe = 0;
        converge("tracing on both agents", || {
            probe += 1;
            let id = format!("probe-{probe}");
            call(&web, &base, &[format!("x-request-id: {id}")])?;
            std::thread::sleep(std::time::Duration::from_secs(2));
            Ok(of_request(&otlp::spans(&receiver)?, &id).len() == 4)
        })?;

        // One trace, four spans, each the child of the one before.
        let seen = call(&web, &base, &["x-request-id: first".into()])?;
        let spans = four_spans(&receiver, "first")?;
        let spans: Vec<&Span> = spans.iter().collect();
        let c1 = find(&spans, "CLIENT", "web.front")?;
        let s1 = find(&spans, "SERVER", "productpage.shop")?;
        let c2 = find(&spans, "CLIENT", "productpage.shop")?;
        let s2 = find(&spans, "SERVER", "reviews.shop")?;
        let all = otlp::describe(&spans.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
        // For the record (`--nocapture`): the trace as the collector got it.
        println!("the trace of request `first`:\n{all}");
        ensure!(c1.is_root(), "the first span starts the trace:\n{all}");
        ensure!(
            s1.is_child_of(c1) && c2.is_child_of(s1) && s2.is_child_of(c2),
            "not one connected trace:\n{all}"
        );
        ensure!(
            c1.name == "productpage.shop.svc.cluster.local:9080/*"
                && s1.name == c1.name
                && c2.name == "reviews.shop.svc.cluster.local:9080/*"
                && s2.name == c2.name,
            "span names are Envoy's `<host>:<port>/*`:\n{all}"
        );
        for (key, value) in [
            ("http.method", "GET".to_string()),
            ("http.status_code", "200".into()),
            ("http.url", format!("{base}/call")),
            (
                "upstream_cluster",
                "outbound|9080||productpage.shop.svc.cluster.local".into(),
            ),
            ("component", "proxy".into()),
            ("istio.namespace", "front".into()),
            ("team", "bookinfo".into()),
            ("user", "anonymous".into()),
        ] {
            ensure!(
                c1.attribute(key) == Some(value.as_str()),
                "client span {key}: {:?}, not {value:?}: {c1:?}",
                c1.attribute(key)
            );
        }
        ensure!(
            s2.attribute("upstream_cluster") == Some("inbound|9080||"),
            "server span: {s2:?}"
        );
        // The app at the end got the server span as its parent.
        ensure!(
            seen["traceparent"] == format!("00-{}-{}-01", s2.trace_id, s2.span_id),
            "reviews received {}, not its agent's server span {}",
            seen["traceparent"],
            s2.span_id
        );
        ensure!(
            seen["x-b3-spanid"] == s2.span_id.as_str() && seen["x-b3-sampled"] == "1",
            "B3 headers for reviews: {seen}"
        );

        // An app's W3C context is continued, its headers feed custom tags.
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        call(
            &web,
            &base,
            &[
                format!("traceparent: 00-{trace}-{caller}-01"),
                "x-request-id: w3c".into(),
                "x-user: alice".into(),
            ],
        )?;
        let spans = four_spans(&receiver, "w3c")?;
        let spans: Vec<&Span> = spans.iter().collect();
        let c1 = find(&spans, "CLIENT", "web.front")?;
        ensure!(
            spans.iter().all(|s| s.trace_id == trace) && c1.parent_span_id == caller,
            "the app's trace is not continued:\n{}",
            otlp::describe(&spans.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
        );
        ensure!(c1.attribute("user") == Some("alice"), "header tag: {c1:?}");

        // B3 (64-bit trace id) too.
        call(
            &web,
            &base,
            &[
                "x-b3-traceid: a3ce929d0e0e4736".into(),
                format!("x-b3-spanid: {caller}"),
                "x-b3-sampled: 1".into(),
                "x-request-id: b3".into(),
            ],
        )?;
        let spans = four_spans(&receiver, "b3")?;
        ensure!(
            spans
                .iter()
                .all(|s| s.trace_id == "0000000000000000a3ce929d0e0e4736"),
            "the B3 trace is not continued:\n{}",
            otlp::describe(&spans)
        );

        // A caller's "not sampled" is kept: nothing is reported, and the
        // context still reaches the end of the chain, not sampled.
        let quiet = "0af7651916cd43dd8448eb211c80319c";
        let seen = call(
            &web,
            &base,
            &[
                format!("traceparent: 00-{quiet}-{caller}-00"),
                "x-request-id: quiet".into(),
            ],
        )?;
        let traceparent = seen["traceparent"].as_str().unwrap_or_default();
        ensure!(
            traceparent.starts_with(&format!("00-{quiet}-")) && traceparent.ends_with("-00"),
            "reviews received {traceparent:?}"
        );

        // L4: a TCP connection over HBONE is traced by its CONNECT.
        let reply = httpapp::get_one(&web, &format!("http://{db}:7070/tcp"), &[])?;
        ensure!(reply.status == 200, "{reply:?}");
        let spans = otlp::wait_for_spans(&receiver, "the L4 spans", SPAN_TIMEOUT, |spans| {
            spans
                .iter()
                .any(|s| s.kind == "SERVER" && s.service == "db.shop")
        })?;
        let l4: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "db.shop.svc.cluster.local:7070")
            .collect();
        let client_side = find(&l4, "CLIENT", "web.front")?;
        let server_side = find(&l4, "SERVER", "db.shop")?;
        ensure!(
            server_side.is_child_of(client_side)
                && client_side.attribute("net.protocol") == Some("HBONE"),
            "L4 spans: {client_side:?} {server_side:?}"
        );

        // The marker request came after the quiet one on every hop: had
        // the quiet one been reported, it would be there by now.
        let spans = otlp::spans(&receiver)?;
        ensure!(
            !spans.iter().any(|s| s.trace_id == quiet),
            "a request its caller did not sample was reported:\n{}",
            otlp::describe(&spans)
        );

        // Sampling 0%: requests without a decision are not traced, but
        // their context is still propagated (not sampled).
        mesh_telemetry(cluster, 0)?;
        converge("sampling 0% on node-1", || {
            let seen = call(&web, &base, &[])?;
            Ok(seen["traceparent"]
                .as_str()
                .is_some_and(|t| t.ends_with("-00")))
        })?;
        call(&web, &base, &["x-request-id: unsampled".into()])?;
        call(
            &web,
            &base,
            &[
                format!("traceparent: 00-{trace}-{caller}-01"),
                "x-request-id: marker".into(),
            ],
        )?;
        let spans = four_spans(&receiver, "marker")?;
        ensure!(
            spans.iter().all(|s| s.trace_id == trace),
            "a caller's decision wins over the percentage"
        );
        let all = otlp::spans(&receiver)?;
        ensure!(
            of_request(&all, "unsampled").is_empty(),
            "sampled at 0%:\n{}",
            otlp::describe(&all)
        );

        // The agents count what they exported.
        let counted = |outcome: &str| -> Result<u64> {
            let metrics = cluster.node("node-1")?.agent_metrics()?;
            let prefix = format!("weft_agent_spans_total{{outcome=\"{outcome}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as u64)
                .with_context(|| format!("no {prefix}in:\n{metrics}"))
        };
        ensure!(counted("exported")? > 0, "no exported spans counted");

        // `disableSpanReporting` for the client's namespace: its agent
        // reports none of front's spans, and the context still goes on,
        // so the servers' spans of the same trace arrive.
        apply(
            cluster,
            "front-quiet",
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: quiet\n  namespace: front\nspec:\n  tracing:\n  - disableSpanReporting: true\n",
        )?;
        let muted = "5bf92f3577b34da6a3ce929d0e0e4737";
        let mut attempt = 0;
        converge("front's spans muted", || {
            attempt += 1;
            let id = format!("muted-{attempt}");
            call(
                &web,
                &base,
                &[format!("traceparent: 00-{muted}-{caller}-01"), format!("x-request-id: {id}")],
            )?;
            otlp::wait_for_spans(&receiver, "the servers' spans", SPAN_TIMEOUT, |spans| {
                of_request(spans, &id).len() >= 3
            })?;
            // Had front's client span been reported, it would be there by
            // the time the last server's is.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let spans = otlp::spans(&receiver)?;
            let of_it = of_request(&spans, &id);
            Ok(of_it.len() == 3
                && of_it.iter().all(|s| s.trace_id == muted && s.service != "web.front"))
        })?;

        // The collector goes away: requests are not held up, and the spans
        // that cannot be sent are counted as failed.
        receiver.kill();
        let failed = counted("failed")?;
        converge("failed exports counted on node-1", || {
            call(
                &web,
                &base,
                &[format!("traceparent: 00-{trace}-{caller}-01")],
            )?;
            Ok(counted("failed")? > failed)
        })?;
        Ok(())
    })
}

/// The mesh config alone, no Telemetry: `defaultConfig.tracing.sampling`
/// sets the share of new traces (100%, then 0%, where a caller's sampled
/// request is still traced), a single `b3` header is continued like the
/// `x-b3-*` ones, and `enableTracing: false` reports nothing, even for a
/// sampled caller, until it is true again.
#[test]
fn mesh_config_sampling_the_single_b3_header_and_tracing_off() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "front"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let receiver = otlp::collector(cluster)?;
        let (_reviews, reviews) = reviews_on(cluster, "node-2")?;
        let web = client(cluster, "node-1", "front", "web")?;
        let url = format!("http://{reviews}:9080/reviews/1");
        let mesh =
            |extra: &str| -> Result<()> { apply(cluster, "mesh", &format!("{MESH}{extra}")) };
        let get = |headers: &[String]| -> Result<()> {
            let args: Vec<&str> = headers
                .iter()
                .flat_map(|h| ["--header", h.as_str()])
                .collect();
            let reply = httpapp::get_one(&web, &url, &args)?;
            ensure!(reply.status == 200, "{reply:?}");
            Ok(())
        };
        let spans_of =
            |id: &str| -> Result<usize> { Ok(of_request(&otlp::spans(&receiver)?, id).len()) };
        let settle = std::time::Duration::from_secs(2);

        // Every new trace sampled: both sides' spans of each request.
        mesh("    defaultConfig:\n      tracing:\n        sampling: 100\n")?;
        let mut n = 0;
        converge("sampling 100% from the mesh config", || {
            n += 1;
            let id = format!("all-{n}");
            get(&[format!("x-request-id: {id}")])?;
            std::thread::sleep(settle);
            Ok(spans_of(&id)? == 2)
        })?;

        // One `b3` header: trace, span, sampled.
        let trace = "80f198ee56343ba864fe8b2a57d3eff7";
        get(&[
            format!("b3: {trace}-e457b5a2e4d86bd1-1"),
            "x-request-id: b3-single".into(),
        ])?;
        let spans = otlp::wait_for_spans(&receiver, "the b3 request's spans", SPAN_TIMEOUT, |s| {
            of_request(s, "b3-single").len() >= 2
        })?;
        let mine = of_request(&spans, "b3-single");
        ensure!(
            mine.len() == 2 && mine.iter().all(|s| s.trace_id == trace),
            "the single b3 header's trace is not continued:\n{}",
            otlp::describe(&mine.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
        );

        // None sampled: a request without a decision is not traced; a
        // caller's sampled one is.
        mesh("    defaultConfig:\n      tracing:\n        sampling: 0\n")?;
        converge("sampling 0% from the mesh config", || {
            n += 1;
            let (quiet, marked) = (format!("none-{n}"), format!("marked-{n}"));
            get(&[format!("x-request-id: {quiet}")])?;
            get(&[
                format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
                format!("x-request-id: {marked}"),
            ])?;
            std::thread::sleep(settle);
            Ok(spans_of(&marked)? == 2 && spans_of(&quiet)? == 0)
        })?;

        // Tracing off: not even a sampled caller's request is reported.
        mesh(
            "    enableTracing: false\n    defaultConfig:\n      tracing:\n        sampling: 100\n",
        )?;
        converge("tracing off", || {
            n += 1;
            let id = format!("off-{n}");
            get(&[format!("x-request-id: {id}")])?;
            std::thread::sleep(settle);
            Ok(spans_of(&id)? == 0)
        })?;
        let sampled = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
        for k in 0..5 {
            get(&[sampled.clone(), format!("x-request-id: off-sampled-{k}")])?;
        }
        // On again: once a marker's spans arrive, any of the five would
        // have too.
        mesh(
            "    enableTracing: true\n    defaultConfig:\n      tracing:\n        sampling: 100\n",
        )?;
        converge("tracing on again", || {
            n += 1;
            let id = format!("on-{n}");
            get(&[format!("x-request-id: {id}")])?;
            std::thread::sleep(settle);
            Ok(spans_of(&id)? == 2)
        })?;
        let spans = otlp::spans(&receiver)?;
        let leaked: Vec<Span> = spans
            .iter()
            .filter(|s| {
                s.attribute("guid:x-request-id")
                    .is_some_and(|id| id.starts_with("off-sampled-"))
            })
            .cloned()
            .collect();
        ensure!(
            leaked.is_empty(),
            "reported with tracing off:\n{}",
            otlp::describe(&leaked)
        );
        Ok(())
    })
}
