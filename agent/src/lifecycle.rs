//! The tasks the agent runs, owned by the app, and how they stop.
//!
//! Two kinds, two trackers:
//!
//! * **work**: each proxied connection (and each HBONE stream, each HTTP
//!   connection, each CNI call). On stop the agent waits for work to end,
//!   up to the drain deadline; connections learn of the stop from
//!   [`crate::proxy::ProxyContext::drain`] and close when what they carry
//!   is done.
//! * **background**: loops that live as long as the agent: the xDS
//!   client, certificate renewals, sweepers, servers, per-pod accept loops.
//!   On stop they are cancelled once the work has ended.
//!
//! No task of the agent is spawned outside these two (short helper tasks
//! inside a connection, such as an h2 driver, end with their connection),
//! so once [`Tasks::stop`] returns nothing of the agent runs any more:
//! `agent/tests/lifecycle.rs` checks it on a runtime of its own.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long background loops get to notice the stop and return.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// The agent's tasks; cheap to clone, every clone is the same set.
#[derive(Clone, Default)]
pub struct Tasks {
    work: TaskTracker,
    background: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Starts a unit of work: it runs to its own end (a connection closes,
    /// a call is answered) and the stop waits for it.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.work.spawn(work);
    }

    /// Starts a loop that runs until the agent stops; `what` names it in
    /// the log if it outlives the grace it gets.
    pub fn spawn_background<F>(&self, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.background.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => tracing::trace!(task = what, "stopped"),
                _ = task => {}
            }
        });
    }

    /// Work in progress.
    pub fn work_in_progress(&self) -> usize {
        self.work.len()
    }

    /// Waits for the work in progress to end, up to `deadline`, and
    /// returns how much is left then. New work can still start: an agent
    /// that handed its listeners over keeps serving what it holds.
    pub async fn drain_work(&self, deadline: Duration) -> usize {
        self.work.close();
        let _ = tokio::time::timeout(deadline, self.work.wait()).await;
        self.work.len()
    }

    /// Cancels the background loops and waits for them. Work still running
    /// (past its deadline) is left to the runtime that ends it.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.background.close();
        if tokio::time::timeout(BACKGROUND_GRACE, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.background.len(),
                "background tasks did not stop in time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_work_then_cancels_loops() {
        let tasks = Tasks::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        tasks.spawn_background("forever", std::future::pending());
        assert_eq!(tasks.work_in_progress(), 1);
        assert_eq!(tasks.drain_work(Duration::from_secs(5)).await, 0);
        done_rx.await.expect("the work ran to its end");
        tasks.stop().await;
        assert!(tasks.background.is_empty(), "the loop was cancelled");
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_drain() {
        let tasks = Tasks::default();
        tasks.spawn(std::future::pending());
        assert_eq!(tasks.drain_work(Duration::from_millis(20)).await, 1);
    }
}
