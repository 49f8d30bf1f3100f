//! CORS (Istio's `CorsPolicy`), as Envoy's CORS filter applies the policy
//! Istio translates it into.
//!
//! A request is a CORS request when it carries a non-empty `Origin`; a
//! preflight is an `OPTIONS` CORS request with a non-empty
//! `Access-Control-Request-Method`. Envoy does not check the requested
//! method or headers against the policy: it only announces the policy.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header};
use weft_proto::route as pb;

use super::RouteError;
use super::matcher::StringMatcher;

/// What to do with a request before routing it, as far as CORS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Not a preflight: route it (and [`CorsPolicy::decorate`] the response).
    NotPreflight,
    /// Answer 200 with these headers, without forwarding it: a preflight
    /// from an allowed origin, or from another with `unmatched_preflights`
    /// IGNORE (then without `access-control-allow-origin`, as Envoy
    /// answers it: the policy's other headers, which a browser disregards
    /// without that one).
    Respond(HeaderMap),
    /// A preflight from an origin the policy does not allow, with
    /// `unmatched_preflights` FORWARD (the default): route it like any
    /// request.
    Forward,
}

/// A route's compiled CORS policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    allow_origins: Vec<StringMatcher>,
    /// Joined with "," as Istio does; `None` when empty.
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    /// Whole seconds, as Istio writes it.
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

impl CorsPolicy {
    /// Compiles the route's `cors_policy`.
    pub(crate) fn compile(
        c: Option<&pb::CorsPolicy>,
        route: &str,
    ) -> Result<Option<Self>, RouteError> {
        let Some(c) = c else { return Ok(None) };
        let mut allow_origins = Vec::with_capacity(c.allow_origins.len());
        for (i, o) in c.allow_origins.iter().enumerate() {
            // Istio drops a StringMatch without a match type.
            if let Some(m) = StringMatcher::compile(o).map_err(|error| RouteError::Regex {
                route: route.to_string(),
                field: format!("cors_policy.allow_origins[{i}].regex"),
                error,
            })? {
                allow_origins.push(m);
            }
        }
        let list = |items: &[String], field: &str| -> Result<Option<HeaderValue>, RouteError> {
            if items.is_empty() {
                return Ok(None);
            }
            let joined = items.join(",");
            HeaderValue::from_str(&joined)
                .map(Some)
                .map_err(|_| RouteError::Invalid {
                    route: route.to_string(),
                    field: format!("cors_policy.{field}"),
                    reason: format!("invalid header value {joined:?}"),
                })
        };
        let max_age = c
            .max_age
            .as_ref()
            .map(|d| HeaderValue::from(d.seconds.max(0)));
        Ok(Some(Self {
            allow_origins,
            allow_methods: list(&c.allow_methods, "allow_methods")?,
            allow_headers: list(&c.allow_headers, "allow_headers")?,
            expose_headers: list(&c.expose_headers, "expose_headers")?,
            max_age,
            allow_credentials: c.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights: c.unmatched_preflights != "IGNORE",
        }))
    }

