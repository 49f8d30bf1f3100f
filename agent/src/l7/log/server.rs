//! The server side's record of a request ([`ServerRecord`]): its
//! access-log line and span, at the destination's agent.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{Request, Response};

use super::{Ending, RequestLine, protocol};
use crate::{
    access_log::{self, Decision, Entry, Headers, Http, Side},
    l7::{
        body::Body,
        reply::{Flag, Flags, Replied},
    },
    proxy::ProxyContext,
    trace::{ActiveSpan, End},
};

/// The server side's access-log line of one request, at the destination's
/// agent (`l7/inbound.rs`): started when the request arrives, written when
/// its response has been sent.
pub struct ServerRecord {
    /// `None`: the server side of this pod does not log.
    decision: Option<Decision>,
    /// `None`: its tracing is off.
    span: Option<ActiveSpan>,
    /// `<service host>:<port>/*`, for the span.
    operation: String,
    started: Instant,
    start_time: SystemTime,
    line: RequestLine,
    /// The headers the line prints or its filter reads.
    headers: Headers,
    response_headers: Headers,
    status: u16,
    grpc_status: Option<u32>,
    flags: Flags,
    /// `%RESPONSE_CODE_DETAILS%` of a local reply that its flags do not
    /// name.
    details: Option<Cow<'static, str>>,
    /// `None`: the request had no body (set by the caller, see
    /// `l7/inbound.rs` `handle`).
    pub request_body: Option<Arc<crate::l7::body::RequestBody>>,
    /// The connection: its client, the pod and port it asked for.
    inbound: Arc<crate::l7::inbound::Inbound>,
    /// The agent answered itself (a denial): no upstream was asked, and
    /// `%UPSTREAM_HOST%` is `-`, as in Envoy.
    local_reply: bool,
    /// When the app's response head came, after `started`
    /// (`%RESPONSE_DURATION%`; read only for a request that is logged).
    responded_after: Option<std::time::Duration>,
    /// The app connection's local address.
    upstream_local: Option<std::net::SocketAddr>,
    /// Attempts to the app (0: the agent answered itself).
    attempts: u32,
}

impl ServerRecord {
    /// Starts the server side's span, written into the request as the
    /// app's parent. `None` when the server side of this pod neither
    /// logs nor traces. `started` is when the request arrived (the
    /// caller's clock read, shared with the metrics). Boxed: it is held
    /// across the request and then moved into the response's body, and a
    /// few hundred bytes copied at each move cost more than the box.
    pub fn start<B>(
        request: &mut Request<B>,
        started: Instant,
        inbound: &Arc<crate::l7::inbound::Inbound>,
        ctx: &ProxyContext,
    ) -> Option<Box<ServerRecord>> {
        let workload = &inbound.pod.workload;
        let decision =
            access_log::global().decide(&workload.namespace, &workload.uid, Side::Server);
        // The span reports the workload as it is now: its services may be
        // newer than the pod's enrolment.
        let span = ctx
            .tracer
            .server(workload, || inbound.pod.current(ctx), request.headers_mut());
        if decision.is_none() && span.is_none() {
            return None;
        }
        let operation = match &span {
            Some(span) => match crate::trace::served_as(span.workload(), inbound.target.port()) {
                Some(service) => format!("{service}/*"),
                None => format!("{}/*", RequestLine::of(request).authority()),
            },
            None => String::new(),
        };
        let headers = decision
            .as_ref()
            .map(|d| d.request_headers(request.headers()))
            .unwrap_or_default();
        Some(Box::new(ServerRecord {
            decision,
            span,
            operation,
            started,
            start_time: SystemTime::now(),
            line: RequestLine::of(request),
            headers,
            response_headers: Headers::default(),
            status: 0,
            grpc_status: None,
            flags: Flags::default(),
            details: None,
            request_body: None,
            inbound: inbound.clone(),
            local_reply: false,
            responded_after: None,
            upstream_local: None,
            attempts: 0,
        }))
    }

    /// The response is ready: its status, flags and headers are kept for
    /// the line, written when its body has been sent (see [`on_end`]).
    pub fn responded(
        &mut self,
        response: &Response<Body>,
        upstream: &crate::l7::inbound::Upstream,
    ) {
        if let Some(replied) = response.extensions().get::<Replied>() {
            self.flags = replied.flags;
            self.details.clone_from(&replied.details);
            self.local_reply = true;
        }
        if upstream.retry_limit_exceeded {
            self.flags.set(crate::l7::reply::Flag::RetryLimitExceeded);
        }
        self.attempts = upstream.attempts;
        self.status = response.status().as_u16();
        self.grpc_status = crate::l7::reply::grpc_status(response.headers());
        if let Some(decision) = &self.decision {
            self.response_headers = decision.response_headers(response.headers());
            if !self.local_reply {
                self.responded_after = Some(self.started.elapsed());
                self.upstream_local = upstream.local;
            }
        }
    }
}

impl ServerRecord {
    fn request_bytes(&self) -> u64 {
        self.request_body
            .as_deref()
            .map_or(0, crate::l7::body::RequestBody::bytes)
    }
}

impl Ending for ServerRecord {
    fn grpc_status(&mut self, status: u32) {
        self.grpc_status = Some(status);
    }

    fn flag(&mut self, flag: Flag) {
        self.flags.set(flag);
    }

    fn end(mut self, bytes_sent: u64) {
        let trace = self.span.as_ref().map(ActiveSpan::ids);
        if let Some(span) = self.span.take() {
            span.finish(End {
                operation: std::mem::take(&mut self.operation),
                method: self.line.method.as_str(),
                url: format!("http://{}{}", self.line.authority(), self.line.path()),
                protocol: protocol(self.line.version),
                status: self.status,
                grpc_status: self.grpc_status,
                flags: self.flags.to_string(),
                request_size: self.request_bytes(),
                response_size: bytes_sent,
                upstream_cluster: self.inbound.cluster(),
                peer: Some(self.inbound.peer),
            });
        }
        let Some(decision) = &self.decision else {
            return;
        };
        let mut e = Entry::new(self.start_time, self.started.elapsed());
        e.response_duration = self.responded_after;
        e.http = Some(Http {
            method: self.line.method.as_str(),
            path: self.line.path(),
            authority: self.line.authority(),
            headers: Some(&self.headers),
            response_headers: Some(&self.response_headers),
            status: self.status,
            grpc_status: self.grpc_status,
        });
        e.protocol = protocol(self.line.version);
        e.flags = self.flags;
        e.details = self.details.as_deref();
        e.bytes_received = self.request_bytes();
        e.request_duration = super::request_duration(self.request_body.as_deref());
        e.bytes_sent = bytes_sent;
        let inbound = &self.inbound;
        // The app, at the address the client asked for.
        e.upstream_host = (!self.local_reply).then_some(inbound.target);
        e.upstream_local = self.upstream_local;
        e.attempts = self.attempts;
        e.upstream_cluster = inbound.cluster();
        e.downstream_local = Some(inbound.target);
        e.downstream_remote = Some(inbound.peer);
        e.peer_identity = inbound.client.as_deref();
        e.local_identity = Some(&inbound.pod.workload.identity);
        e.sni = inbound.sni.as_deref().unwrap_or_default();
        e.mtls = inbound.client.is_some();
        e.downstream_tls = inbound.tls;
        e.trace = trace;
        access_log::global().write(decision, &e);
    }
}
