//! Outlier detection, Envoy's consecutive-error detectors: per endpoint,
//! counters of errors in a row; reaching a threshold ejects the endpoint
//! (unless too many are ejected already) for a time that grows with each
//! ejection. Success-rate detection is not implemented (Istio turns it
//! off).
//!
//! Envoy runs a timer every `interval` that returns endpoints to service
//! and decays the ejection multiplier. Here both happen lazily, when an
//! endpoint's state is read with the current time: an endpoint is back at
//! the first look at or after the end of its ejection, and its multiplier
//! drops by one for each whole `interval` it has stayed in service since.

use std::time::{Duration, Instant};

use super::{AttemptResult, OutlierConfig};

/// Ejections longer than this (a century) are cut to it.
const LONGEST_EJECTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Which detector fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detector {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub(super) struct HostOutlier {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    /// Set while ejected.
    ejected_until: Option<Instant>,
    /// The ejection-time multiplier (Envoy's "eject time backoff").
    multiplier: u32,
    /// Decay is counted in whole intervals from here: the end of the last
    /// ejection, moved forward by each decrement.
    decay_from: Option<Instant>,
}

impl HostOutlier {
    /// Whether the endpoint is ejected at `now`; returns it to service
    /// (resetting its counters, as Envoy does) once its time is up.
    pub(super) fn is_ejected(&mut self, cfg: &OutlierConfig, now: Instant) -> bool {
        if let Some(until) = self.ejected_until {
            if now < until {
                return true;
            }
            self.ejected_until = None;
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
            self.consecutive_local_origin = 0;
            self.decay_from = Some(until);
        }
        self.decay(cfg, now);
        false
    }

    fn decay(&mut self, cfg: &OutlierConfig, now: Instant) {
        let Some(from) = self.decay_from else {
            return;
        };
        let periods =
            now.saturating_duration_since(from).as_nanos() / cfg.interval.as_nanos().max(1);
        if periods == 0 {
            return;
        }
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.multiplier = self.multiplier.saturating_sub(periods);
        self.decay_from = if self.multiplier == 0 {
            None
        } else {
            Some(from + cfg.interval.saturating_mul(periods))
        };
    }

    /// Counts one attempt's result; returns the detector whose threshold
    /// it reached, if any. Call only while the endpoint is not ejected.
    pub(super) fn record(
        &mut self,
        cfg: &OutlierConfig,
        result: AttemptResult,
    ) -> Option<Detector> {
        // Envoy maps a local-origin failure to a 503 (connect failure) or
        // 504 (timeout) unless errors are split: a gateway error either way.
        let status = match result {
            AttemptResult::LocalOriginFailure if cfg.split_local_origin => {
                self.consecutive_local_origin += 1;
                return reached(self.consecutive_local_origin, cfg.consecutive_local_origin)
                    .then_some(Detector::ConsecutiveLocalOrigin);
            }
            AttemptResult::LocalOriginFailure => 503,
            AttemptResult::Success => 200,
            AttemptResult::Status(s) => s,
        };
        // A response means the connection worked.
        self.consecutive_local_origin = 0;
        if !(500..600).contains(&status) {
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
            return None;
        }
        if matches!(status, 502..=504) {
            self.consecutive_gateway += 1;
        } else {
            self.consecutive_gateway = 0;
        }
        self.consecutive_5xx += 1;
        // Both may fire at once; the 5xx one is reported (either ejects).
        if reached(self.consecutive_5xx, cfg.consecutive_5xx) {
            Some(Detector::Consecutive5xx)
        } else if reached(self.consecutive_gateway, cfg.consecutive_gateway) {
            Some(Detector::ConsecutiveGateway)
        } else {
            None
        }
    }

    /// Restarts the count of the detector that fired, whether or not it
    /// ejected, so another run of errors is needed to fire again.
    pub(super) fn reset(&mut self, detector: Detector) {
        match detector {
            Detector::Consecutive5xx => self.consecutive_5xx = 0,
            Detector::ConsecutiveGateway => self.consecutive_gateway = 0,
            Detector::ConsecutiveLocalOrigin => self.consecutive_local_origin = 0,
        }
    }

    /// Ejects for base × the multiplier (grown by one first, while that
    /// stays under the cap), at most `max_ejection_time`.
    pub(super) fn eject(&mut self, cfg: &OutlierConfig, now: Instant) {
        if cfg.base_ejection_time.saturating_mul(self.multiplier) < cfg.max_ejection_time {
            self.multiplier += 1;
        }
        let time = cfg
            .base_ejection_time
            .saturating_mul(self.multiplier)
            .min(cfg.max_ejection_time);
        // Absurd configured times must not overflow the clock.
        self.ejected_until = Some(now + time.min(LONGEST_EJECTION));
        self.decay_from = None;
    }
}

fn reached(count: u32, threshold: Option<u32>) -> bool {
    threshold.is_some_and(|t| count >= t)
}

/// Whether one more endpoint may be ejected when `ejected` of `total` are:
/// Envoy's rule, the share after ejecting must not exceed
/// `max_ejection_percent`. (Envoy's `always_eject_one_host`, off by default
/// and not set by Istio, is not modelled: with the default 10 %, fewer
/// than 10 endpoints means no ejection at all.)
pub(super) fn may_eject(cfg: &OutlierConfig, ejected: usize, total: usize) -> bool {
    (ejected as u128 + 1) * 100 <= u128::from(cfg.max_ejection_percent) * total as u128
}

/// Envoy's panic mode: fewer healthy endpoints than `min_health_percent`
/// of all means ejections are ignored.
pub(super) fn panics(cfg: &OutlierConfig, healthy: usize, total: usize) -> bool {
    (healthy as u128) * 100 < u128::from(cfg.min_health_percent) * total as u128
}
