//! A VirtualService's header values with command operators
//! (`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(x-user)%`), rendered
//! from the client side's record of the request: Envoy's header
//! formatters read the request's stream info, as its access log does.
//!
//! A request's edits are rendered when it is routed, before an upstream
//! is chosen: the route, the cluster and the request are known, the
//! upstream and the response are not (their operators add nothing). A
//! response's are rendered when it has come back: its status, its flags
//! and the endpoint that answered, with the request as it went upstream.

use http::{HeaderMap, StatusCode};

use super::Record;
use crate::{
    access_log::{Headers, format::Format},
    l7::route::Formatting,
};

/// What one request's (or its response's) header values are rendered
/// from.
pub struct HeaderFormatting<'a> {
    record: &'a Record,
    /// For a response's edits: its status, and the request's headers as
    /// they went upstream.
    response: Option<(StatusCode, &'a HeaderMap)>,
    /// `%RESPONSE_CODE_DETAILS%` of an answer of the proxy's own.
    details: Option<&'a str>,
}

impl Record {
    /// For the request's edits (the headers edited are the request's).
    pub fn request_formatting(&self) -> HeaderFormatting<'_> {
        HeaderFormatting {
            record: self,
            response: None,
            details: None,
        }
    }

    /// For the response's edits: its `status`, and `request`, the
    /// request's headers as they went upstream.
    pub fn response_formatting<'a>(
        &'a self,
        status: StatusCode,
        request: &'a HeaderMap,
    ) -> HeaderFormatting<'a> {
        HeaderFormatting {
            record: self,
            response: Some((status, request)),
            details: None,
        }
    }
}

impl<'a> HeaderFormatting<'a> {
    /// An answer of the proxy's own, with its `%RESPONSE_CODE_DETAILS%`
    /// (Envoy sets them before the route's edits apply).
    pub fn answered_here(mut self, details: &'a str) -> HeaderFormatting<'a> {
        self.details = Some(details);
        self
    }
}

impl Formatting for HeaderFormatting<'_> {
    fn render(&self, format: &Format, headers: &HeaderMap) -> Vec<u8> {
        let r = self.record;
        let (request, response, status) = match self.response {
            None => (headers, None, 0),
            Some((status, request)) => (request, Some(headers), status.as_u16()),
        };
        let request = Headers::capture(request, format.request_headers(), &[]);
        let response = response.map(|map| Headers::capture(map, format.response_headers(), &[]));
        let mut e = r.entry(
            r.started.elapsed(),
            &request,
            response.as_ref(),
            status,
            None,
        );
        if self.response.is_some() {
            r.answered(&mut e, r.upstream_workload.as_ref());
            e.details = self.details.or(e.details);
        } else {
            // A fault's delay is flagged before the route's edits (Envoy's
            // fault filter runs before its router), and the attempt
            // counted before the request's edits are rendered.
            e.flags = r.flags;
            e.attempts = r.attempts.max(1);
        }
        let mut out = Vec::new();
        format.render_header(&e, &mut out);
        out
    }
}
