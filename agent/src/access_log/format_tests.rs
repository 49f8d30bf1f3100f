//! Tests of `format.rs`: rendering lines of Envoy's operators.
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::{
    write::{push_addr, push_padded, push_u64, write_time},
    *,
};
use crate::{
    access_log::entry::{Headers, Http},
    l7::reply::Flag,
};

fn token(operator: &str, argument: &str, alternative: &str) -> FormatToken {
    FormatToken {
        operator: operator.into(),
        argument: argument.into(),
        alternative: alternative.into(),
        ..Default::default()
    }
}

fn literal(text: &str) -> FormatToken {
    FormatToken {
        literal: text.into(),
        ..Default::default()
    }
}

/// A JSON format's key and its value's tokens.
fn field(key: &str, value: Vec<FormatToken>) -> JsonField {
    JsonField {
        key: key.into(),
        value,
    }
}

#[test]
fn times_are_envoys_default_in_utc() {
    let mut out = Vec::new();
    write_time(
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_239_034_123),
        &mut out,
    );
    assert_eq!(out, b"2026-12-02T19:17:14.123Z");
}

#[test]
fn a_start_time_format_grpc_status_forms_paths_without_query_and_response_times() {
    let mut with_query = HeaderMap::new();
    with_query.insert("x-envoy-original-path", "/orig?token=1".parse().unwrap());
    let headers = Headers::all(&with_query);
    let http = |grpc_status| Http {
        method: "POST",
        path: "/pkg.Svc/Call?x=1",
        authority: "svc:50051",
        headers: Some(&headers),
        response_headers: None,
        status: 200,
        grpc_status,
    };
    let mut e = Entry::new(
        SystemTime::UNIX_EPOCH + Duration::new(1_796_239_034, 123_456_789),
        Duration::ZERO,
    );
    e.http = Some(http(Some(3)));
    let format = Format::text(&[
        token("START_TIME", "%Y/%m/%dT%H:%M:%S%z %s.%3f", ""),
        literal(" "),
        token("START_TIME", "", ""),
        literal(" "),
        token("GRPC_STATUS", "", ""),
        literal(" "),
        token("GRPC_STATUS", "CAMEL_STRING", ""),
        literal(" "),
        token("GRPC_STATUS", "SNAKE_STRING", ""),
        literal(" "),
        token("GRPC_STATUS", "NUMBER", ""),
        literal(" "),
        token("GRPC_STATUS_NUMBER", "", ""),
        literal(" "),
        token("REQ_WITHOUT_QUERY", ":path", ""),
        literal(" "),
        token("REQ_WITHOUT_QUERY", "x-envoy-original-path", ":path"),
        literal(" "),
        token("REQ_WITHOUT_QUERY", "x-absent", ""),
    ])
    .unwrap();
    assert_eq!(
        format.render(&e),
        "2026/12/02T19:17:14+0000 1796239034.123 2026-12-02T19:17:14.123Z InvalidArgument InvalidArgument INVALID_ARGUMENT 3 3 /pkg.Svc/Call /orig -\n"
    );
    // A status Envoy has no name for is its number; CANCELLED is
    // Abseil's spelling, Canceled Envoy's own; no status, a dash.
    let statuses = Format::text(&[
        token("GRPC_STATUS", "", ""),
        literal(" "),
        token("GRPC_STATUS", "SNAKE_STRING", ""),
    ])
    .unwrap();
    for (status, line) in [
        (Some(1), "Canceled CANCELLED\n"),
        (Some(0), "OK OK\n"),
        (Some(42), "42 42\n"),
        (None, "- -\n"),
    ] {
        e.http = Some(http(status));
        assert_eq!(statuses.render(&e), line);
    }
    // The request's body ended 5 ms in, the answer's head came 12 ms
    // in, its last byte 30 ms in; none came for a reply of the proxy's
    // own, and a body not read to its end has no end.
    let times = Format::text(&[
        token("REQUEST_DURATION", "", ""),
        literal(" "),
        token("RESPONSE_DURATION", "", ""),
        literal(" "),
        token("RESPONSE_TX_DURATION", "", ""),
    ])
    .unwrap();
    e.duration = Duration::from_millis(30);
    assert_eq!(times.render(&e), "- - -\n");
    e.request_duration = Some(Duration::from_micros(5_900));
    e.response_duration = Some(Duration::from_millis(12));
    assert_eq!(times.render(&e), "5 12 18\n");
    // In JSON, only the number is a number.
    e.http = Some(http(Some(14)));
    let json = Format::json(&[
        field("camel", vec![token("GRPC_STATUS", "", "")]),
        field("number", vec![token("GRPC_STATUS_NUMBER", "", "")]),
        field("start", vec![token("START_TIME", "%s", "")]),
        field("response_ms", vec![token("RESPONSE_DURATION", "", "")]),
        field("request_ms", vec![token("REQUEST_DURATION", "", "")]),
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json.render(&e)).unwrap();
    assert_eq!(v["camel"], "Unavailable");
    assert_eq!(v["number"], 14);
    assert_eq!(v["start"], "1796239034");
    assert_eq!(
        (&v["response_ms"], &v["request_ms"]),
        (&12.into(), &5.into())
    );
    // A time format's line break is a space in a text line, as a
    // literal's is; JSON escapes it.
    let broken = token("START_TIME", "%Y%n%m", "");
    assert_eq!(
        Format::text(std::slice::from_ref(&broken))
            .unwrap()
            .render(&e),
        "2026 12\n"
    );
    let json_broken = Format::json(&[field("t", vec![broken])]).unwrap();
    assert_eq!(json_broken.render(&e), "{\"t\":\"2026\\n12\"}\n");
    // The header it prints is kept for it; a bad form or time format is
    // refused by name.
    assert_eq!(
        format.request_headers(),
        ["x-envoy-original-path", "x-absent"].map(HeaderName::from_static)
    );
    for (bad, wanted) in [
        (token("START_TIME", "%Q", ""), "`%Q`"),
        (
            token("GRPC_STATUS", "camel", ""),
            "CAMEL_STRING, SNAKE_STRING or NUMBER",
        ),
    ] {
        let err = Format::text(&[bad]).unwrap_err();
        assert!(err.contains(wanted), "{err}");
    }
}

#[test]
fn tls_versions_and_the_upstream_peer_only_where_hbone_carried_the_traffic() {
    let web = std::sync::Arc::new(crate::access_log::als::tests::peer_workload());
    let format = Format::text(&[
        token("DOWNSTREAM_TLS_VERSION", "", ""),
        literal(" "),
        token("UPSTREAM_TLS_VERSION", "", ""),
        literal(" "),
        token("UPSTREAM_PEER_URI_SAN", "", ""),
    ])
    .unwrap();
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    e.upstream_workload = Some(&web);
    // The client side of a same-node request (handed over in the
    // process), or of a tunnel that was never made: plaintext, no peer.
    assert_eq!(format.render(&e), "- - -\n");
    // Through a tunnel that answered.
    e.upstream_tls = true;
    assert_eq!(
        format.render(&e),
        "- TLSv1.3 spiffe://cluster.local/ns/front/sa/web\n"
    );
    // The server side of an HBONE connection: its upstream is the app.
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    e.downstream_tls = true;
    assert_eq!(format.render(&e), "TLSv1.3 - -\n");
}

#[test]
fn numbers_and_addresses_are_written_as_fmt_would() {
    let mut out = Vec::new();
    for v in [0, 7, 10, 65_535, u64::MAX] {
        out.clear();
        push_u64(&mut out, v);
        assert_eq!(out, v.to_string().as_bytes());
    }
    out.clear();
    push_padded(&mut out, 7, 3);
    push_padded(&mut out, 1234, 2);
    assert_eq!(out, b"0071234");
    for a in [
        "10.0.0.1:8080",
        "0.0.0.0:0",
        "1.22.133.4:80",
        "255.255.255.255:65535",
        "[fe80::1]:443",
    ] {
        let addr: std::net::SocketAddr = a.parse().unwrap();
        out.clear();
        push_addr(&mut out, addr, true);
        assert_eq!(out, a.as_bytes());
        out.clear();
        push_addr(&mut out, addr, false);
        assert_eq!(out, addr.ip().to_string().as_bytes());
    }
}

#[test]
fn cuts_count_characters_not_bytes() {
    let mut out = b"kept:".to_vec();
    out.extend_from_slice("héllo".as_bytes());
    truncate(&mut out, 5, 2);
    assert_eq!(out, "kept:hé".as_bytes());
    truncate(&mut out, 5, 0);
    assert_eq!(out, "kept:hé".as_bytes());
    let mut json = Vec::new();
    json_string("a\"\\\n\u{1}é".as_bytes(), &mut json);
    assert_eq!(json, "\"a\\\"\\\\\\n\\u0001é\"".as_bytes());
}

#[test]
fn text_renders_values_and_dashes() {
    let mut map = HeaderMap::new();
    map.insert("user-agent", "curl/8".parse().unwrap());
    map.insert("x-other", "x".parse().unwrap());
    let headers = Headers::all(&map);
    let http = Http {
        method: "GET",
        path: "/a?b=1",
        authority: "reviews:9080",
        headers: Some(&headers),
        response_headers: None,
        status: 403,
        grpc_status: None,
    };
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::from_millis(12));
    e.http = Some(http);
    e.protocol = "HTTP/1.1";
    e.flags.set(Flag::RbacDenied);
    e.bytes_sent = 19;
    e.downstream_remote = Some("10.0.0.1:40000".parse().unwrap());
    let format = Format::text(&[
        literal("\""),
        token("REQ", ":method", ""),
        literal(" "),
        token("REQ", "x-envoy-original-path", ":path"),
        literal(" "),
        token("PROTOCOL", "", ""),
        literal("\" "),
        token("RESPONSE_CODE", "", ""),
        literal(" "),
        token("RESPONSE_FLAGS", "", ""),
        literal(" "),
        token("RESPONSE_CODE_DETAILS", "", ""),
        literal(" \""),
        token("REQ", "user-agent", ""),
        literal("\" \""),
        token("REQ", "x-request-id", ""),
        literal("\" "),
        token("DURATION", "", ""),
        literal(" "),
        token("UPSTREAM_HOST", "", ""),
        literal(" "),
        token("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "", ""),
    ])
    .unwrap();
    assert_eq!(
        format.render(&e),
        "\"GET /a?b=1 HTTP/1.1\" 403 - rbac_access_denied_matched_policy[none] \"curl/8\" \"-\" 12 - 10.0.0.1\n"
    );
    // What a logged request keeps for this format: the headers it
    // prints, not the pseudo-headers of the request line.
    assert_eq!(
        format.request_headers(),
        ["x-envoy-original-path", "user-agent", "x-request-id"].map(HeaderName::from_static)
    );
    assert_eq!(
        Headers::capture(&map, format.request_headers(), &[])
            .get(&HeaderName::from_static("x-other")),
        None
    );
    let mut short = token("REQ", ":path", "");
    short.max_length = 2;
    assert_eq!(Format::text(&[short]).unwrap().render(&e), "/a\n");
    let err = Format::text(&[token("BOGUS", "", "")]).unwrap_err();
    assert!(err.contains("%BOGUS%"), "{err}");
    // A connection's termination details: none for a request, the rule
    // for a connection a policy refused.
    let termination = Format::text(&[token("CONNECTION_TERMINATION_DETAILS", "", "")]).unwrap();
    assert_eq!(termination.render(&e), "-\n");
    e.http = None;
    e.denied_rule = Some("ns[db]-policy[deny]-rule[0]");
    assert_eq!(
        termination.render(&e),
        "rbac_access_denied_matched_policy[ns[db]-policy[deny]-rule[0]]\n"
    );
}

#[test]
fn a_line_never_breaks() {
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    e.transport_failure = "reset\nby peer";
    let format = Format::text(&[
        literal("a\nb "),
        token("UPSTREAM_TRANSPORT_FAILURE_REASON", "", ""),
    ])
    .unwrap();
    assert_eq!(format.render(&e), "a b reset by peer\n");
    let mut out = b"kept\n".to_vec();
    format.render_into(&e, &mut out);
    assert_eq!(out, b"kept\na b reset by peer\n");
}

#[test]
fn literal_runs_join_the_operator_after_them() {
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::from_millis(5));
    e.route = "reviews.v1";
    let tokens = [
        literal("a"),
        literal("bc "),
        token("DURATION", "", ""),
        token("ROUTE_NAME", "", ""),
        literal(" a literal longer than a few bytes"),
        literal("!"),
    ];
    let format = Format::text(&tokens).unwrap();
    let Layout::Text(pieces) = &format.layout else {
        panic!("a text format");
    };
    assert_eq!(pieces.len(), 3, "{pieces:?}");
    assert_eq!(
        format.render(&e),
        "abc 5reviews.v1 a literal longer than a few bytes!\n"
    );
    let mut cut = token("ROUTE_NAME", "", "");
    cut.max_length = 3;
    assert_eq!(Format::text(&[cut]).unwrap().render(&e), "rev\n");
}

