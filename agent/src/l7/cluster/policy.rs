//! `weft.route.v1.DestinationPolicy` → [`EffectivePolicy`]: which entry
//! applies to a client, which traffic policy (the subset's or the
//! entry's), and port-level overrides, with Istio's defaults filled in
//! for everything unset.
//!
//! Everything is validated once, in [`Policies::compile`] (see
//! `compile.rs`); the per-request [`Policies::effective`] only picks and
//! caches.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use http::HeaderName;
use weft_proto::route as pb;

use super::compile::{Cx, Traffic, compile_traffic};

/// Istio's default load balancer ring size (`minimumRingSize`).
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's largest ring (`maximum_ring_size` default); a larger minimum is
/// refused.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Envoy's largest Maglev table.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;
/// "No limit" as Istio configures Envoy's circuit breakers.
pub const UNLIMITED: u32 = u32::MAX;
/// Envoy's default HTTP/2 `max_concurrent_streams`.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = (1 << 31) - 1;

/// A DestinationPolicy that cannot be applied. Each names the policy (its
/// `name`), the namespace of the entry and the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A consistent-hash header name that is not a valid HTTP header name.
    #[error(
        "DestinationPolicy {policy}, entry of namespace {namespace}: {field}: {value:?} is not a valid HTTP header name"
    )]
    HeaderName {
        /// The DestinationPolicy's `name`.
        policy: String,
        /// The namespace of the entry (`ScopedPolicy`).
        namespace: String,
        /// Where, from the entry: `traffic_policy.load_balancer...`.
        field: String,
        /// The refused name.
        value: String,
    },
    /// A Maglev table size that is not prime (Maglev needs a prime).
    #[error(
        "DestinationPolicy {policy}, entry of namespace {namespace}: {field}: Maglev table size {size} is not prime"
    )]
    NotPrime {
        /// The DestinationPolicy's `name`.
        policy: String,
        /// The namespace of the entry.
        namespace: String,
        /// Where, from the entry.
        field: String,
        /// The refused size.
        size: u64,
    },
    /// Any other value out of its range.
    #[error("DestinationPolicy {policy}, entry of namespace {namespace}: {field}: {reason}")]
    Invalid {
        /// The DestinationPolicy's `name`.
        policy: String,
        /// The namespace of the entry.
        namespace: String,
        /// Where, from the entry.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How to pick among a destination's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power of two choices on active requests (Istio's default; also
    /// what `LEAST_CONN` means).
    LeastRequest,
    /// Weighted random.
    Random,
    /// Send to the address the client connected to: the caller routes it
    /// itself ([`Cluster::pick`](super::Cluster::pick) treats it as
    /// [`LbPolicy::Random`]).
    Passthrough,
    /// The same hash goes to the same endpoint.
    ConsistentHash {
        /// What is hashed.
        key: HashKey,
        /// How hashes map to endpoints.
        algorithm: HashAlgorithm,
    },
}

/// What a consistent-hash policy hashes (see
/// [`request_hash`](super::request_hash)).
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value; with a TTL, one is generated when absent.
    Cookie {
        /// The cookie's name.
        name: String,
        /// The generated cookie's `Path` (none if empty).
        path: String,
        /// The generated cookie's lifetime (zero: a session cookie);
        /// `None`: no cookie is generated.
        ttl: Option<Duration>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// How hashes map to endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum HashAlgorithm {
    /// Ketama-style ring.
    RingHash {
        /// The ring has at least this many points (default 1024).
        minimum_ring_size: u64,
    },
    /// Google's Maglev lookup table.
    Maglev {
        /// Entries in the table, a prime (default 65537).
        table_size: u64,
    },
}

