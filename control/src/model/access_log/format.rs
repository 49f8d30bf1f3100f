//! Envoy's access-log format strings (MeshConfig `accessLogFormat`),
//! and a VirtualService's header values, parsed into the [`FormatToken`]s
//! agents render. The command operators weft's agent renders, and
//! Envoy's others as a missing value ([`ENVOY_ONLY`]), are accepted; any
//! other is refused with its name and position, so a typo never reaches
//! a proxy.

use weft_proto::telemetry::{FormatToken, JsonField};

/// How an operator takes its argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// `%OP%` only.
    None,
    /// `%OP(header?alternative)%`: required.
    Header,
    /// `%START_TIME%`, or `%START_TIME(FORMAT)%` with a `strftime` format
    /// (`weft_proto::time_format`), kept as written.
    TimeFormat,
    /// `%GRPC_STATUS%`, or `%GRPC_STATUS(CAMEL_STRING|SNAKE_STRING|NUMBER)%`.
    GrpcStatusForm,
    /// `%ENVIRONMENT(NAME)%`: a variable's name, as written.
    Name,
}

/// The command operators weft's agent renders (Envoy's names).
const OPERATORS: &[(&str, Arg)] = &[
    ("START_TIME", Arg::TimeFormat),
    ("EMIT_TIME", Arg::TimeFormat),
    ("REQ", Arg::Header),
    ("REQ_WITHOUT_QUERY", Arg::Header),
    ("RESP", Arg::Header),
    ("TRAILER", Arg::Header),
    ("PROTOCOL", Arg::None),
    ("RESPONSE_CODE", Arg::None),
    ("RESPONSE_FLAGS", Arg::None),
    ("RESPONSE_CODE_DETAILS", Arg::None),
    ("CONNECTION_TERMINATION_DETAILS", Arg::None),
    ("UPSTREAM_TRANSPORT_FAILURE_REASON", Arg::None),
    ("BYTES_RECEIVED", Arg::None),
    ("BYTES_SENT", Arg::None),
    ("DURATION", Arg::None),
    ("RESPONSE_DURATION", Arg::None),
    ("REQUEST_DURATION", Arg::None),
    ("RESPONSE_TX_DURATION", Arg::None),
    ("UPSTREAM_HOST", Arg::None),
    ("UPSTREAM_REMOTE_ADDRESS", Arg::None),
    ("UPSTREAM_CLUSTER", Arg::None),
    ("UPSTREAM_CLUSTER_RAW", Arg::None),
    ("UPSTREAM_LOCAL_ADDRESS", Arg::None),
    ("UPSTREAM_REQUEST_ATTEMPT_COUNT", Arg::None),
    ("DOWNSTREAM_LOCAL_ADDRESS", Arg::None),
    ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", Arg::None),
    ("DOWNSTREAM_REMOTE_ADDRESS", Arg::None),
    ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Arg::None),
    ("DOWNSTREAM_REMOTE_PORT", Arg::None),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS", Arg::None),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", Arg::None),
    ("DOWNSTREAM_DIRECT_REMOTE_PORT", Arg::None),
    ("DOWNSTREAM_LOCAL_PORT", Arg::None),
    ("UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Arg::None),
    ("UPSTREAM_REMOTE_PORT", Arg::None),
    ("UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", Arg::None),
    ("UPSTREAM_LOCAL_PORT", Arg::None),
    ("DOWNSTREAM_PEER_URI_SAN", Arg::None),
    ("DOWNSTREAM_LOCAL_URI_SAN", Arg::None),
    ("UPSTREAM_PEER_URI_SAN", Arg::None),
    ("DOWNSTREAM_TLS_VERSION", Arg::None),
    ("UPSTREAM_TLS_VERSION", Arg::None),
    ("REQUESTED_SERVER_NAME", Arg::None),
    ("ROUTE_NAME", Arg::None),
    ("CONNECTION_ID", Arg::None),
    ("GRPC_STATUS", Arg::GrpcStatusForm),
    ("GRPC_STATUS_NUMBER", Arg::None),
    ("HOSTNAME", Arg::None),
    ("RESPONSE_FLAGS_LONG", Arg::None),
    ("ACCESS_LOG_TYPE", Arg::None),
    ("TRACE_ID", Arg::None),
    ("SPAN_ID", Arg::None),
    ("UNIQUE_ID", Arg::None),
    ("ENVIRONMENT", Arg::Name),
    ("VIRTUAL_CLUSTER_NAME", Arg::None),
];

