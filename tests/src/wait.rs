//! Bounded retries: the only way the harness (and its tests) wait.
//!
//! A wait polls a condition with a short backoff until it holds or a
//! deadline passes; on timeout the error says what was awaited, for how long,
//! and what the last attempt saw.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// First pause between attempts; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Polls `attempt` until it returns `Ok(Some(_))`, at most for `timeout`.
///
/// `Ok(None)` and `Err(_)` both mean "not yet"; the last error (if any) is
/// quoted in the timeout message. `what` completes the sentence "timed out
/// waiting for …".
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut backoff = MIN_BACKOFF;
    let mut attempts = 0u32;
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        attempts += 1;
        match attempt() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            match last_err {
                Some(e) => bail!(
                    "timed out after {timeout:?} ({attempts} attempts) waiting for {what}; \
                     last attempt failed: {e:#}"
                ),
                None => {
                    bail!("timed out after {timeout:?} ({attempts} attempts) waiting for {what}")
                }
            }
        }
        std::thread::sleep(backoff.min(timeout - elapsed));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Like [`wait_for`] for a plain condition.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(what, timeout, || Ok(cond().then_some(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            Ok((n >= 3).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_names_what_and_last_error() {
        let err = wait_for::<()>("the moon", Duration::from_millis(30), || {
            anyhow::bail!("still cheese")
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the moon"), "{err}");
        assert!(err.contains("still cheese"), "{err}");
    }
}
