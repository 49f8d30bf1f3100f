//! A service's VirtualService routes (`weft.route.v1.RouteConfig`),
//! compiled for matching requests.

mod cors;
mod fault;
mod headers;
mod matcher;
mod retry;
mod rewrite;

pub use cors::{CorsPolicy, Preflight};
pub use fault::{Abort, Fault, roll};
pub use headers::{HeaderEdits, HeaderOps};
pub use matcher::{HttpMatch, REGEX_SIZE_LIMIT, StringMatcher};
pub use retry::{DEFAULT_BACKOFF_BASE, Outcome, RetryOn, RetryPolicy};
pub use rewrite::{DirectResponse, Redirect, RedirectPort, Rewrite};

use std::time::Duration;

use http::HeaderMap;

/// Why a `RouteConfig` cannot be used. `route` names the route ("route 2
/// of bookinfo/reviews", with its name if it has one), `field` the field
/// within it ("match[0].uri.regex").
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A regex does not compile, or compiles bigger than
    /// [`REGEX_SIZE_LIMIT`].
    #[error("{route}: {field}: {error}")]
    Regex {
        /// The route, e.g. "route 2 of bookinfo/reviews".
        route: String,
        /// The field, e.g. "match[0].uri.regex".
        field: String,
        /// What the regex crate says.
        error: regex::Error,
    },
    /// Any other value Envoy or Istio would refuse.
    #[error("{route}: {field}: {reason}")]
    Invalid {
        /// The route, e.g. "route 2 of bookinfo/reviews".
        route: String,
        /// The field, e.g. "redirect.redirect_code".
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What matching reads from a request; borrowed, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request's method.
    pub method: &'a http::Method,
    /// The path and query as received, e.g. "/api/v1?x=1".
    pub path_and_query: &'a str,
    /// The Host header or :authority as received (may include the port).
    pub authority: &'a str,
    /// "http" in the mesh.
    pub scheme: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The service port the client connected to.
    pub port: u16,
    /// The client's namespace.
    pub source_namespace: &'a str,
    /// The client's workload uid (`istio.workload.Workload.uid`).
    pub source_workload: &'a str,
}

impl<'a> RequestView<'a> {
    /// The path without query string and fragment.
    pub fn path(&self) -> &'a str {
        let end = self
            .path_and_query
            .find(['?', '#'])
            .unwrap_or(self.path_and_query.len());
        &self.path_and_query[..end]
    }

    /// The query string (after `?`, before any `#`), if the path has one.
    pub fn query(&self) -> Option<&'a str> {
        let rest = &self.path_and_query[self.path().len()..];
        let query = rest.strip_prefix('?')?;
        Some(query.split_once('#').map_or(query, |(q, _)| q))
    }
}

/// A proto duration; `None` when unset or zero (Envoy's "disabled").
pub(crate) fn duration(
    d: Option<&prost_types::Duration>,
    route: &str,
    field: &str,
) -> Result<Option<Duration>, RouteError> {
    let Some(d) = d else { return Ok(None) };
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => {
            let d = Duration::new(secs, nanos);
            Ok((!d.is_zero()).then_some(d))
        }
        _ => Err(RouteError::Invalid {
            route: route.to_string(),
            field: field.to_string(),
            reason: format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        }),
    }
}
