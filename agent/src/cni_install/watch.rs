//! Keeping weft-cni chained: a pass at start, then one after every change
//! in the config directory (primary CNIs rewrite their config on their own
//! restarts and upgrades) and every `recheck` as a safety net (inotify
//! misses what happens to a replaced directory).

use std::{future::Future, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Chained, CniInstallError, Installer};

/// How often the config is checked besides on changes.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// After a change, wait until the directory has been quiet this long (a
/// primary CNI may write several files, or one in several writes)...
const DEBOUNCE: Duration = Duration::from_millis(100);
/// ...but no longer than this.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

impl Installer {
    /// Starts watching the config directory (created if missing). The
    /// returned future chains weft-cni, and chains it again whenever it is
    /// gone, until `stop`. `on_state` hears whether weft-cni is chained
    /// after each pass.
    pub fn keep_chained(
        self,
        on_state: impl Fn(bool) + Send + 'static,
        stop: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, CniInstallError> {
        let dir = self.settings.net_dir.clone();
        std::fs::create_dir_all(&dir).map_err(super::io_error("creating", &dir))?;
        let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
        let watch_error = |source| CniInstallError::Watch {
            dir: dir.clone(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Our own reads of the directory must not wake us again.
                if let Ok(e) = &event
                    && is_read(&e.kind)
                {
                    return;
                }
                let _ = events_tx.send(());
            })
            .map_err(watch_error)?;
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
            .map_err(watch_error)?;

        Ok(async move {
            // Owned by the task: dropping it stops the inotify watch.
            let _watcher = watcher;
            let mut recheck = tokio::time::interval(self.settings.recheck);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            recheck.tick().await;
            let mut reported = None;
            loop {
                let installer = self.clone();
                match tokio::task::spawn_blocking(move || installer.chain()).await {
                    Ok(result) => {
                        if let Some(chained) = report(&result, &mut reported) {
                            on_state(chained);
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "CNI config pass panicked"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.recv() => {
                        if event.is_none() {
                            return;
                        }
                        debounce(&mut events).await;
                    }
                    _ = recheck.tick() => {}
                }
            }
        })
    }
}

/// Logs a pass's outcome: every write, and any other state once (the
/// periodic re-check repeats them). Whether weft-cni is chained, if known.
fn report(
    result: &Result<Chained, CniInstallError>,
    reported: &mut Option<String>,
) -> Option<bool> {
    let once = |reported: &mut Option<String>, text: String| {
        let new = reported.as_deref() != Some(text.as_str());
        *reported = Some(text);
        new
    };
    match result {
        Ok(Chained::Written { file }) => {
            tracing::info!(file = %file.display(), "chained weft-cni into the CNI config");
            // The pass our own write triggers finds it chained: no line.
            *reported = Some(file.display().to_string());
            Some(true)
        }
        Ok(Chained::Converted { from, to }) => {
            tracing::info!(
                from = %from.display(),
                file = %to.display(),
                "chained weft-cni into the CNI config, converted to a network list"
            );
            *reported = Some(to.display().to_string());
            Some(true)
        }
        Ok(Chained::Unchanged { file }) => {
            if once(reported, file.display().to_string()) {
                tracing::info!(file = %file.display(), "weft-cni is chained in the CNI config");
            }
            Some(true)
        }
        // The next change (the primary CNI's write) brings another pass.
        Err(CniInstallError::Changed { file }) => {
            tracing::debug!(file = %file.display(), "CNI config changed during a pass");
            None
        }
        Err(err @ CniInstallError::NoConfig { .. }) => {
            if once(reported, err.to_string()) {
                tracing::info!(reason = %err, "weft-cni not chained yet");
            }
            Some(false)
        }
        Err(err) => {
            if once(reported, err.to_string()) {
                tracing::error!(error = %err, "cannot chain weft-cni");
            }
            Some(false)
        }
    }
}

/// Waits until no event came for `DEBOUNCE`, or `DEBOUNCE_MAX` passed.
async fn debounce(events: &mut mpsc::UnboundedReceiver<()>) {
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(DEBOUNCE, events.recv()).await {
            Ok(Some(())) => continue,
            _ => return,
        }
    }
}

/// An event for opening or reading (inotify reports those too), not for
/// changing anything.
fn is_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}
