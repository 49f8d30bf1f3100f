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

use super::{Record, protocol};
use crate::{
    access_log::{self, Entry, Headers, Http, format::Format},
    l7::route::Formatting,
    trace::ActiveSpan,
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
        let mut e = Entry::new(r.start_time, r.started.elapsed());
        e.http = Some(Http {
            method: r.line.method.as_str(),
            path: r.line.path(),
            authority: r.line.authority(),
            headers: Some(&request),
            response_headers: response.as_ref(),
            status,
            grpc_status: None,
        });
        e.protocol = protocol(r.line.version);
        e.downstream_local = Some(r.local);
        e.downstream_remote = Some(access_log::app_address(r.src_addr, &r.telemetry.source));
        e.local_identity = Some(r.pod.identity());
        e.route = &r.route;
        e.upstream_cluster = &r.cluster;
        e.trace = r.span.as_ref().map(ActiveSpan::ids);
        // A fault's delay is flagged before the route's edits (Envoy's
        // fault filter runs before its router).
        e.flags = r.flags;
        // Envoy counts the attempt before it renders the request's edits.
        e.attempts = r.attempts.max(1);
        if self.response.is_some() {
            e.details = self.details.or(r.details.as_deref());
            e.upstream_host = r.upstream;
            e.upstream_local = r.upstream_local;
            e.upstream_workload = r.upstream_workload.as_ref();
            e.attempts = r.attempts;
            e.response_duration = r.responded_after;
            e.mtls = r.upstream_workload.as_ref().is_some_and(|w| w.hbone);
            e.upstream_tls = r.tunnelled && r.responded_after.is_some();
        }
        let mut out = Vec::new();
        format.render_header(&e, &mut out);
        out
    }
}
