//! Fault injection (Istio's `HTTPFaultInjection`, Envoy's fault filter),
//! and the percentage sampling that mirrors share.
//!
//! Delay and abort are decided independently, each with its own random
//! number; a request can be both delayed and then aborted.

use std::time::Duration;

use http::StatusCode;
use weft_proto::route::{self as pb, http_fault_injection::abort::ErrorType};

use super::{RouteError, duration};

/// Whether an event with probability `percent` (0-100, fractions allowed)
/// happens, given `roll`, a uniform random u32. Istio hands Envoy the
/// percentage in millionths (`percent * 10000`, truncated), so that is the
/// resolution here too.
pub fn roll(percent: f64, roll: u32) -> bool {
    // NaN and negatives become 0; `as` saturates the rest.
    let millionths = (percent * 10_000.0) as u64;
    let drawn = (u64::from(roll) * 1_000_000) >> 32;
    drawn < millionths
}

/// How a request is aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// Answer with this status.
    Http(StatusCode),
    /// Answer with this gRPC status (a trailers-only response).
    Grpc(u32),
    /// Reset the stream with this HTTP/2 error. Istio does not program
    /// this one (its Envoy config drops the abort); the proxy may ignore it.
    Http2Error(String),
}

/// A route's fault injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Delay before forwarding, and the percentage of requests delayed.
    pub delay: Option<(Duration, f64)>,
    /// Abort instead of forwarding, and the percentage of requests aborted.
    pub abort: Option<(Abort, f64)>,
}

impl Fault {
    /// The delay to apply, given a uniform random `roll`.
    pub fn delay_for(&self, roll_value: u32) -> Option<Duration> {
        self.delay
            .as_ref()
            .filter(|(_, p)| roll(*p, roll_value))
            .map(|(d, _)| *d)
    }

    /// The abort to apply, given a uniform random `roll` (drawn apart from
    /// the delay's).
    pub fn abort_for(&self, roll_value: u32) -> Option<&Abort> {
        self.abort
            .as_ref()
            .filter(|(_, p)| roll(*p, roll_value))
            .map(|(a, _)| a)
    }

    /// Compiles the route's `fault`; `None` when it injects nothing (no
    /// delay duration and no abort type), as Istio drops such a fault.
    pub(crate) fn compile(
        f: Option<&pb::HttpFaultInjection>,
        route: &str,
    ) -> Result<Option<Self>, RouteError> {
        let Some(f) = f else { return Ok(None) };
        let delay = match &f.delay {
            Some(d) => duration(d.fixed_delay.as_ref(), route, "fault.delay.fixed_delay")?
                .map(|fixed| (fixed, d.percentage)),
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => abort(a.error_type.as_ref(), route)?.map(|kind| (kind, a.percentage)),
            None => None,
        };
        Ok((delay.is_some() || abort.is_some()).then_some(Self { delay, abort }))
    }
}

fn abort(error: Option<&ErrorType>, route: &str) -> Result<Option<Abort>, RouteError> {
    let invalid = |field: &str, reason: String| RouteError::Invalid {
        route: route.to_string(),
        field: format!("fault.abort.{field}"),
        reason,
    };
    Ok(match error {
        None => None,
        Some(ErrorType::HttpStatus(code)) => {
            // Envoy's fault filter takes [200, 600).
            let status = u16::try_from(*code)
                .ok()
                .filter(|c| (200..600).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| invalid("http_status", format!("{code} is not in [200, 600)")))?;
            Some(Abort::Http(status))
        }
        Some(ErrorType::GrpcStatus(s)) => {
            Some(Abort::Grpc(grpc_code(s).ok_or_else(|| {
                invalid("grpc_status", format!("unknown gRPC status {s:?}"))
            })?))
        }
        Some(ErrorType::Http2Error(e)) => Some(Abort::Http2Error(e.clone())),
    })
}

/// A gRPC status code by number or by its upper-case name.
fn grpc_code(s: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    NAMES
        .iter()
        .position(|n| *n == s)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::route::http_fault_injection as fi;

    fn compile(f: pb::HttpFaultInjection) -> Result<Option<Fault>, RouteError> {
        Fault::compile(Some(&f), "route 0 of ns/vs")
    }

    fn abort_of(error: ErrorType, percentage: f64) -> pb::HttpFaultInjection {
        pb::HttpFaultInjection {
            delay: None,
            abort: Some(fi::Abort {
                error_type: Some(error),
                percentage,
            }),
        }
    }

    #[test]
    fn roll_resolution_and_bounds() {
        assert!(!roll(0.0, 0));
        assert!(roll(100.0, u32::MAX));
        assert!(roll(100.0, 0));
        assert!(!roll(-5.0, 0));
        assert!(!roll(f64::NAN, 0));
        assert!(roll(250.0, u32::MAX));
        // 50%: the lower half of the rolls.
        assert!(roll(50.0, (1 << 31) - 1));
        assert!(!roll(50.0, 1 << 31));
        // 0.1% of many rolls, spread evenly.
        let n = 1_000_000u64;
        let step = (1u64 << 32) / n;
        let hits = (0..n)
            .filter(|i| roll(0.1, u32::try_from(i * step).unwrap()))
            .count();
        assert!((999..=1001).contains(&hits), "{hits}");
    }

    #[test]
    fn delay_and_abort() {
        let f = compile(pb::HttpFaultInjection {
            delay: Some(fi::Delay {
                fixed_delay: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                percentage: 10.0,
            }),
            abort: Some(fi::Abort {
                error_type: Some(ErrorType::HttpStatus(503)),
                percentage: 100.0,
            }),
        })
        .unwrap()
        .unwrap();
        assert_eq!(f.delay, Some((Duration::from_secs(5), 10.0)));
        assert_eq!(f.delay_for(0), Some(Duration::from_secs(5)));
        assert_eq!(f.delay_for(u32::MAX), None);
        assert_eq!(
            f.abort_for(u32::MAX),
            Some(&Abort::Http(StatusCode::SERVICE_UNAVAILABLE))
        );
    }

    #[test]
    fn grpc_and_http2_aborts() {
        let f = compile(abort_of(ErrorType::GrpcStatus("UNAVAILABLE".into()), 100.0));
        assert_eq!(f.unwrap().unwrap().abort, Some((Abort::Grpc(14), 100.0)));
        let f = compile(abort_of(ErrorType::GrpcStatus("8".into()), 1.5));
        assert_eq!(f.unwrap().unwrap().abort, Some((Abort::Grpc(8), 1.5)));
        let err = compile(abort_of(ErrorType::GrpcStatus("NOPE".into()), 1.0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"route 0 of ns/vs: fault.abort.grpc_status: unknown gRPC status "NOPE""#
        );
        let f = compile(abort_of(
            ErrorType::Http2Error("REFUSED_STREAM".into()),
            100.0,
        ));
        assert_eq!(
            f.unwrap().unwrap().abort,
            Some((Abort::Http2Error("REFUSED_STREAM".into()), 100.0))
        );
    }

    #[test]
    fn invalid_http_status() {
        for code in [0, 99, 199, 600, 70000] {
            assert!(compile(abort_of(ErrorType::HttpStatus(code), 1.0)).is_err());
        }
    }

    #[test]
    fn empty_fault_is_none() {
        assert!(Fault::compile(None, "r").unwrap().is_none());
        let f = pb::HttpFaultInjection {
            delay: Some(fi::Delay {
                fixed_delay: None,
                percentage: 100.0,
            }),
            abort: Some(fi::Abort {
                error_type: None,
                percentage: 100.0,
            }),
        };
        assert!(compile(f).unwrap().is_none());
    }
}