/// Envoy's other command operators, which weft has no value for:
/// accepted, as Envoy accepts them, and rendered as a missing value (in a
/// VirtualService's header value they add nothing; in an access-log line
/// they print `-`).
const ENVOY_ONLY: &[&str] = &[
    "START_TIME_LOCAL",
    "EMIT_TIME_LOCAL",
    "REQUEST_TX_DURATION",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "ROUNDTRIP_DURATION",
    "COMMON_DURATION",
    "UPSTREAM_CONNECTION_POOL_READY_DURATION",
    "BYTES_RETRANSMITTED",
    "PACKETS_RETRANSMITTED",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "UPSTREAM_PROTOCOL",
    "CUSTOM_FLAGS",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_HOST_NAME_WITHOUT_PORT",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_LOCAL_SUBJECT",
    "UPSTREAM_PEER_DNS_SAN",
    "UPSTREAM_PEER_IP_SAN",
    "UPSTREAM_LOCAL_URI_SAN",
    "UPSTREAM_LOCAL_DNS_SAN",
    "UPSTREAM_LOCAL_IP_SAN",
    "UPSTREAM_PEER_CERT_V_START",
    "UPSTREAM_PEER_CERT_V_END",
    "UPSTREAM_FILTER_STATE",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_LOCAL_PORT",
    "DOWNSTREAM_PEER_DNS_SAN",
    "DOWNSTREAM_PEER_IP_SAN",
    "DOWNSTREAM_PEER_EMAIL_SAN",
    "DOWNSTREAM_PEER_OTHERNAME_SAN",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_LOCAL_EMAIL_SAN",
    "DOWNSTREAM_LOCAL_OTHERNAME_SAN",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256",
    "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1",
    "DOWNSTREAM_PEER_CHAIN_SERIALS",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "TLS_JA3_FINGERPRINT",
    "TLS_JA4_FINGERPRINT",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "PER_REQUEST_STATE",
    "FILTER_CHAIN_NAME",
    "STREAM_ID",
    "QUERY_PARAM",
    "PATH",
    "CEL",
    "METADATA",
];

/// Envoy's default format as Istio sets it (`EnvoyTextLogFormat`).
/// Envoy's own default format (no format configured at all: Istio's
/// `envoyFileAccessLog` provider with an empty `logFormat`).
pub const ENVOY_DEFAULT_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"";

pub const DEFAULT_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Istio's default JSON keys (`EnvoyJSONLogFormatIstio`), in its order.
pub const DEFAULT_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The operator an access-log format has in place of one of Envoy's that
/// weft has no value for (its name as the argument): a missing value.
pub const UNSET: &str = "UNSET";

/// Parses a text format string. The error names the operator (or the
/// malformed text) and its position (0-based, in characters). Envoy's
/// operators that weft has no value for become [`UNSET`] (a line prints
/// `-` for them, as for any missing value), with a warning.
pub fn parse(text: &str) -> Result<Vec<FormatToken>, String> {
    parse_with(text, Valueless::Unset)
}

/// Parses a VirtualService's header value as Envoy's header formatter
/// does: Envoy's operators that weft has no value for are left out (they
/// add nothing to the value).
pub fn parse_header_value(text: &str) -> Result<Vec<FormatToken>, String> {
    parse_with(text, Valueless::LeftOut)
}

/// What becomes of Envoy's operators weft has no value for
/// ([`ENVOY_ONLY`]), accepted with any argument and length.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Valueless {
    Unset,
    LeftOut,
}

