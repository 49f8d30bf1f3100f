//! The one-line verdict: the most likely cause among the failed checks.
//! Causes are blamed in [`Cause`]'s order: what stops everything (a node
//! down, an agent behind on config) before what config says (enrolment,
//! endpoints, routes, protocol, mTLS, authorization), before certificates.
//! Without a failure, a warning from the counters (e.g. requests failing
//! with `UF`) is the verdict; else all is well.

use serde::Serialize;

use super::{Cause, Check, Fix, Status};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `ok`, `warn` or `fail`.
    pub status: Status,
    /// The blamed cause; none when all is well.
    pub cause: Option<Cause>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// Picks the verdict.
pub fn choose(checks: &[Check]) -> Verdict {
    let worst = |status: Status| {
        checks
            .iter()
            .filter(|c| c.status == status)
            .min_by_key(|c| c.check)
    };
    if let Some(c) = worst(Status::Fail) {
        let others = checks
            .iter()
            .filter(|o| o.status == Status::Fail && !std::ptr::eq(*o, c))
            .count();
        return Verdict {
            status: Status::Fail,
            cause: Some(c.check),
            message: format!(
                "most likely cause ({}): {}{}",
                c.check.name(),
                c.message,
                if others > 0 {
                    format!(" (and {others} more failed check(s) above)")
                } else {
                    String::new()
                }
            ),
            fix: c.fix.clone(),
        };
    }
    if let Some(c) = checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .min_by_key(|c| (c.check != Cause::Telemetry, c.check))
    {
        return Verdict {
            status: Status::Warn,
            cause: Some(c.check),
            message: format!("no check failed, but ({}): {}", c.check.name(), c.message),
            fix: c.fix.clone(),
        };
    }
    let skipped = checks.iter().filter(|c| c.status == Status::Skip).count();
    Verdict {
        status: Status::Ok,
        cause: None,
        message: if skipped == 0 {
            "all checks passed: the request should succeed".into()
        } else {
            format!("no check failed, but {skipped} could not be made (see - above)")
        },
        fix: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blames_the_earliest_cause_that_failed() {
        let checks = vec![
            Check::ok(Cause::Sync, "synced"),
            Check::fail(Cause::Authorization, "denied", None),
            Check::fail(Cause::Route, "no subset", None),
            Check::warn(Cause::Telemetry, "403s", None),
        ];
        let v = choose(&checks);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.cause, Some(Cause::Route));
        assert!(
            v.message.contains("no subset") && v.message.contains("1 more"),
            "{}",
            v.message
        );
    }

    #[test]
    fn network_before_everything() {
        let checks = vec![
            Check::fail(Cause::Sync, "agent does not answer", None),
            Check::fail(Cause::Network, "node-2 unreachable", None),
        ];
        assert_eq!(choose(&checks).cause, Some(Cause::Network));
    }

    #[test]
    fn telemetry_warnings_first_then_all_ok() {
        let checks = vec![
            Check::warn(Cause::Mesh, "client not in mesh", None),
            Check::warn(Cause::Telemetry, "UF", None),
        ];
        assert_eq!(choose(&checks).cause, Some(Cause::Telemetry));
        let v = choose(&[Check::ok(Cause::Route, "fine")]);
        assert_eq!((v.status, v.cause), (Status::Ok, None));
    }
}
