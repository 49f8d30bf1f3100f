//! Validation of a DestinationPolicy's traffic policies into their
//! typed parts ([`Parts`]), each still unset where the proto leaves it
//! unset (Istio's default applies there).

use std::time::Duration;

use http::HeaderName;
use weft_proto::route::{
    self as pb,
    client_tls_settings::TlsMode as PbTlsMode,
    connection_pool_settings::http_settings::H2UpgradePolicy,
    load_balancer_settings::{
        LbPolicy as PbLbPolicy, SimpleLb,
        consistent_hash_lb::{HashAlgorithm as PbHashAlgorithm, HashKey as PbHashKey},
    },
};

use super::policy::{
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MINIMUM_RING_SIZE,
    EffectivePolicy, H2Upgrade, HashAlgorithm, HashKey, LbPolicy, MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE, OutlierConfig, PolicyError, PoolLimits, TlsMode, TlsOrigination, UNLIMITED,
};

/// A TrafficPolicy, validated.
#[derive(Debug)]
pub(super) struct Traffic {
    pub(super) parts: Parts,
    /// Port-level settings: (service port, parts).
    pub(super) ports: Vec<(u32, Parts)>,
}

/// The parts of a traffic policy; `None` where unset.
#[derive(Debug, Clone, Default)]
pub(super) struct Parts {
    lb: Option<LbPolicy>,
    pool: Option<Pool>,
    outlier: Option<OutlierConfig>,
    tls: Option<(TlsMode, Option<TlsOrigination>)>,
}

#[derive(Debug, Clone)]
struct Pool {
    limits: PoolLimits,
    h2_upgrade: H2Upgrade,
    use_client_protocol: bool,
}

impl Parts {
    /// The policy: these parts over the defaults.
    pub(super) fn effective(self) -> EffectivePolicy {
        let mut out = EffectivePolicy::defaults();
        if let Some(lb) = self.lb {
            out.lb = lb;
        }
        if let Some(pool) = self.pool {
            out.limits = pool.limits;
            out.h2_upgrade = pool.h2_upgrade;
            out.use_client_protocol = pool.use_client_protocol;
        }
        out.outlier = self.outlier;
        if let Some((mode, tls)) = self.tls {
            out.tls_mode = mode;
            out.tls = tls;
        }
        out
    }
}

/// Where a value is, for errors: the policy's name and the entry's
/// namespace.
pub(super) struct Cx<'a> {
    pub(super) policy: &'a str,
    pub(super) namespace: &'a str,
}

impl Cx<'_> {
    fn invalid(&self, field: String, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            policy: self.policy.to_string(),
            namespace: self.namespace.to_string(),
            field,
            reason: reason.into(),
        }
    }
}

pub(super) fn compile_traffic(
    cx: &Cx,
    at: &str,
    t: &pb::TrafficPolicy,
) -> Result<Traffic, PolicyError> {
    let parts = compile_parts(
        cx,
        at,
        t.load_balancer.as_ref(),
        t.connection_pool.as_ref(),
        t.outlier_detection.as_ref(),
        t.tls.as_ref(),
    )?;
    let mut ports = Vec::with_capacity(t.port_level_settings.len());
    for s in &t.port_level_settings {
        let at = format!("{at}.port_level_settings[port {}]", s.port);
        ports.push((
            s.port,
            compile_parts(
                cx,
                &at,
                s.load_balancer.as_ref(),
                s.connection_pool.as_ref(),
                s.outlier_detection.as_ref(),
                s.tls.as_ref(),
            )?,
        ));
    }
    Ok(Traffic { parts, ports })
}

