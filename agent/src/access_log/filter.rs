//! Evaluates an access-log filter (a Telemetry's `filter.expression`,
//! parsed by weft-control into `weft.telemetry.v1.Expr`) on an [`Entry`],
//! with CEL's rules for errors: a missing attribute or header makes its
//! comparison an error, `false && error` is false, `true || error` is
//! true, and an expression that ends in an error logs nothing (as Envoy).

use std::borrow::Cow;

use http::HeaderName;
use weft_proto::telemetry::{Expr, Op, Value, expr, value};

use super::entry::Entry;

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// As written, for logs.
    pub text: String,
    expr: Expr,
    /// The headers it reads, the only ones a request keeps for it.
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

/// The attributes [`value_of`] knows.
const ATTRIBUTES: &[&str] = &[
    "response.code",
    "response.grpc_status",
    "response.size",
    "response.flags",
    "response.code_details",
    "request.method",
    "request.path",
    "request.url_path",
    "request.host",
    "request.scheme",
    "request.protocol",
    "request.id",
    "request.useragent",
    "request.size",
    "connection.mtls",
    "connection.requested_server_name",
    "source.address",
    "source.port",
    "destination.address",
    "destination.port",
    "upstream.address",
    "xds.cluster_name",
    "xds.route_name",
];

impl Filter {
    pub fn new(text: String, expr: Expr) -> Filter {
        let mut filter = Filter {
            text,
            expr,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        };
        let (mut request, mut response) = (Vec::new(), Vec::new());
        headers_read(&filter.expr, &mut request, &mut response);
        filter.request_headers = request;
        filter.response_headers = response;
        filter
    }

    /// The request headers it reads.
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request_headers
    }

    /// The response headers it reads.
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }

    /// A filter whose attributes this agent knows; the error names the
    /// expression and the attribute.
    pub fn checked(text: String, expr: Expr) -> Result<Filter, String> {
        fn check(e: &Expr) -> Result<(), String> {
            let values: Vec<&Value> = match e.kind.as_ref() {
                Some(expr::Kind::Not(inner)) => return check(inner),
                Some(expr::Kind::And(list) | expr::Kind::Or(list)) => {
                    return list.items.iter().try_for_each(check);
                }
                Some(expr::Kind::Compare(c)) => c.left.iter().chain(&c.right).collect(),
                Some(expr::Kind::Value(v)) => vec![v],
                None => return Err("an empty expression".into()),
            };
            for v in values {
                if let Some(value::Kind::Attribute(name)) = &v.kind
                    && !ATTRIBUTES.contains(&name.as_str())
                {
                    return Err(format!("unknown attribute `{name}`"));
                }
            }
            Ok(())
        }
        check(&expr).map_err(|e| format!("access log filter `{text}`: {e}"))?;
        Ok(Filter::new(text, expr))
    }

    /// Whether the entry is logged.
    pub fn matches(&self, e: &Entry<'_>) -> bool {
        eval(&self.expr, e) == Some(true)
    }
}

/// Collects the headers `expr` reads: named ones, and those behind
/// `request.host`, `request.id` and `request.useragent`.
fn headers_read(expr: &Expr, request: &mut Vec<HeaderName>, response: &mut Vec<HeaderName>) {
    fn keep(list: &mut Vec<HeaderName>, name: &str) {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
            && !list.contains(&name)
        {
            list.push(name);
        }
    }
    let values: Vec<&Value> = match expr.kind.as_ref() {
        Some(expr::Kind::Not(inner)) => return headers_read(inner, request, response),
        Some(expr::Kind::And(list) | expr::Kind::Or(list)) => {
            for item in &list.items {
                headers_read(item, request, response);
            }
            return;
        }
        Some(expr::Kind::Compare(c)) => c.left.iter().chain(&c.right).collect(),
        Some(expr::Kind::Value(v)) => vec![v],
        None => return,
    };
    for v in values {
        match v.kind.as_ref() {
            Some(value::Kind::RequestHeader(name)) => keep(request, name),
            Some(value::Kind::ResponseHeader(name)) => keep(response, name),
            Some(value::Kind::Attribute(name)) => match name.as_str() {
                "request.host" => keep(request, "host"),
                "request.id" => keep(request, "x-request-id"),
                "request.useragent" => keep(request, "user-agent"),
                _ => {}
            },
            _ => {}
        }
    }
}

/// `v` on `e` as a metric label's value (CEL's `string(v)`): `None` when
/// it is missing.
pub fn label_value(v: &Value, e: &Entry<'_>) -> Option<String> {
    Some(match value_of(v, e)? {
        V::Int(n) => n.to_string(),
        V::Str(s) => s.into_owned(),
        V::Bool(b) => b.to_string(),
    })
}

