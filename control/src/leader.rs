//! Leader election on a `coordination.k8s.io/v1` Lease, the way
//! client-go's `leaderelection` (and so istiod) does it, for the work only
//! one replica may do (today: publishing `istio-ca-root-cert` to every
//! namespace). Serving xDS and signing certificates need no leader: every
//! replica does both.
//!
//! Every `retry_period` each replica reads the Lease. The holder renews it
//! (`renewTime`); another replica takes it over only when it has seen the
//! same record unchanged for `lease_duration` by its *own* clock, so clock
//! skew between nodes does not matter. Writes carry the `resourceVersion`
//! read, so of two replicas racing for an expired lease exactly one wins
//! (the other gets 409 Conflict). A leader that cannot renew for
//! `renew_deadline` steps down before anyone may take over; on shutdown it
//! gives the lease up so a successor need not wait.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use serde::Serialize;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// How a replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderElection {
    /// Name of the Lease, in the control plane's namespace.
    pub lease: String,
    /// This replica's name in the Lease's `holderIdentity` (its pod name).
    pub identity: String,
    /// How long a lease is good for after its last renewal.
    #[serde(serialize_with = "seconds")]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down;
    /// shorter than `lease_duration`.
    #[serde(serialize_with = "seconds")]
    pub renew_deadline: Duration,
    /// How often every replica looks at the lease.
    #[serde(serialize_with = "seconds")]
    pub retry_period: Duration,
}

fn seconds<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
}

impl LeaderElection {
    /// client-go's defaults (15 s, 10 s, 2 s), with `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease: "weft-control-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this replica knows of the election, for `/debug/syncz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// This replica holds the lease.
    pub leader: bool,
    /// The holder last seen in the lease (possibly this replica).
    pub holder: Option<String>,
}

/// The last record read, and when (by this replica's clock) it was first
/// seen: the lease expires `lease_duration` after that.
struct Observed {
    holder: String,
    renew_time: Option<Timestamp>,
    since: Instant,
}

/// Runs the election until `shutdown`, publishing the state on `state`.
pub async fn run(
    api: Api<Lease>,
    config: LeaderElection,
    state: watch::Sender<Leadership>,
    shutdown: CancellationToken,
) {
    let mut observed: Option<Observed> = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let outcome = try_acquire_or_renew(&api, &config, &mut observed).await;
        let now = Instant::now();
        let leader = match outcome {
            Ok(true) => {
                last_renewed = Some(now);
                true
            }
            Ok(false) => {
                last_renewed = None;
                false
            }
            Err(error) => {
                // Keep leading only while the lease we hold cannot have
                // expired for anyone else.
                let still = last_renewed.is_some_and(|at| now - at < config.renew_deadline);
                tracing::warn!(lease = %config.lease, %error, leader = still, "cannot read or write the leader lease");
                if !still {
                    last_renewed = None;
                }
                still
            }
        };
        let holder = observed.as_ref().map(|o| o.holder.clone());
        state.send_if_modified(|current| {
            let next = Leadership { leader, holder };
            if current.leader != next.leader {
                if next.leader {
                    tracing::info!(lease = %config.lease, identity = %config.identity, "became the leader");
                } else {
                    tracing::info!(lease = %config.lease, identity = %config.identity, holder = ?next.holder, "not the leader");
                }
            }
            let changed = *current != next;
            *current = next;
            changed
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if state.borrow().leader {
        release(&api, &config).await;
        state.send_modify(|s| s.leader = false);
    }
}

/// One round: Ok(true) when this replica holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderElection,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&config.lease).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by(config, now, now, 0)),
        };
        let created = api.create(&PostParams::default(), &lease).await;
        return took(created, config, now, observed);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renew_time = spec.renew_time.as_ref().map(|t| t.0);
    let unchanged = observed
        .as_ref()
        .is_some_and(|o| o.holder == holder && o.renew_time == renew_time);
    if !unchanged {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew_time,
            since: Instant::now(),
        });
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(config.lease_duration);
    let seen_since = observed.as_ref().map_or_else(Instant::now, |o| o.since);
    let expired = holder.is_empty() || seen_since.elapsed() >= duration;
    let mine = holder == config.identity;
    if !mine && !expired {
        return Ok(false);
    }
    let (acquired, transitions) = if mine {
        (
            spec.acquire_time.map_or(now, |t| t.0),
            spec.lease_transitions.unwrap_or(0),
        )
    } else {
        (now, spec.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(held_by(config, acquired, now, transitions));
    // `replace` sends the resourceVersion read: a lost race is a 409.
    let replaced = api
        .replace(&config.lease, &PostParams::default(), &lease)
        .await;
    took(replaced, config, now, observed)
}

/// The outcome of writing the lease as its holder: held (and observed as
/// ours), lost to another writer (409), or an error.
fn took(
    written: Result<Lease, kube::Error>,
    config: &LeaderElection,
    now: Timestamp,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    match written {
        Ok(_) => {
            *observed = Some(Observed {
                holder: config.identity.clone(),
                renew_time: Some(now),
                since: Instant::now(),
            });
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn held_by(
    config: &LeaderElection,
    acquired: Timestamp,
    renewed: Timestamp,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Gives the lease up on shutdown (holder cleared, one-second duration), as
/// client-go's `ReleaseOnCancel` does, so a successor takes over at once.
async fn release(api: &Api<Lease>, config: &LeaderElection) {
    let Ok(Some(mut lease)) = api.get_opt(&config.lease).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api
        .replace(&config.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %config.lease, "gave up the leader lease"),
        Err(error) => {
            tracing::warn!(lease = %config.lease, %error, "cannot give up the leader lease; a successor waits for it to expire")
        }
    }
}

/// Runs `work` while `leadership` says this replica leads: started on
/// becoming the leader, cancelled (its token) and awaited on losing it,
/// started again on leading again; until `shutdown`.
pub async fn while_leading<F, Fut>(
    mut leadership: watch::Receiver<Leadership>,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            led = leadership.wait_for(|l| l.leader) => if led.is_err() { return },
        }
        let stop = shutdown.child_token();
        let running = work(stop.clone());
        tokio::pin!(running);
        // `Some(closed)`: leadership lost (or its sender gone).
        let lost = tokio::select! {
            () = &mut running => None,
            lost = leadership.wait_for(|l| !l.leader) => Some(lost.is_err()),
        };
        let lost = match lost {
            Some(closed) => {
                stop.cancel();
                running.await;
                closed
            }
            // Done on its own: not started again until leadership is lost
            // and won back.
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                lost = leadership.wait_for(|l| !l.leader) => lost.is_err(),
            },
        };
        if lost || shutdown.is_cancelled() {
            return;
        }
    }
}