fn parse_with(text: &str, valueless: Valueless) -> Result<Vec<FormatToken>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            literal.push(chars[i]);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'%') {
            literal.push('%');
            i += 2;
            continue;
        }
        let start = i;
        i += 1;
        let name_start = i;
        // Envoy's names: capitals, digits and `_`, a capital first.
        while i < chars.len()
            && (chars[i].is_ascii_uppercase()
                || chars[i] == '_'
                || (i > name_start && chars[i].is_ascii_digit()))
        {
            i += 1;
        }
        let name: String = chars[name_start..i].iter().collect();
        if name.is_empty() {
            return Err(format!(
                "position {start}: `%` starts no command operator (write `%%` for a literal `%`)"
            ));
        }
        let mut argument = None;
        if chars.get(i) == Some(&'(') {
            let close = chars[i..]
                .iter()
                .position(|c| *c == ')')
                .map(|p| i + p)
                .ok_or_else(|| format!("position {start}: `%{name}(` has no closing `)`"))?;
            argument = Some(chars[i + 1..close].iter().collect::<String>());
            i = close + 1;
        }
        let mut max_length = 0u32;
        if chars.get(i) == Some(&':') {
            let digits_start = i + 1;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[digits_start..i].iter().collect();
            max_length = digits.parse().map_err(|_| {
                format!("position {start}: `%{name}`: `:` must be followed by a length")
            })?;
        }
        if chars.get(i) != Some(&'%') {
            return Err(format!(
                "position {start}: command operator `%{name}` is not closed by `%`"
            ));
        }
        i += 1;
        if ENVOY_ONLY.contains(&name.as_str()) {
            if valueless == Valueless::Unset {
                tracing::warn!(
                    "access log format: weft has no value for `%{name}%` (Envoy's); its lines print `-` for it"
                );
                if !literal.is_empty() {
                    tokens.push(FormatToken {
                        literal: std::mem::take(&mut literal),
                        ..Default::default()
                    });
                }
                tokens.push(FormatToken {
                    operator: UNSET.to_string(),
                    argument: name,
                    ..Default::default()
                });
            }
            continue;
        }
        let Some((_, kind)) = OPERATORS.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "position {start}: unknown command operator `%{name}%` (weft renders {})",
                OPERATORS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let mut token = FormatToken {
            operator: name.clone(),
            max_length,
            ..Default::default()
        };
        match (kind, argument) {
            (Arg::Header, Some(arg)) => {
                let (header, alternative) = arg.split_once('?').unwrap_or((arg.as_str(), ""));
                if alternative.contains('?') {
                    return Err(format!(
                        "position {start}: `%{name}({arg})%`: at most one alternative header"
                    ));
                }
                if header.is_empty() {
                    return Err(format!("position {start}: `%{name}()` needs a header name"));
                }
                token.argument = header.to_ascii_lowercase();
                token.alternative = alternative.to_ascii_lowercase();
            }
            (Arg::Header, None) => {
                return Err(format!(
                    "position {start}: `%{name}%` needs a header name: `%{name}(X-HEADER)%`"
                ));
            }
            (Arg::TimeFormat, Some(format)) => {
                weft_proto::time_format::parse(&format).map_err(|e| {
                    format!("position {start}: `%{name}({format})%`: in the time format, {e}")
                })?;
                token.argument = format;
            }
            (Arg::GrpcStatusForm, Some(form)) => {
                // `%GRPC_STATUS()%` is the default, camel case, as in Envoy.
                if !["", "CAMEL_STRING", "SNAKE_STRING", "NUMBER"].contains(&form.as_str()) {
                    return Err(format!(
                        "position {start}: `%{name}({form})%`: the form is CAMEL_STRING, SNAKE_STRING or NUMBER"
                    ));
                }
                token.argument = form;
            }
            (Arg::Name, Some(variable)) if !variable.is_empty() => token.argument = variable,
            (Arg::Name, _) => {
                return Err(format!(
                    "position {start}: `%{name}%` needs a variable's name: `%{name}(NAME)%`"
                ));
            }
            // `%OP()%` is `%OP%` to Envoy.
            (Arg::None, Some(arg)) if !arg.is_empty() => {
                return Err(format!("position {start}: `%{name}%` takes no argument"));
            }
            (Arg::None, _) if max_length > 0 => {
                return Err(format!("position {start}: `%{name}%` takes no length"));
            }
            (Arg::None, _) | (Arg::TimeFormat | Arg::GrpcStatusForm, None) => {}
        }
        if !literal.is_empty() {
            tokens.push(FormatToken {
                literal: std::mem::take(&mut literal),
                ..Default::default()
            });
        }
        tokens.push(token);
    }
    if !literal.is_empty() {
        tokens.push(FormatToken {
            literal,
            ..Default::default()
        });
    }
    Ok(tokens)
}

