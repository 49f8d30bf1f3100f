//! Istio's checks of a route's `redirect` (`validateHTTPRedirect` in
//! istio's `pkg/config/validation/validation.go`).

use super::{HttpMatchRequest, HttpRedirect};
use crate::kinds::{Invalid, invalid, istio::check_port};

impl HttpRedirect {
    /// Checks the redirect at `at` of a route matching `matches`.
    pub(super) fn check(&self, matches: &[HttpMatchRequest], at: &str, e: &mut Vec<Invalid>) {
        if self.uri.is_empty()
            && self.prefix_rewrite.is_empty()
            && self.authority.is_empty()
            && self.scheme.is_empty()
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            e.push(invalid(
                at,
                "redirects nowhere: set `uri`, `prefixRewrite`, `authority`, `scheme`, `port` \
                 or `derivePort`",
            ));
        }
        // 0 is the default, 301. Istio's validation takes any other 3xx,
        // but istiod maps only Envoy's five redirect codes and leaves a
        // route with another one without an action, which Envoy refuses
        // with the whole route table: refused here instead, by name.
        if let Some(code) = self.redirect_code
            && code != 0
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            e.push(invalid(
                format!("{at}.redirectCode"),
                format!("{code} is not a redirect status Envoy sends (301, 302, 303, 307, 308)"),
            ));
        }
        if !matches!(self.scheme.as_str(), "" | "http" | "https") {
            e.push(invalid(
                format!("{at}.scheme"),
                format!(
                    "`{}` is not a redirect scheme (`http` or `https`)",
                    self.scheme
                ),
            ));
        }
        if self.port.is_some() && self.derive_port.is_some() {
            e.push(invalid(
                at,
                "`port` and `derivePort` are mutually exclusive",
            ));
        }
        // Istio checks a port above 0 only: `port: 0` is no port.
        if let Some(p) = self.port.filter(|p| *p != 0) {
            check_port(p, &format!("{at}.port"), e);
        }
        if !self.prefix_rewrite.is_empty() {
            if !self.uri.is_empty() {
                e.push(invalid(
                    at,
                    "`uri` and `prefixRewrite` are mutually exclusive",
                ));
            }
            if matches
                .iter()
                .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
            {
                e.push(invalid(
                    format!("{at}.prefixRewrite"),
                    "needs every `uri` match of the route to be a `prefix` match",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(r: HttpRedirect) -> Vec<String> {
        let mut e = Vec::new();
        r.check(&[], "r", &mut e);
        e.into_iter().map(|i| i.to_string()).collect()
    }

    fn to(uri: &str) -> HttpRedirect {
        HttpRedirect {
            uri: uri.into(),
            ..HttpRedirect::default()
        }
    }

    #[test]
    fn codes_are_those_envoy_sends() {
        for code in [0, 301, 302, 303, 307, 308] {
            let r = HttpRedirect {
                redirect_code: Some(code),
                ..to("/a")
            };
            assert_eq!(errors(r), Vec::<String>::new(), "{code}");
        }
        for code in [200, 300, 304, 399, 400] {
            let r = HttpRedirect {
                redirect_code: Some(code),
                ..to("/a")
            };
            assert_eq!(
                errors(r),
                [format!(
                    "r.redirectCode: {code} is not a redirect status Envoy sends (301, 302, 303, \
                     307, 308)"
                )]
            );
        }
    }

    #[test]
    fn any_one_target_is_enough() {
        assert_eq!(
            errors(HttpRedirect::default()),
            [
                "r: redirects nowhere: set `uri`, `prefixRewrite`, `authority`, `scheme`, `port` \
              or `derivePort`"
            ]
        );
        let targets = [
            to("/a"),
            HttpRedirect {
                prefix_rewrite: "/a".into(),
                ..HttpRedirect::default()
            },
            HttpRedirect {
                authority: "b".into(),
                ..HttpRedirect::default()
            },
            HttpRedirect {
                scheme: "https".into(),
                ..HttpRedirect::default()
            },
            // Set, even to 0 or the protocol's default, as Istio has it.
            HttpRedirect {
                port: Some(0),
                ..HttpRedirect::default()
            },
            HttpRedirect {
                derive_port: Some(super::super::DerivePort::FromProtocolDefault),
                ..HttpRedirect::default()
            },
        ];
        for r in targets {
            assert_eq!(errors(r.clone()), Vec::<String>::new(), "{r:?}");
        }
    }

    #[test]
    fn schemes_are_http_or_https() {
        let scheme = |s: &str| HttpRedirect {
            scheme: s.into(),
            ..to("/a")
        };
        assert_eq!(errors(scheme("http")), Vec::<String>::new());
        for bad in ["ftp", "HTTPS"] {
            assert_eq!(
                errors(scheme(bad)),
                [format!(
                    "r.scheme: `{bad}` is not a redirect scheme (`http` or `https`)"
                )]
            );
        }
    }
}