#[test]
fn json_has_numbers_strings_and_nulls() {
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::from_millis(3));
    e.bytes_received = 7;
    e.upstream_cluster = "outbound|80||a\"b";
    let format = Format::json(&[
        field("response_code", vec![token("RESPONSE_CODE", "", "")]),
        field("method", vec![token("REQ", ":method", "")]),
        field("bytes_received", vec![token("BYTES_RECEIVED", "", "")]),
        field("upstream_cluster", vec![token("UPSTREAM_CLUSTER", "", "")]),
        field("mixed", vec![literal("took "), token("DURATION", "", "")]),
    ])
    .unwrap();
    let line = format.render(&e);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["response_code"], 0);
    assert!(v["method"].is_null());
    assert_eq!(v["bytes_received"], 7);
    assert_eq!(v["upstream_cluster"], "outbound|80||a\"b");
    assert_eq!(v["mixed"], "took 3");
}

#[test]
fn ports_direct_addresses_long_flags_log_types_ids_and_the_environment() {
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    e.http = Some(Http::get(503));
    e.flags.set(Flag::UpstreamConnectFailure);
    e.flags.set(Flag::RetryLimitExceeded);
    e.downstream_local = Some("10.0.0.2:8080".parse().unwrap());
    e.downstream_remote = Some("10.0.0.1:40000".parse().unwrap());
    e.upstream_host = Some("10.0.1.5:9080".parse().unwrap());
    e.upstream_local = Some("[fd00::1]:51000".parse().unwrap());
    e.trace = Some((0xabc, 0x1f));
    let ops = [
        "DOWNSTREAM_LOCAL_PORT",
        "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_PORT",
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_REMOTE_PORT",
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_LOCAL_PORT",
        "RESPONSE_FLAGS_LONG",
        "ACCESS_LOG_TYPE",
        "TRACE_ID",
        "SPAN_ID",
        "VIRTUAL_CLUSTER_NAME",
    ];
    let mut tokens = Vec::new();
    for op in ops {
        tokens.push(token(op, "", ""));
        tokens.push(literal(" "));
    }
    // The variable as the agent has it, cut to 3 characters.
    let mut path = token("ENVIRONMENT", "PATH", "");
    path.max_length = 3;
    tokens.push(path);
    tokens.push(literal(" "));
    tokens.push(token("ENVIRONMENT", "WEFT_TEST_UNSET_VARIABLE", ""));
    let format = Format::text(&tokens).unwrap();
    let path = std::env::var("PATH").expect("tests run with a PATH");
    let expected = format!(
        "8080 40000 10.0.0.1:40000 10.0.0.1 40000 10.0.1.5 9080 fd00::1 51000 \
         UpstreamConnectionFailure,UpstreamRetryLimitExceeded DownstreamEnd \
         00000000000000000000000000000abc 000000000000001f - {} -\n",
        &path[..3]
    );
    assert_eq!(format.render(&e), expected);
    // A connection's line, untraced, with no upstream and no flag.
    let mut tcp = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    tcp.downstream_remote = e.downstream_remote;
    assert_eq!(
        format.render(&tcp),
        format!(
            "- 40000 10.0.0.1:40000 10.0.0.1 40000 - - - - - TcpConnectionEnd - - - {} -\n",
            &path[..3]
        )
    );

    // JSON: ports are numbers, missing values null, an unset variable
    // the string `-` (as Envoy writes it).
    let json = Format::json(&[
        field("port", vec![token("UPSTREAM_REMOTE_PORT", "", "")]),
        field("local_port", vec![token("UPSTREAM_LOCAL_PORT", "", "")]),
        field(
            "unset",
            vec![token("ENVIRONMENT", "WEFT_TEST_UNSET_VARIABLE", "")],
        ),
        field("vc", vec![token("VIRTUAL_CLUSTER_NAME", "", "")]),
        field("flags", vec![token("RESPONSE_FLAGS_LONG", "", "")]),
        field("id", vec![token("UNIQUE_ID", "", "")]),
        field("again", vec![token("UNIQUE_ID", "", "")]),
        field("emitted", vec![token("EMIT_TIME", "%s", "")]),
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json.render(&e)).unwrap();
    assert_eq!(
        (&v["port"], &v["local_port"]),
        (&9080.into(), &51000.into())
    );
    assert!(v["vc"].is_null(), "{v}");
    let t: serde_json::Value = serde_json::from_str(&json.render(&tcp)).unwrap();
    assert!(t["port"].is_null() && t["local_port"].is_null(), "{t}");
    assert_eq!(
        t["flags"], "-",
        "no flag: the string `-`, as Envoy writes it"
    );
    assert_eq!(v["unset"], "-");
    assert_eq!(
        v["flags"],
        "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
    );
    // A version 4 UUID, another at every use.
    let id = v["id"].as_str().unwrap();
    assert_eq!((id.len(), &id[14..15], &id[8..9]), (36, "4", "-"), "{id}");
    assert_ne!(v["id"], v["again"]);
    // When the line was made, not when the request started.
    let emitted: u64 = v["emitted"].as_str().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(emitted) < 60, "{emitted} against {now}");
    let err = Format::text(&[token("ENVIRONMENT", "", "")]).unwrap_err();
    assert!(err.contains("ENVIRONMENT"), "{err}");
}