/// Connection-pool settings: Envoy's circuit breakers and HTTP protocol
/// options, with Istio's defaults for what is unset.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLimits {
    /// Open upstream connections (`tcp.maxConnections`).
    pub max_connections: u32,
    /// `tcp.connectTimeout`; `None`: the agent's `--connect-timeout`,
    /// as Istio falls back to the mesh config's `connectTimeout` (10 s).
    pub connect_timeout: Option<Duration>,
    /// Requests waiting for a connection (`http.http1MaxPendingRequests`).
    pub max_pending_requests: u32,
    /// Active requests (`http.http2MaxRequests`).
    pub max_requests: u32,
    /// Requests per upstream connection; 0: unlimited.
    pub max_requests_per_connection: u32,
    /// Active retries (`http.maxRetries`).
    pub max_retries: u32,
    /// Idle upstream HTTP connections close after this (`http.idleTimeout`,
    /// else `tcp.idleTimeout`); Envoy's default 1 h.
    pub idle_timeout: Duration,
    /// HTTP/2 streams per upstream connection; Envoy's default 2^31 - 1.
    pub max_concurrent_streams: u32,
    /// Upstream connections close after this long (`tcp.maxConnectionDuration`).
    pub max_connection_duration: Option<Duration>,
    /// `tcp.idleTimeout` as written (TCP proxying).
    pub tcp_idle_timeout: Option<Duration>,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: UNLIMITED,
            connect_timeout: None,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_requests_per_connection: 0,
            max_retries: UNLIMITED,
            idle_timeout: Duration::from_secs(3600),
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connection_duration: None,
            tcp_idle_timeout: None,
        }
    }
}

/// Outlier detection (Envoy's consecutive-error detectors, as Istio
/// configures them; success-rate detection is off, as Istio sets it).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// 5xx responses (and local-origin failures unless split) in a row
    /// that eject; `None`: disabled (set to 0). Unset: 5.
    pub consecutive_5xx: Option<u32>,
    /// 502/503/504 responses (and local-origin failures unless split) in
    /// a row that eject; `None`: disabled (unset or 0).
    pub consecutive_gateway: Option<u32>,
    /// Local-origin failures in a row that eject, only when
    /// `split_local_origin`; Envoy's default 5 when unset.
    pub consecutive_local_origin: Option<u32>,
    /// Count local-origin failures apart from responses.
    pub split_local_origin: bool,
    /// Decay period of the ejection multiplier; default 10 s.
    pub interval: Duration,
    /// First ejection's length; default 30 s.
    pub base_ejection_time: Duration,
    /// Longest ejection: Envoy's default, max(300 s, base).
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent; default 10.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored
    /// (Envoy's panic threshold); default 0: never.
    pub min_health_percent: u32,
}

/// How Istio says to talk TLS to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No `tls` set: the mesh default (HBONE mTLS to mesh workloads).
    MeshDefault,
    /// `DISABLE`: plaintext.
    Disable,
    /// `SIMPLE`: TLS origination.
    Simple,
    /// `MUTUAL`: TLS origination with a client certificate.
    Mutual,
    /// `ISTIO_MUTUAL`: the mesh's own mTLS.
    IstioMutual,
}

/// TLS origination settings (modes `SIMPLE` and `MUTUAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOrigination {
    /// `MUTUAL` (a client certificate is presented).
    pub mutual: bool,
    /// Client certificate file on the proxy (`MUTUAL` without
    /// `credential_name`).
    pub client_certificate: String,
    /// Its private key file.
    pub private_key: String,
    /// CA certificates file to verify the server with.
    pub ca_certificates: String,
    /// A Secret in the rule's namespace with certificate, key and CA.
    pub credential_name: String,
    /// Names the server certificate must carry (any of them).
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    pub sni: String,
    /// Skip verifying the server's certificate.
    pub insecure_skip_verify: bool,
}

/// Whether to speak HTTP/2 to the destination (`h2UpgradePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Upgrade {
    /// The mesh's setting.
    Default,
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// What applies to one request's destination once the DestinationRules
/// are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// The load balancer; Istio's default is least request.
    pub lb: LbPolicy,
    /// Connection-pool settings and circuit-breaker limits.
    pub limits: PoolLimits,
    /// `None` when no outlier detection is set.
    pub outlier: Option<OutlierConfig>,
    /// Set for `SIMPLE` and `MUTUAL` only.
    pub tls: Option<TlsOrigination>,
    /// The TLS mode as written (`MeshDefault` when unset).
    pub tls_mode: TlsMode,
    /// HTTP/2 upgrade (see [`EffectivePolicy::upgrades_h2`]).
    pub h2_upgrade: H2Upgrade,
    /// Speak the client's protocol upstream.
    pub use_client_protocol: bool,
}

impl EffectivePolicy {
    /// Whether this is [`EffectivePolicy::defaults`].
    pub fn is_default(&self) -> bool {
        *self == EffectivePolicy::defaults()
    }