fn compile_parts(
    cx: &Cx,
    at: &str,
    lb: Option<&pb::LoadBalancerSettings>,
    pool: Option<&pb::ConnectionPoolSettings>,
    outlier: Option<&pb::OutlierDetection>,
    tls: Option<&pb::ClientTlsSettings>,
) -> Result<Parts, PolicyError> {
    Ok(Parts {
        lb: lb
            .map(|lb| load_balancer(cx, &format!("{at}.load_balancer"), lb))
            .transpose()?,
        pool: pool
            .map(|p| connection_pool(cx, &format!("{at}.connection_pool"), p))
            .transpose()?,
        outlier: outlier
            .map(|o| outlier_detection(cx, &format!("{at}.outlier_detection"), o))
            .transpose()?,
        tls: tls.map(client_tls),
    })
}

fn load_balancer(
    cx: &Cx,
    at: &str,
    lb: &pb::LoadBalancerSettings,
) -> Result<LbPolicy, PolicyError> {
    let ch = match &lb.lb_policy {
        // Unknown enum values (a newer control plane) get the default too.
        None => return Ok(LbPolicy::LeastRequest),
        Some(PbLbPolicy::Simple(simple)) => {
            return Ok(match SimpleLb::try_from(*simple) {
                Ok(SimpleLb::Random) => LbPolicy::Random,
                Ok(SimpleLb::Passthrough) => LbPolicy::Passthrough,
                Ok(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
                Ok(SimpleLb::Unspecified | SimpleLb::LeastConn | SimpleLb::LeastRequest)
                | Err(_) => LbPolicy::LeastRequest,
            });
        }
        Some(PbLbPolicy::ConsistentHash(ch)) => ch,
    };
    let at = format!("{at}.consistent_hash");
    let key = match &ch.hash_key {
        Some(PbHashKey::HttpHeaderName(name)) => {
            HashKey::Header(HeaderName::try_from(name.as_str()).map_err(|_| {
                PolicyError::HeaderName {
                    policy: cx.policy.to_string(),
                    namespace: cx.namespace.to_string(),
                    field: format!("{at}.http_header_name"),
                    value: name.clone(),
                }
            })?)
        }
        Some(PbHashKey::HttpCookie(c)) => {
            let field = format!("{at}.http_cookie");
            if c.name.is_empty() || !c.name.bytes().all(is_cookie_name_byte) {
                return Err(cx.invalid(
                    format!("{field}.name"),
                    format!("{:?} is not a cookie name", c.name),
                ));
            }
            if !c
                .path
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b';')
            {
                return Err(cx.invalid(
                    format!("{field}.path"),
                    format!("{:?} cannot be a cookie path", c.path),
                ));
            }
            HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c
                    .ttl
                    .map(|d| duration(cx, &format!("{field}.ttl"), d))
                    .transpose()?,
            }
        }
        Some(PbHashKey::UseSourceIp(true)) => HashKey::SourceIp,
        Some(PbHashKey::HttpQueryParameterName(name)) => {
            if name.is_empty() {
                return Err(cx.invalid(
                    format!("{at}.http_query_parameter_name"),
                    "empty query parameter name",
                ));
            }
            HashKey::QueryParameter(name.clone())
        }
        // No key (or `useSourceIp: false`): no request ever has a hash, and
        // Envoy then picks at random.
        Some(PbHashKey::UseSourceIp(false)) | None => return Ok(LbPolicy::Random),
    };
    let algorithm = match &ch.hash_algorithm {
        Some(PbHashAlgorithm::Maglev(m)) => {
            let field = format!("{at}.maglev.table_size");
            let size = match m.table_size {
                0 => DEFAULT_MAGLEV_TABLE_SIZE,
                n if n > MAX_MAGLEV_TABLE_SIZE => {
                    return Err(
                        cx.invalid(field, format!("{n} is larger than {MAX_MAGLEV_TABLE_SIZE}"))
                    );
                }
                n if !is_prime(n) => {
                    return Err(PolicyError::NotPrime {
                        policy: cx.policy.to_string(),
                        namespace: cx.namespace.to_string(),
                        field,
                        size: n,
                    });
                }
                n => n,
            };
            HashAlgorithm::Maglev { table_size: size }
        }
        Some(PbHashAlgorithm::RingHash(r)) => HashAlgorithm::RingHash {
            minimum_ring_size: ring_size(
                cx,
                &format!("{at}.ring_hash.minimum_ring_size"),
                r.minimum_ring_size,
            )?,
        },
        // The deprecated top-level field applies only without an algorithm
        // (as Istio reads it).
        None => HashAlgorithm::RingHash {
            minimum_ring_size: ring_size(
                cx,
                &format!("{at}.minimum_ring_size"),
                ch.minimum_ring_size,
            )?,
        },
    };
    Ok(LbPolicy::ConsistentHash { key, algorithm })
}

