//! Counters the proxy keeps; served as JSON by the admin API (`/stats`)
//! until the telemetry work exposes them to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was refused; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A DENY policy matched (PeerAuthentication STRICT included).
    PolicyDeny,
    /// ALLOW policies applied and none matched.
    NoAllowMatch,
    /// The peer's TLS handshake failed (no, expired or untrusted certificate).
    TlsHandshake,
    /// The peer's certificate is from another trust domain.
    ForeignTrustDomain,
    /// The peer's identity is not the one of the workload at its address.
    IdentityMismatch,
    /// CONNECT to an address this pod does not have, or not a CONNECT.
    BadTarget,
    /// Outbound: no original destination recorded, or a service without
    /// endpoints.
    NoDestination,
}

impl Denial {
    const ALL: [Denial; 7] = [
        Denial::PolicyDeny,
        Denial::NoAllowMatch,
        Denial::TlsHandshake,
        Denial::ForeignTrustDomain,
        Denial::IdentityMismatch,
        Denial::BadTarget,
        Denial::NoDestination,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Denial::PolicyDeny => "policy_deny",
            Denial::NoAllowMatch => "no_allow_match",
            Denial::TlsHandshake => "tls_handshake",
            Denial::ForeignTrustDomain => "foreign_trust_domain",
            Denial::IdentityMismatch => "identity_mismatch",
            Denial::BadTarget => "bad_target",
            Denial::NoDestination => "no_destination",
        }
    }
}

/// What became of a request at an HTTP port's authorization; one counter
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Passed authentication and authorization.
    Allowed,
    /// A DENY policy matched, or ALLOW policies applied and none did (403).
    Denied,
    /// It carried an invalid JWT (401).
    Unauthenticated,
    /// Its path cannot be normalised safely (400).
    BadPath,
}

impl RequestVerdict {
    const ALL: [RequestVerdict; 4] = [
        RequestVerdict::Allowed,
        RequestVerdict::Denied,
        RequestVerdict::Unauthenticated,
        RequestVerdict::BadPath,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestVerdict::Allowed => "allowed",
            RequestVerdict::Denied => "denied",
            RequestVerdict::Unauthenticated => "unauthenticated",
            RequestVerdict::BadPath => "bad_path",
        }
    }
}

/// The agent's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    denials: [AtomicU64; 7],
    /// Requests at HTTP ports' authorization, by [`RequestVerdict`].
    requests: [AtomicU64; 4],
    /// Connections being proxied now (all directions).
    active: AtomicU64,
    /// Malformed HTTP requests from apps, answered by the proxy and not
    /// forwarded.
    bad_requests: AtomicU64,
}

/// Counts one proxied connection while it lives.
pub struct ActiveConnection<'a>(&'a Metrics);

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Marks a connection as being proxied until the guard drops.
    pub fn track(&self) -> ActiveConnection<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection(self)
    }

    pub fn active_connections(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn deny(&self, reason: Denial) {
        self.denials[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn denials(&self, reason: Denial) -> u64 {
        self.denials[reason as usize].load(Ordering::Relaxed)
    }

    /// One request's authorization outcome.
    pub fn request(&self, verdict: RequestVerdict) {
        self.requests[verdict as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self, verdict: RequestVerdict) -> u64 {
        self.requests[verdict as usize].load(Ordering::Relaxed)
    }

    /// An app sent a malformed HTTP request.
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_requests(&self) -> u64 {
        self.bad_requests.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let denied: serde_json::Map<String, serde_json::Value> = Denial::ALL
            .iter()
            .map(|d| (d.name().to_string(), self.denials(*d).into()))
            .collect();
        let requests: serde_json::Map<String, serde_json::Value> = RequestVerdict::ALL
            .iter()
            .map(|v| (v.name().to_string(), self.requests(*v).into()))
            .collect();
        serde_json::json!({
            "connections_denied": denied,
            "http_requests_authorized": requests,
            "connections_active": self.active_connections(),
            "http_bad_requests": self.bad_requests(),
        })
    }
}