#[test]
fn stable_operators_are_kept_per_thread_and_rendered_again_when_a_value_changes() {
    let tokens = [
        literal("12345678"),
        token("RESPONSE_CODE", "", ""),
        literal(" \""),
        token("UPSTREAM_HOST", "", ""),
        literal("\" "),
        token("UPSTREAM_CLUSTER", "", ""),
        literal(" "),
        token("ROUTE_NAME", "", ""),
        literal(" 123456789"),
    ];
    let format = Format::text(&tokens).unwrap();
    let Layout::Text(pieces) = &format.layout else {
        panic!("a text format");
    };
    assert!(
        matches!(pieces.as_slice(), [Piece::Step(_), Piece::Stable { steps, .. }] if steps.len() == 4),
        "{pieces:?}"
    );
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    // An L7 line (an L4 one is rendered without the table).
    e.http = Some(Http::get(200));
    e.upstream_host = Some("10.0.0.1:80".parse().unwrap());
    e.downstream_remote = Some("10.0.0.9:40000".parse().unwrap());
    e.upstream_cluster = "outbound|80||a";
    e.route = "r1";
    let first = "12345678200 \"10.0.0.1:80\" outbound|80||a r1 123456789\n";
    assert_eq!(format.render(&e), first);
    // The second time from the thread's kept text, the same.
    assert_eq!(format.render(&e), first);
    // Each value the run reads, changed, is in the next line.
    e.upstream_host = Some("10.0.0.2:80".parse().unwrap());
    assert_eq!(
        format.render(&e),
        "12345678200 \"10.0.0.2:80\" outbound|80||a r1 123456789\n"
    );
    let cluster = String::from("outbound|80|v2|a");
    e.upstream_cluster = &cluster;
    e.route = "r2";
    assert_eq!(
        format.render(&e),
        "12345678200 \"10.0.0.2:80\" outbound|80|v2|a r2 123456789\n"
    );
    // What the run does not read does not matter to it.
    e.sni = "elsewhere";
    assert_eq!(
        format.render(&e),
        "12345678200 \"10.0.0.2:80\" outbound|80|v2|a r2 123456789\n"
    );
    // Another format with the same values never gets this one's text.
    let other = Format::text(&[
        token("UPSTREAM_HOST", "", ""),
        literal("|"),
        token("ROUTE_NAME", "", ""),
    ])
    .unwrap();
    assert_eq!(other.render(&e), "10.0.0.2:80|r2\n");
    assert_eq!(
        format.render(&e),
        "12345678200 \"10.0.0.2:80\" outbound|80|v2|a r2 123456789\n"
    );
    // A cut inside a run is in its kept text; a literal of 9 bytes.
    let mut cut = token("ROUTE_NAME", "", "");
    cut.max_length = 1;
    let cutting = Format::text(&[
        token("UPSTREAM_HOST", "", ""),
        literal(" "),
        cut,
        literal("123456789"),
    ])
    .unwrap();
    for _ in 0..2 {
        assert_eq!(cutting.render(&e), "10.0.0.2:80 r123456789\n");
    }
    // An L4 line renders the run itself, to the same text.
    e.http = None;
    assert_eq!(
        format.render(&e),
        "123456780 \"10.0.0.2:80\" outbound|80|v2|a r2 123456789\n"
    );
}

