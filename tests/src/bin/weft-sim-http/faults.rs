//! `serve`'s fault injection: delays and failures, at random or while a
//! file exists (so a test can switch a server's behaviour on and off).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// How often a `--*-while-exists` file is checked while delaying.
const POLL: Duration = Duration::from_millis(20);

/// What `serve` does to a plain HTTP request before answering it.
#[derive(Debug)]
pub struct Faults {
    /// Fixed delay.
    pub delay: Duration,
    /// Delay for as long as this file exists.
    pub delay_file: Option<PathBuf>,
    /// Probability of failing, 0 to 1.
    pub fail_rate: f64,
    /// Fail for as long as this file exists.
    pub fail_file: Option<PathBuf>,
    /// The status of a failure.
    pub fail_status: StatusCode,
    /// State of the random generator (SplitMix64).
    rng: AtomicU64,
}

// === impl Faults ===

impl Faults {
    pub fn new(
        delay: Duration,
        delay_file: Option<PathBuf>,
        fail_rate: f64,
        fail_file: Option<PathBuf>,
        fail_status: StatusCode,
    ) -> Faults {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Faults {
            delay,
            delay_file,
            fail_rate,
            fail_file,
            fail_status,
            rng: AtomicU64::new(seed),
        }
    }

    /// Waits the fixed delay, then while the delay file exists.
    pub async fn delay(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(file) = &self.delay_file {
            while file.exists() {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// The status to fail with, if this request is to fail.
    pub fn failure(&self) -> Option<StatusCode> {
        let by_file = self.fail_file.as_ref().is_some_and(|f| f.exists());
        let by_chance = self.fail_rate > 0.0 && self.random() < self.fail_rate;
        (by_file || by_chance).then_some(self.fail_status)
    }

    /// Uniform in [0, 1).
    fn random(&self) -> f64 {
        // SplitMix64: a shared counter, then a mixing function.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(rate: f64, file: Option<PathBuf>) -> Faults {
        Faults::new(
            Duration::ZERO,
            None,
            rate,
            file,
            StatusCode::SERVICE_UNAVAILABLE,
        )
    }

    #[test]
    fn rate_zero_never_fails_rate_one_always_does() {
        let never = faults(0.0, None);
        let always = faults(1.0, None);
        for _ in 0..1000 {
            assert_eq!(never.failure(), None);
            assert_eq!(always.failure(), Some(StatusCode::SERVICE_UNAVAILABLE));
        }
    }

    #[test]
    fn rate_half_fails_about_half() {
        let half = faults(0.5, None);
        let failed = (0..10_000).filter(|_| half.failure().is_some()).count();
        assert!((4_500..5_500).contains(&failed), "{failed} of 10000");
    }

    #[test]
    fn fails_while_the_file_exists() {
        let file = std::env::temp_dir().join(format!("weft-sim-http-fail-{}", std::process::id()));
        let f = faults(0.0, Some(file.clone()));
        assert_eq!(f.failure(), None);
        std::fs::write(&file, "").unwrap();
        assert_eq!(f.failure(), Some(StatusCode::SERVICE_UNAVAILABLE));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(f.failure(), None);
    }
}