fn ring_size(cx: &Cx, field: &str, n: u64) -> Result<u64, PolicyError> {
    match n {
        0 => Ok(DEFAULT_MINIMUM_RING_SIZE),
        n if n > MAX_RING_SIZE => Err(cx.invalid(
            field.to_string(),
            format!("{n} is larger than {MAX_RING_SIZE}"),
        )),
        n => Ok(n),
    }
}

/// RFC 6265 cookie-name (an HTTP token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Trial division: table sizes are at most [`MAX_MAGLEV_TABLE_SIZE`].
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn connection_pool(cx: &Cx, at: &str, p: &pb::ConnectionPoolSettings) -> Result<Pool, PolicyError> {
    let mut out = Pool {
        limits: PoolLimits::default(),
        h2_upgrade: H2Upgrade::Default,
        use_client_protocol: false,
    };
    let l = &mut out.limits;
    if let Some(tcp) = &p.tcp {
        let at = format!("{at}.tcp");
        l.max_connections = limit(cx, &at, "max_connections", tcp.max_connections, UNLIMITED)?;
        if let Some(d) = tcp.connect_timeout {
            l.connect_timeout = Some(duration(cx, &format!("{at}.connect_timeout"), d)?);
        }
        l.max_connection_duration = tcp
            .max_connection_duration
            .map(|d| duration(cx, &format!("{at}.max_connection_duration"), d))
            .transpose()?;
        l.tcp_idle_timeout = tcp
            .idle_timeout
            .map(|d| duration(cx, &format!("{at}.idle_timeout"), d))
            .transpose()?;
    }
    let mut http_idle = None;
    if let Some(http) = &p.http {
        let at = format!("{at}.http");
        l.max_pending_requests = limit(
            cx,
            &at,
            "http1_max_pending_requests",
            http.http1_max_pending_requests,
            UNLIMITED,
        )?;
        l.max_requests = limit(
            cx,
            &at,
            "http2_max_requests",
            http.http2_max_requests,
            UNLIMITED,
        )?;
        l.max_requests_per_connection = limit(
            cx,
            &at,
            "max_requests_per_connection",
            http.max_requests_per_connection,
            0,
        )?;
        l.max_retries = limit(cx, &at, "max_retries", http.max_retries, UNLIMITED)?;
        l.max_concurrent_streams = limit(
            cx,
            &at,
            "max_concurrent_streams",
            http.max_concurrent_streams,
            DEFAULT_MAX_CONCURRENT_STREAMS,
        )?;
        http_idle = http
            .idle_timeout
            .map(|d| duration(cx, &format!("{at}.idle_timeout"), d))
            .transpose()?;
        out.h2_upgrade = match H2UpgradePolicy::try_from(http.h2_upgrade_policy) {
            Ok(H2UpgradePolicy::DoNotUpgrade) => H2Upgrade::DoNotUpgrade,
            Ok(H2UpgradePolicy::Upgrade) => H2Upgrade::Upgrade,
            Ok(H2UpgradePolicy::Default) | Err(_) => H2Upgrade::Default,
        };
        out.use_client_protocol = http.use_client_protocol;
    }
    // Istio: the HTTP idle timeout, else the TCP one, else Envoy's 1 h;
    // 0 turns it off (Envoy's meaning of an explicit 0).
    if let Some(idle) = http_idle.or(out.limits.tcp_idle_timeout) {
        out.limits.idle_timeout = if idle.is_zero() { Duration::MAX } else { idle };
    }
    Ok(out)
}