#[test]
fn header_values_are_printed_as_they_came_unless_not_utf8() {
    let mut map = HeaderMap::new();
    map.insert(
        "user-agent",
        HeaderValue::from_bytes("naïve\tagent".as_bytes()).unwrap(),
    );
    map.insert("x-bytes", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
    let headers = Headers::all(&map);
    let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    e.http = Some(Http {
        headers: Some(&headers),
        ..Http::get(200)
    });
    let format = Format::text(&[
        token("REQ", "user-agent", ""),
        literal(" "),
        token("REQ", "x-bytes", ""),
    ])
    .unwrap();
    assert_eq!(format.render(&e), "naïve\tagent -\n");
    let json = Format::json(&[field("ua", vec![token("REQ", "user-agent", "")])]).unwrap();
    assert_eq!(json.render(&e), "{\"ua\":\"naïve\\tagent\"}\n");
}

#[test]
fn an_operator_weft_has_no_value_for_is_a_missing_value() {
    let e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
    let text = Format::text(&[literal("s="), token("UNSET", "UPSTREAM_PEER_SUBJECT", "")]).unwrap();
    assert_eq!(text.render(&e), "s=-\n");
    let json = Format::json(&[field(
        "s",
        vec![token("UNSET", "UPSTREAM_PEER_SUBJECT", "")],
    )])
    .unwrap();
    assert_eq!(json.render(&e), "{\"s\":null}\n");
}