/// Parses a JSON format: an object of key → format string.
pub fn parse_json(text: &str) -> Result<Vec<JsonField>, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("a JSON access log format must be a JSON object of strings: {e}"))?;
    let mut fields = Vec::with_capacity(object.len());
    for (key, value) in &object {
        let serde_json::Value::String(format) = value else {
            return Err(format!("key `{key}`: the value must be a format string"));
        };
        fields.push((key.as_str(), format.as_str()));
    }
    parse_fields(fields).map_err(|(key, e)| format!("key `{key}`: {e}"))
}

/// Parses JSON fields given as key and format string (an
/// `envoyFileAccessLog` provider's `logFormat.labels`), keeping their
/// order; the error names the key whose format does not parse, and why.
pub fn parse_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<JsonField>, (String, String)> {
    fields
        .into_iter()
        .map(|(key, format)| match parse(format) {
            Ok(value) => Ok(JsonField {
                key: key.to_string(),
                value,
            }),
            Err(e) => Err((key.to_string(), e)),
        })
        .collect()
}

/// Istio's default JSON format, parsed.
pub fn default_json() -> Vec<JsonField> {
    DEFAULT_JSON
        .iter()
        .map(|(key, format)| JsonField {
            key: key.to_string(),
            value: parse(format).expect("the default JSON format parses"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_formats_parse() {
        let tokens = parse(DEFAULT_TEXT).unwrap();
        assert_eq!(tokens[0].literal, "[");
        assert_eq!(tokens[1].operator, "START_TIME");
        let path = &tokens[5];
        assert_eq!(
            (
                path.operator.as_str(),
                path.argument.as_str(),
                path.alternative.as_str()
            ),
            ("REQ", "x-envoy-original-path", ":path")
        );
        assert_eq!(tokens.last().unwrap().operator, "ROUTE_NAME");
        assert_eq!(default_json().len(), DEFAULT_JSON.len());
    }

    #[test]
    fn time_formats_grpc_forms_and_paths_without_query_are_kept_as_written() {
        let tokens = parse(
            "%START_TIME(%Y/%m/%dT%H:%M:%S%z %s.%3f)% %START_TIME% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS()% %GRPC_STATUS_NUMBER% %REQ_WITHOUT_QUERY(X-Envoy-Original-Path?:PATH):20%",
        )
        .unwrap();
        let ops: Vec<(&str, &str, &str)> = tokens
            .iter()
            .filter(|t| !t.operator.is_empty())
            .map(|t| {
                (
                    t.operator.as_str(),
                    t.argument.as_str(),
                    t.alternative.as_str(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("START_TIME", "%Y/%m/%dT%H:%M:%S%z %s.%3f", ""),
                ("START_TIME", "", ""),
                ("GRPC_STATUS", "SNAKE_STRING", ""),
                ("GRPC_STATUS", "", ""),
                ("GRPC_STATUS_NUMBER", "", ""),
                ("REQ_WITHOUT_QUERY", "x-envoy-original-path", ":path"),
            ]
        );
        assert_eq!(tokens.last().unwrap().max_length, 20);
    }

    #[test]
    fn environment_names_are_kept_as_written_and_emit_times_take_a_format() {
        let tokens =
            parse("%ENVIRONMENT(POD_NAME):8% %EMIT_TIME(%s)% %UPSTREAM_REMOTE_PORT%").unwrap();
        let ops: Vec<(&str, &str, u32)> = tokens
            .iter()
            .filter(|t| !t.operator.is_empty())
            .map(|t| (t.operator.as_str(), t.argument.as_str(), t.max_length))
            .collect();
        assert_eq!(
            ops,
            [
                ("ENVIRONMENT", "POD_NAME", 8),
                ("EMIT_TIME", "%s", 0),
                ("UPSTREAM_REMOTE_PORT", "", 0)
            ]
        );
        for (text, wanted) in [
            ("%ENVIRONMENT%", "needs a variable's name"),
            ("%ENVIRONMENT()%", "needs a variable's name"),
            ("%EMIT_TIME(%q)%", "`%EMIT_TIME(%q)%`: in the time format"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn literals_lengths_and_escapes() {
        let tokens = parse("100%% %REQ(:PATH):5% x").unwrap();
        assert_eq!(tokens[0].literal, "100% ");
        assert_eq!(tokens[1].operator, "REQ");
        assert_eq!(tokens[1].max_length, 5);
        assert_eq!(tokens[2].literal, " x");
    }

    #[test]
    fn unknown_and_malformed_operators_are_refused_by_name_and_position() {
        let err = parse("ok %BOGUS_OP% x").unwrap_err();
        assert!(
            err.contains("`%BOGUS_OP%`") && err.contains("position 3"),
            "{err}"
        );
        for (text, wanted) in [
            ("%REQ%", "needs a header name"),
            ("%DURATION(x)%", "takes no argument"),
            ("%DURATION", "not closed"),
            ("a % b", "starts no command operator"),
            ("%REQ(:PATH%", "closing `)`"),
            (
                "%START_TIME(%Y-%q)%",
                "in the time format, position 3: `%q`",
            ),
            (
                "%GRPC_STATUS(camel)%",
                "CAMEL_STRING, SNAKE_STRING or NUMBER",
            ),
            ("%GRPC_STATUS_NUMBER(NUMBER)%", "takes no argument"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
        let err = parse_json("{\"a\": \"%NOPE%\"}").unwrap_err();
        assert!(err.contains("key `a`") && err.contains("%NOPE%"), "{err}");
        assert!(parse_json("[1]").is_err());
        assert_eq!(
            parse_json("{\"code\": \"%RESPONSE_CODE%\"}").unwrap()[0].key,
            "code"
        );
    }

    #[test]
    fn fields_keep_their_order_and_name_the_key_at_fault() {
        let fields = parse_fields([("z", "%DURATION%"), ("a", "x %RESPONSE_CODE%")]).unwrap();
        assert_eq!(
            fields.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert_eq!(fields[1].value[1].operator, "RESPONSE_CODE");
        let (key, e) = parse_fields([("ok", "%DURATION%"), ("bad", "%NOPE%")]).unwrap_err();
        assert_eq!(key, "bad");
        assert!(e.contains("%NOPE%"), "{e}");
    }

    #[test]
    fn header_values_take_envoys_other_operators_as_adding_nothing() {
        let ops = |text: &str| -> Vec<(String, String)> {
            parse_header_value(text)
                .unwrap()
                .into_iter()
                .map(|t| (t.literal, t.operator))
                .collect()
        };
        assert_eq!(
            ops(r#"a%UPSTREAM_METADATA(["filter_metadata", "istio"])%b%HOSTNAME%"#),
            [("ab".into(), "".into()), ("".into(), "HOSTNAME".into())]
        );
        // Istio's own examples: digits in a name, a `%` inside arguments.
        assert!(ops("%DOWNSTREAM_PEER_FINGERPRINT_256%").is_empty());
        assert!(ops("%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%").is_empty());
        // Not Envoy's, or not parsable: refused, as Envoy refuses the route.
        assert!(parse_header_value("%DOWNSTREAM_REMOTE_ADDRES%").is_err());
        assert!(parse_header_value("abc%123").is_err());
        assert!(parse_header_value("%START_TIME%%").is_err());
        // In an access-log format, a missing value (`-` in a line).
        let tokens = parse("s=%UPSTREAM_PEER_SUBJECT%").unwrap();
        assert_eq!(
            (tokens[1].operator.as_str(), tokens[1].argument.as_str()),
            (UNSET, "UPSTREAM_PEER_SUBJECT")
        );
    }

    #[test]
    fn arguments_and_lengths_as_envoys_syntax_checks_them() {
        assert_eq!(parse("%PROTOCOL()%").unwrap()[0].operator, "PROTOCOL");
        let e = parse("%PROTOCOL:5%").unwrap_err();
        assert!(e.contains("takes no length"), "{e}");
        let e = parse("%PROTOCOL(x)%").unwrap_err();
        assert!(e.contains("takes no argument"), "{e}");
        let e = parse("%REQ(a?b?c)%").unwrap_err();
        assert!(e.contains("at most one alternative"), "{e}");
    }
}