/// A connection-pool number: 0 means unset.
fn limit(cx: &Cx, at: &str, name: &str, v: i32, unset: u32) -> Result<u32, PolicyError> {
    match u32::try_from(v) {
        Ok(0) => Ok(unset),
        Ok(v) => Ok(v),
        Err(_) => Err(cx.invalid(format!("{at}.{name}"), format!("{v} is negative"))),
    }
}

fn outlier_detection(
    cx: &Cx,
    at: &str,
    o: &pb::OutlierDetection,
) -> Result<OutlierConfig, PolicyError> {
    let positive = |name: &str, d: Option<prost_types::Duration>, default: u64| {
        let field = format!("{at}.{name}");
        match d.map(|d| duration(cx, &field, d)).transpose()? {
            None => Ok(Duration::from_secs(default)),
            Some(d) if d.is_zero() => Err(cx.invalid(field, "must be positive")),
            Some(d) => Ok(d),
        }
    };
    let percent = |name: &str, v: Option<i32>, default: u32| match v {
        None => Ok(default),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| *v <= 100)
            .ok_or_else(|| cx.invalid(format!("{at}.{name}"), format!("{v} is not a percentage"))),
    };
    let base_ejection_time = positive("base_ejection_time", o.base_ejection_time, 30)?;
    Ok(OutlierConfig {
        consecutive_5xx: o.consecutive_5xx_errors.or(Some(5)).filter(|n| *n > 0),
        consecutive_gateway: o.consecutive_gateway_errors.filter(|n| *n > 0),
        // Istio passes a positive value only; Envoy's default is 5.
        consecutive_local_origin: o.split_external_local_origin_errors.then(|| {
            o.consecutive_local_origin_failures
                .filter(|n| *n > 0)
                .unwrap_or(5)
        }),
        split_local_origin: o.split_external_local_origin_errors,
        interval: positive("interval", o.interval, 10)?,
        base_ejection_time,
        max_ejection_time: base_ejection_time.max(Duration::from_secs(300)),
        // Istio passes a positive value only: 0 is Envoy's default, 10%.
        max_ejection_percent: match percent("max_ejection_percent", o.max_ejection_percent, 10)? {
            0 => 10,
            p => p,
        },
        min_health_percent: percent("min_health_percent", o.min_health_percent, 0)?,
    })
}

fn client_tls(t: &pb::ClientTlsSettings) -> (TlsMode, Option<TlsOrigination>) {
    let mode = match PbTlsMode::try_from(t.mode) {
        Ok(PbTlsMode::Disable) => TlsMode::Disable,
        Ok(PbTlsMode::Simple) => TlsMode::Simple,
        Ok(PbTlsMode::Mutual) => TlsMode::Mutual,
        Ok(PbTlsMode::IstioMutual) => TlsMode::IstioMutual,
        // A mode this agent does not know: keep the mesh's own behaviour
        // rather than guess at an origination.
        Err(_) => TlsMode::MeshDefault,
    };
    let origination = matches!(mode, TlsMode::Simple | TlsMode::Mutual).then(|| TlsOrigination {
        mutual: mode == TlsMode::Mutual,
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        ca_certificates: t.ca_certificates.clone(),
        credential_name: t.credential_name.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: t.sni.clone(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    });
    (mode, origination)
}

fn duration(cx: &Cx, field: &str, d: prost_types::Duration) -> Result<Duration, PolicyError> {
    Duration::try_from(d)
        .map_err(|_| cx.invalid(field.to_string(), "negative or out-of-range duration"))
}

#[cfg(test)]
mod tests {
    use super::is_prime;

    #[test]
    fn primes() {
        let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(is_prime(super::MAX_MAGLEV_TABLE_SIZE));
        assert!(!is_prime(65536));
        assert!(!is_prime(65539 * 3));
    }
}