    /// The max age, if the policy sets one.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
            .as_ref()
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs)
    }

    /// Whether `origin` is allowed. A matcher that matches the literal
    /// `*` (Istio's `exact: "*"`) allows every origin, as in Envoy.
    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.allow_origins
            .iter()
            .any(|m| m.matches(b"*") || m.matches(origin))
    }

    /// The request's non-empty `Origin`, if the policy allows it.
    fn allowed_origin<'h>(&self, req_headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        req_headers
            .get(header::ORIGIN)
            .filter(|o| !o.is_empty() && self.origin_allowed(o.as_bytes()))
    }

    /// Classifies a request and, for an allowed preflight, builds the
    /// answer's headers.
    pub fn preflight(&self, req_headers: &HeaderMap, method: &Method) -> Preflight {
        let Some(origin) = req_headers.get(header::ORIGIN).filter(|o| !o.is_empty()) else {
            return Preflight::NotPreflight;
        };
        if *method != Method::OPTIONS {
            return Preflight::NotPreflight;
        }
        let Some(request_method) = req_headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty())
        else {
            return Preflight::NotPreflight;
        };
        let allowed = self.origin_allowed(origin.as_bytes());
        if !allowed && self.forward_unmatched_preflights {
            return Preflight::Forward;
        }
        let mut out = HeaderMap::with_capacity(5);
        if allowed {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // Envoy echoes the request's asks for a policy of `*`.
        if let Some(methods) = &self.allow_methods {
            let value = if methods == "*" {
                request_method
            } else {
                methods
            };
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value.clone());
        }
        if let Some(headers) = &self.allow_headers {
            let value = if headers == "*" {
                req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            } else {
                Some(headers)
            };
            if let Some(v) = value {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        Preflight::Respond(out)
    }

    /// Adds CORS headers to the response of a (non-preflight) request whose
    /// origin the policy allows; leaves any other response alone.
    pub fn decorate(&self, req_headers: &HeaderMap, resp_headers: &mut HeaderMap) {
        let Some(origin) = self.allowed_origin(req_headers) else {
            return;
        };
        resp_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            resp_headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            resp_headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::route::string_match::MatchType;

    fn origin(t: MatchType) -> pb::StringMatch {
        pb::StringMatch {
            match_type: Some(t),
        }
    }

    fn policy(origins: Vec<pb::StringMatch>) -> pb::CorsPolicy {
        pb::CorsPolicy {
            allow_origins: origins,
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-exposed".into()],
            max_age: Some(prost_types::Duration {
                seconds: 86400,
                nanos: 500,
            }),
            allow_credentials: Some(true),
            unmatched_preflights: String::new(),
        }
    }

    fn compile(p: pb::CorsPolicy) -> CorsPolicy {
        CorsPolicy::compile(Some(&p), "r").unwrap().unwrap()
    }

    fn request(origin: Option<&str>, acrm: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        if let Some(m) = acrm {
            h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, m.parse().unwrap());
        }
        h
    }

    #[test]
    fn allowed_preflight_is_answered() {
        let p = compile(policy(vec![origin(MatchType::Exact(
            "https://a.example".into(),
        ))]));
        let Preflight::Respond(h) = p.preflight(
            &request(Some("https://a.example"), Some("PUT")),
            &Method::OPTIONS,
        ) else {
            panic!("not answered");
        };
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-allow-headers"], "x-a,x-b");
        assert_eq!(h["access-control-max-age"], "86400");
        assert!(h.get("access-control-expose-headers").is_none());
        assert_eq!(p.max_age(), Some(Duration::from_secs(86400)));
    }

    #[test]
    fn what_is_not_a_preflight() {
        let p = compile(policy(vec![origin(MatchType::Prefix("https://".into()))]));
        let o = Some("https://a.example");
        assert_eq!(
            p.preflight(&request(o, Some("PUT")), &Method::GET),
            Preflight::NotPreflight
        );
        assert_eq!(
            p.preflight(&request(o, None), &Method::OPTIONS),
            Preflight::NotPreflight
        );
        assert_eq!(
            p.preflight(&request(o, Some("")), &Method::OPTIONS),
            Preflight::NotPreflight
        );
        assert_eq!(
            p.preflight(&request(None, Some("PUT")), &Method::OPTIONS),
            Preflight::NotPreflight
        );
        assert_eq!(
            p.preflight(&request(Some(""), Some("PUT")), &Method::OPTIONS),
            Preflight::NotPreflight
        );
    }

    #[test]
    fn unmatched_preflights() {
        let mut pb = policy(vec![origin(MatchType::Regex(
            r"https://.*\.example".into(),
        ))]);
        let req = request(Some("https://evil.test"), Some("PUT"));
        let p = compile(pb.clone());
        assert_eq!(p.preflight(&req, &Method::OPTIONS), Preflight::Forward);
        pb.unmatched_preflights = "FORWARD".into();
        assert_eq!(
            compile(pb.clone()).preflight(&req, &Method::OPTIONS),
            Preflight::Forward
        );
        pb.unmatched_preflights = "IGNORE".into();
        let p = compile(pb);
        // Answered, without the origin: the policy's other headers.
        let Preflight::Respond(h) = p.preflight(&req, &Method::OPTIONS) else {
            panic!("IGNORE answers an unmatched preflight");
        };
        assert!(
            !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{h:?}"
        );
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(),
            "GET,POST"
        );
        let ok = request(Some("https://a.example"), Some("PUT"));
        assert!(matches!(
            p.preflight(&ok, &Method::OPTIONS),
            Preflight::Respond(_)
        ));
    }

    #[test]
    fn star_allows_any_origin() {
        let p = compile(policy(vec![origin(MatchType::Exact("*".into()))]));
        assert!(p.origin_allowed(b"https://anything.test"));
        let Preflight::Respond(h) = p.preflight(
            &request(Some("https://anything.test"), Some("GET")),
            &Method::OPTIONS,
        ) else {
            panic!("not answered");
        };
        // The origin itself is echoed, not "*".
        assert_eq!(h["access-control-allow-origin"], "https://anything.test");
    }

    #[test]
    fn star_methods_and_headers_echo_the_request() {
        let mut pb = policy(vec![origin(MatchType::Exact("*".into()))]);
        pb.allow_methods = vec!["*".into()];
        pb.allow_headers = vec!["*".into()];
        let p = compile(pb);
        let mut req = request(Some("https://a"), Some("DELETE"));
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "x-y".parse().unwrap(),
        );
        let Preflight::Respond(h) = p.preflight(&req, &Method::OPTIONS) else {
            panic!("not answered");
        };
        assert_eq!(h["access-control-allow-methods"], "DELETE");
        assert_eq!(h["access-control-allow-headers"], "x-y");
    }

    #[test]
    fn decorate_allowed_only() {
        let p = compile(policy(vec![origin(MatchType::Exact("https://a".into()))]));
        let mut resp = HeaderMap::new();
        p.decorate(&request(Some("https://a"), None), &mut resp);
        assert_eq!(resp["access-control-allow-origin"], "https://a");
        assert_eq!(resp["access-control-allow-credentials"], "true");
        assert_eq!(resp["access-control-expose-headers"], "x-exposed");
        assert!(resp.get("access-control-allow-methods").is_none());
        let mut resp = HeaderMap::new();
        p.decorate(&request(Some("https://b"), None), &mut resp);
        assert!(resp.is_empty());
        p.decorate(&request(None, None), &mut resp);
        assert!(resp.is_empty());
    }

    #[test]
    fn minimal_policy() {
        let p = compile(pb::CorsPolicy {
            allow_origins: vec![
                origin(MatchType::Exact("https://a".into())),
                pb::StringMatch { match_type: None },
            ],
            ..Default::default()
        });
        let Preflight::Respond(h) =
            p.preflight(&request(Some("https://a"), Some("GET")), &Method::OPTIONS)
        else {
            panic!("not answered");
        };
        assert_eq!(h.len(), 1);
        let mut resp = HeaderMap::new();
        p.decorate(&request(Some("https://a"), None), &mut resp);
        assert_eq!(resp.len(), 1);
        // No origins: nothing is allowed.
        let none = compile(pb::CorsPolicy::default());
        assert!(!none.origin_allowed(b"https://a"));
    }

    #[test]
    fn bad_origin_regex() {
        let err = CorsPolicy::compile(
            Some(&policy(vec![origin(MatchType::Regex("(".into()))])),
            "route 1 of ns/vs",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "route 1 of ns/vs: cors_policy.allow_origins[0].regex: regex parse error"
            ),
            "{err}"
        );
    }
}