    /// What applies when no DestinationRule does.
    pub fn defaults() -> EffectivePolicy {
        EffectivePolicy {
            lb: LbPolicy::LeastRequest,
            limits: PoolLimits::default(),
            outlier: None,
            tls: None,
            tls_mode: TlsMode::MeshDefault,
            h2_upgrade: H2Upgrade::Default,
            use_client_protocol: false,
        }
    }

    /// Whether requests go upstream as HTTP/2, given the mesh's
    /// `h2UpgradePolicy` (Istio's rule: `useClientProtocol` wins, then the
    /// rule's policy, then the mesh's).
    pub fn upgrades_h2(&self, mesh_upgrades: bool) -> bool {
        if self.use_client_protocol {
            return false;
        }
        match self.h2_upgrade {
            H2Upgrade::Upgrade => true,
            H2Upgrade::DoNotUpgrade => false,
            H2Upgrade::Default => mesh_upgrades,
        }
    }
}

/// One service's DestinationPolicy, compiled.
#[derive(Debug)]
pub struct Policies {
    entries: Vec<Entry>,
    defaults: Arc<EffectivePolicy>,
    /// Keyed by what was chosen, so it is bounded by the policy's size,
    /// not by the number of client namespaces or ports asked about.
    cache: RwLock<HashMap<Choice, Arc<EffectivePolicy>>>,
}

/// What a DestinationRule sets on Envoy's TCP proxy, for a connection to
/// a service's TCP port ([`Policies::tcp_proxy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpProxySettings {
    /// `connectionPool.tcp.idleTimeout`.
    pub idle: Option<Duration>,
    /// `connectionPool.tcp.maxConnectionDuration`.
    pub max_duration: Option<Duration>,
    /// `consistentHash.useSourceIp`: the connection hashes its source
    /// address (with another key, a hashing balancer has nothing to hash).
    pub hash_source_ip: bool,
}

/// (entry, subset, port-level setting) indices.
type Choice = (usize, Option<usize>, Option<usize>);

#[derive(Debug)]
struct Entry {
    namespace: String,
    export_to: Vec<String>,
    /// The host the rules were written for, and the rules merged here
    /// (`ns/name`, oldest first): for the admin API.
    host: String,
    rules: Vec<String>,
    traffic: Option<Traffic>,
    subsets: Vec<(String, Option<Traffic>)>,
}