/// The request headers reading `v` needs kept (named, or behind
/// `request.id` and `request.useragent`).
pub fn request_headers_of(v: &Value) -> Option<HeaderName> {
    let name = match v.kind.as_ref()? {
        value::Kind::RequestHeader(name) => name.as_str(),
        value::Kind::Attribute(a) if a == "request.id" => "x-request-id",
        value::Kind::Attribute(a) if a == "request.useragent" => "user-agent",
        _ => return None,
    };
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// The response header reading `v` needs kept, when it reads one.
pub fn response_header_of(v: &Value) -> Option<HeaderName> {
    match v.kind.as_ref()? {
        value::Kind::ResponseHeader(name) => HeaderName::from_bytes(name.as_bytes()).ok(),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum V<'a> {
    Int(i64),
    Str(Cow<'a, str>),
    Bool(bool),
}

/// `None`: an error (a missing value, a type mismatch).
fn eval(expr: &Expr, e: &Entry<'_>) -> Option<bool> {
    match expr.kind.as_ref()? {
        expr::Kind::Not(inner) => eval(inner, e).map(|b| !b),
        expr::Kind::And(list) => {
            let mut result = Some(true);
            for item in &list.items {
                match eval(item, e) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => result = None,
                }
            }
            result
        }
        expr::Kind::Or(list) => {
            let mut result = Some(false);
            for item in &list.items {
                match eval(item, e) {
                    Some(true) => return Some(true),
                    Some(false) => {}
                    None => result = None,
                }
            }
            result
        }
        expr::Kind::Value(v) => match value_of(v, e)? {
            V::Bool(b) => Some(b),
            _ => None,
        },
        expr::Kind::Compare(c) => {
            let left = value_of(c.left.as_ref()?, e)?;
            let right = value_of(c.right.as_ref()?, e)?;
            let op = Op::try_from(c.op).ok()?;
            match (op, left, right) {
                (Op::Eq, l, r) => Some(l == r),
                (Op::Ne, l, r) => Some(l != r),
                (Op::Lt, V::Int(l), V::Int(r)) => Some(l < r),
                (Op::Le, V::Int(l), V::Int(r)) => Some(l <= r),
                (Op::Gt, V::Int(l), V::Int(r)) => Some(l > r),
                (Op::Ge, V::Int(l), V::Int(r)) => Some(l >= r),
                (Op::StartsWith, V::Str(l), V::Str(r)) => Some(l.starts_with(r.as_ref())),
                (Op::EndsWith, V::Str(l), V::Str(r)) => Some(l.ends_with(r.as_ref())),
                (Op::Contains, V::Str(l), V::Str(r)) => Some(l.contains(r.as_ref())),
                _ => None,
            }
        }
    }
}

fn value_of<'a>(v: &'a Value, e: &Entry<'a>) -> Option<V<'a>> {
    let http = e.http.as_ref();
    let s = |s: &'a str| Some(V::Str(Cow::Borrowed(s)));
    let nonempty = |s: &'a str| (!s.is_empty()).then_some(V::Str(Cow::Borrowed(s)));
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| V::Str(Cow::Owned(a.to_string())));
    match v.kind.as_ref()? {
        value::Kind::Int(n) => Some(V::Int(*n)),
        value::Kind::String(text) => s(text),
        value::Kind::Bool(b) => Some(V::Bool(*b)),
        value::Kind::RequestHeader(name) => e.request_header(name).map(V::Str),
        value::Kind::ResponseHeader(name) => {
            e.response_header(name).map(|v| V::Str(Cow::Borrowed(v)))
        }
        value::Kind::Attribute(name) => match name.as_str() {
            "response.code" => http
                .filter(|h| h.status != 0)
                .map(|h| V::Int(h.status.into())),
            "response.grpc_status" => http?.grpc_status.map(|g| V::Int(g.into())),
            "response.size" => Some(V::Int(e.bytes_sent as i64)),
            "response.flags" => Some(V::Str(Cow::Owned(e.flags.to_string()))),
            "response.code_details" => Some(V::Str(Cow::Borrowed(e.code_details()))),
            "request.method" => s(http?.method),
            "request.path" => s(http?.path),
            "request.url_path" => s(http?.path.split('?').next().unwrap_or("")),
            "request.host" => s(http?.authority),
            "request.scheme" => http.map(|_| V::Str(Cow::Borrowed("http"))),
            "request.protocol" => nonempty(e.protocol),
            "request.id" => e.request_header("x-request-id").map(V::Str),
            "request.useragent" => e.request_header("user-agent").map(V::Str),
            "request.size" => Some(V::Int(e.bytes_received as i64)),
            "connection.mtls" => Some(V::Bool(e.mtls)),
            "connection.requested_server_name" => s(e.sni),
            "source.address" => addr(e.downstream_remote),
            "source.port" => e.downstream_remote.map(|a| V::Int(a.port().into())),
            "destination.address" => addr(e.downstream_local),
            "destination.port" => e.downstream_local.map(|a| V::Int(a.port().into())),
            "upstream.address" => addr(e.upstream_host),
            "xds.cluster_name" => nonempty(e.upstream_cluster),
            "xds.route_name" => nonempty(e.route),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::HeaderMap;
    use weft_proto::telemetry::{Comparison, Exprs};

    use super::*;
    use crate::access_log::entry::{Headers, Http};

    fn attr(name: &str) -> Value {
        Value {
            kind: Some(value::Kind::Attribute(name.into())),
        }
    }

    fn int(n: i64) -> Value {
        Value {
            kind: Some(value::Kind::Int(n)),
        }
    }

    fn cmp(op: Op, left: Value, right: Value) -> Expr {
        Expr {
            kind: Some(expr::Kind::Compare(Comparison {
                op: op as i32,
                left: Some(left),
                right: Some(right),
            })),
        }
    }

    fn filter(expr: Expr) -> Filter {
        Filter::new(String::new(), expr)
    }

    fn http_entry<'a>(status: u16, headers: &'a Headers) -> Entry<'a> {
        let mut e = Entry::new(SystemTime::now(), Duration::ZERO);
        e.http = Some(Http {
            method: "GET",
            path: "/api/x?y=1",
            authority: "a",
            headers: Some(headers),
            response_headers: None,
            status,
            grpc_status: None,
        });
        e
    }

    #[test]
    fn unknown_attributes_are_refused() {
        let err = Filter::checked(
            "request.colour == 1".into(),
            cmp(Op::Eq, attr("request.colour"), int(1)),
        )
        .unwrap_err();
        assert!(err.contains("`request.colour`"), "{err}");
        assert!(Filter::checked("x".into(), cmp(Op::Eq, attr("response.code"), int(1))).is_ok());
    }

    #[test]
    fn comparisons_and_logic() {
        let headers = Headers::all(
            &[(
                HeaderName::from_static("x-debug"),
                http::HeaderValue::from_static("on"),
            )]
            .into_iter()
            .collect::<HeaderMap>(),
        );
        let errors = filter(cmp(Op::Ge, attr("response.code"), int(400)));
        assert!(errors.matches(&http_entry(503, &headers)));
        assert!(!errors.matches(&http_entry(200, &headers)));
        // At L4 there is no response code: an error, not logged.
        assert!(!errors.matches(&Entry::new(SystemTime::now(), Duration::ZERO)));
        let header = cmp(
            Op::Eq,
            Value {
                kind: Some(value::Kind::RequestHeader("x-debug".into())),
            },
            Value {
                kind: Some(value::Kind::String("on".into())),
            },
        );
        assert!(filter(header.clone()).matches(&http_entry(200, &headers)));
        assert!(!filter(header.clone()).matches(&http_entry(200, &Headers::default())));
        // A logged request keeps the headers its filter reads.
        assert_eq!(
            filter(header.clone()).request_headers(),
            [HeaderName::from_static("x-debug")]
        );
        let not_ok = Expr {
            kind: Some(expr::Kind::Not(Box::new(cmp(
                Op::Eq,
                attr("response.code"),
                int(200),
            )))),
        };
        assert!(filter(not_ok.clone()).matches(&http_entry(404, &headers)));
        assert!(!filter(not_ok).matches(&http_entry(200, &headers)));
        // true || error is true; false && error is false; error && true
        // is an error.
        let or = Expr {
            kind: Some(expr::Kind::Or(Exprs {
                items: vec![header.clone(), cmp(Op::Eq, attr("request.method"), int(1))],
            })),
        };
        assert!(filter(or).matches(&http_entry(200, &headers)));
        let and = Expr {
            kind: Some(expr::Kind::And(Exprs {
                items: vec![
                    cmp(
                        Op::StartsWith,
                        attr("request.url_path"),
                        Value {
                            kind: Some(value::Kind::String("/api".into())),
                        },
                    ),
                    Expr {
                        kind: Some(expr::Kind::Value(attr("connection.mtls"))),
                    },
                ],
            })),
        };
        let mut e = http_entry(200, &headers);
        assert!(!filter(and.clone()).matches(&e));
        e.mtls = true;
        assert!(filter(and).matches(&e));
    }
}