impl Policies {
    /// Validates and compiles every entry, subset and port-level setting.
    pub fn compile(p: &pb::DestinationPolicy) -> Result<Policies, PolicyError> {
        let mut entries = Vec::with_capacity(p.policies.len());
        for scoped in &p.policies {
            let cx = Cx {
                policy: &p.name,
                namespace: &scoped.namespace,
            };
            let traffic = scoped
                .traffic_policy
                .as_ref()
                .map(|t| compile_traffic(&cx, "traffic_policy", t))
                .transpose()?;
            let mut subsets = Vec::with_capacity(scoped.subsets.len());
            for s in &scoped.subsets {
                let at = format!("subsets[{}].traffic_policy", s.name);
                let t = s
                    .traffic_policy
                    .as_ref()
                    .map(|t| compile_traffic(&cx, &at, t))
                    .transpose()?;
                subsets.push((s.name.clone(), t));
            }
            entries.push(Entry {
                namespace: scoped.namespace.clone(),
                export_to: scoped.export_to.clone(),
                host: scoped.host.clone(),
                rules: scoped
                    .destination_rules
                    .iter()
                    .map(|r| format!("{}/{}", r.namespace, r.name))
                    .collect(),
                traffic,
                subsets,
            });
        }
        Ok(Policies {
            entries,
            defaults: Arc::new(EffectivePolicy::defaults()),
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The entry for a client namespace: the one of that namespace, else
    /// the first visible to it (entries come in Istio's lookup order).
    fn entry(&self, client_ns: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.namespace == client_ns)
            .or_else(|| {
                self.entries.iter().position(|e| {
                    e.export_to.is_empty() || e.export_to.iter().any(|n| n == client_ns || n == "*")
                })
            })
    }

    /// The effective policy for a client in `client_ns` sending to
    /// `subset` ("" = none) on service port `port`: the entry that applies
    /// to the client, its subset's traffic policy if the subset exists and
    /// has one (else the entry's), and of that, the port-level settings
    /// for `port` when there are some (Istio's: they replace the policy
    /// whole, parts they leave unset taking Istio's defaults; weft-control
    /// has merged a subset's policy with the rule's port by port). Defaults
    /// with no entry.
    pub fn effective(&self, client_ns: &str, subset: &str, port: u16) -> Arc<EffectivePolicy> {
        match self.entry(client_ns) {
            Some(e) => self.effective_of(e, subset, port),
            None => self.defaults.clone(),
        }
    }

    /// Whether a client in some namespace gets `policy` for `subset` and
    /// `port`: through one of the entries, or the defaults (a namespace
    /// no entry is visible to). A cluster state whose policy no client
    /// gets any more is stale.
    pub fn produces(&self, subset: &str, port: u16, policy: &EffectivePolicy) -> bool {
        *self.defaults == *policy
            || (0..self.entries.len()).any(|e| *self.effective_of(e, subset, port) == *policy)
    }

    /// What Envoy's TCP proxy takes from the rules for a connection from
    /// a client in `client_ns` to `subset` ("" = none), as istiod writes
    /// it: the idle timeout and the longest duration from the top-level
    /// `connectionPool.tcp` only, and the source-IP hash from the subset's
    /// load balancer, else the top level's. Port-level settings shape the
    /// cluster alone (its balancer, breakers, outlier detection).
    pub fn tcp_proxy(&self, client_ns: &str, subset: &str) -> TcpProxySettings {
        let Some(e) = self.entry(client_ns) else {
            return TcpProxySettings::default();
        };
        let top = self.policy_of(e, "", None);
        let chosen = match subset {
            "" => top.clone(),
            _ => self.policy_of(e, subset, None),
        };
        TcpProxySettings {
            idle: top.limits.tcp_idle_timeout,
            max_duration: top.limits.max_connection_duration,
            hash_source_ip: matches!(
                chosen.lb,
                LbPolicy::ConsistentHash {
                    key: HashKey::SourceIp,
                    ..
                }
            ),
        }
    }

    /// [`Policies::effective`] through entry `e`.
    fn effective_of(&self, e: usize, subset: &str, port: u16) -> Arc<EffectivePolicy> {
        self.policy_of(e, subset, Some(port))
    }

    /// The policy of entry `e` for `subset`, with the port-level settings
    /// of `port` if it has some (`None`: the policy without them).
    fn policy_of(&self, e: usize, subset: &str, port: Option<u16>) -> Arc<EffectivePolicy> {
        let entry = &self.entries[e];
        let s = if subset.is_empty() {
            None
        } else {
            entry
                .subsets
                .iter()
                .position(|(name, t)| name == subset && t.is_some())
        };
        let traffic = match s {
            Some(s) => entry.subsets[s].1.as_ref(),
            None => entry.traffic.as_ref(),
        };
        let Some(traffic) = traffic else {
            return self.defaults.clone();
        };
        let p = port.and_then(|port| {
            traffic
                .ports
                .iter()
                .position(|(p, _)| *p == u32::from(port))
        });
        let key = (e, s, p);
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return hit.clone();
        }
        // A port's own settings replace the policy's whole: what they
        // leave unset is Istio's default, not inherited.
        let parts = match p {
            Some(p) => traffic.ports[p].1.clone(),
            None => traffic.parts.clone(),
        };
        let policy = Arc::new(parts.effective());
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(policy)
            .clone()
    }

    /// Whether `subset` is defined by the entry that applies to `client_ns`.
    pub fn has_subset(&self, client_ns: &str, subset: &str) -> bool {
        self.entry(client_ns)
            .is_some_and(|e| self.entries[e].subsets.iter().any(|(n, _)| n == subset))
    }
}

// === impl dump (the admin API's config dump) ===

impl Policies {
    /// Every entry as compiled: its namespace, host, rules, `export_to`,
    /// its policy and each subset's, with Istio's defaults filled in.
    pub fn dump(&self) -> serde_json::Value {
        let traffic = |t: Option<&Traffic>| match t {
            None => serde_json::Value::Null,
            Some(t) => {
                let ports: serde_json::Map<String, serde_json::Value> = t
                    .ports
                    .iter()
                    .map(|(port, own)| (port.to_string(), own.clone().effective().dump()))
                    .collect();
                serde_json::json!({
                    "policy": t.parts.clone().effective().dump(),
                    "port_level_settings": ports,
                })
            }
        };
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "namespace": e.namespace,
                    "host": e.host,
                    "destination_rules": e.rules,
                    "export_to": e.export_to,
                    "traffic_policy": traffic(e.traffic.as_ref()),
                    "subsets": e.subsets.iter().map(|(name, t)| serde_json::json!({
                        "name": name,
                        "traffic_policy": traffic(t.as_ref()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::Value::Array(entries)
    }

    /// The rules (`ns/name`) of the entry a client in `client_ns` gets,
    /// and the subsets that entry defines.
    pub fn rules_for(&self, client_ns: &str) -> (Vec<String>, Vec<String>) {
        match self.entry(client_ns) {
            Some(e) => (
                self.entries[e].rules.clone(),
                self.entries[e]
                    .subsets
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }
}

impl EffectivePolicy {
    /// The policy in Istio's words (`loadBalancer`, `connectionPool`,
    /// `outlierDetection`, `tls`), every value filled in.
    pub fn dump(&self) -> serde_json::Value {
        use crate::l7::route::duration_text as d;
        let limit = |n: u32| {
            if n == UNLIMITED {
                serde_json::Value::from("unlimited")
            } else {
                n.into()
            }
        };
        let lb = match &self.lb {
            LbPolicy::RoundRobin => serde_json::json!("ROUND_ROBIN"),
            LbPolicy::LeastRequest => serde_json::json!("LEAST_REQUEST"),
            LbPolicy::Random => serde_json::json!("RANDOM"),
            LbPolicy::Passthrough => serde_json::json!("PASSTHROUGH"),
            LbPolicy::ConsistentHash { key, algorithm } => {
                let key = match key {
                    HashKey::Header(h) => format!("header {h}"),
                    HashKey::Cookie { name, .. } => format!("cookie {name}"),
                    HashKey::SourceIp => "source IP".to_string(),
                    HashKey::QueryParameter(q) => format!("query parameter {q}"),
                };
                let algorithm = match algorithm {
                    HashAlgorithm::RingHash { minimum_ring_size } => {
                        format!("RING_HASH (minimum ring size {minimum_ring_size})")
                    }
                    HashAlgorithm::Maglev { table_size } => {
                        format!("MAGLEV (table size {table_size})")
                    }
                };
                serde_json::json!({ "consistent_hash": { "key": key, "algorithm": algorithm } })
            }
        };
        let l = &self.limits;
        let outlier = self.outlier.as_ref().map(|o| {
            serde_json::json!({
                "consecutive_5xx_errors": o.consecutive_5xx,
                "consecutive_gateway_errors": o.consecutive_gateway,
                "consecutive_local_origin_failures": o.consecutive_local_origin,
                "split_external_local_origin_errors": o.split_local_origin,
                "interval": d(o.interval),
                "base_ejection_time": d(o.base_ejection_time),
                "max_ejection_time": d(o.max_ejection_time),
                "max_ejection_percent": o.max_ejection_percent,
                "min_health_percent": o.min_health_percent,
            })
        });
        let tls_mode = match self.tls_mode {
            TlsMode::MeshDefault => "ISTIO_MUTUAL (mesh default)",
            TlsMode::Disable => "DISABLE",
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::IstioMutual => "ISTIO_MUTUAL",
        };
        serde_json::json!({
            "load_balancer": lb,
            "connection_pool": {
                "max_connections": limit(l.max_connections),
                // null: the agent's `--connect-timeout`.
                "connect_timeout": l.connect_timeout.map(d),
                "http1_max_pending_requests": limit(l.max_pending_requests),
                "http2_max_requests": limit(l.max_requests),
                "max_requests_per_connection": l.max_requests_per_connection,
                "max_retries": limit(l.max_retries),
                "idle_timeout": if l.idle_timeout == Duration::MAX {
                    "disabled".to_string()
                } else {
                    d(l.idle_timeout)
                },
                "max_connection_duration": l.max_connection_duration.map(d),
                "h2_upgrade_policy": format!("{:?}", self.h2_upgrade),
                "use_client_protocol": self.use_client_protocol,
            },
            "outlier_detection": outlier,
            "tls": {
                "mode": tls_mode,
                "sni": self.tls.as_ref().map(|t| t.sni.clone()),
                "subject_alt_names": self.tls.as_ref().map(|t| t.subject_alt_names.clone()),
            },
        })
    }
}
