//! The enroller's side of a handover (see `crate::handoff`): pausing
//! enrolment, the listeners to hand over, stepping back, and the
//! listeners a previous agent handed to this one.

use tokio::sync::OwnedRwLockWriteGuard;

use super::enrol::{Enroller, key};
use crate::{
    cni::PodEvent,
    handoff::{Kept, Slot},
};

/// Enrolment stopped for a handover (see [`Enroller::pause`]).
pub struct Paused(OwnedRwLockWriteGuard<bool>);

impl Enroller {
    /// Stops enrolment for a handover, once the calls in progress are done.
    pub async fn pause(&self) -> Paused {
        Paused(self.gate.clone().write_owned().await)
    }

    /// Every enrolled pod with second descriptors of its listeners.
    pub async fn listeners_to_hand_over(&self) -> Vec<(PodEvent, Vec<Kept>)> {
        let pods = self.pods.lock().await;
        pods.values()
            .filter_map(|known| Some((&known.event, known.enrolled.as_ref()?)))
            .filter_map(|(event, enrolled)| {
                let kept = enrolled
                    .kept
                    .iter()
                    .map(|(slot, fd)| Ok((slot.clone(), fd.try_clone()?)))
                    .collect::<std::io::Result<Vec<Kept>>>();
                match kept {
                    Ok(kept) => Some((event.clone(), kept)),
                    Err(err) => {
                        tracing::warn!(pod = %format!("{}/{}", event.pod_namespace, event.pod_name), error = %err, "cannot hand this pod's listeners over");
                        None
                    }
                }
            })
            .collect()
    }

    /// After a handover: stops accepting for every pod and never enrols
    /// again. The pods stay enrolled (their redirection is the new
    /// agent's now); connections in flight go on.
    pub async fn retire(&self, mut paused: Paused) {
        *paused.0 = true;
        drop(paused);
        self.stop_listeners().await;
    }

    /// Listeners a previous agent handed over: each pod is enrolled on its
    /// own when restored. Returns the pods, for [`Self::restore`].
    pub fn inherit(&self, pods: Vec<(PodEvent, Vec<Kept>)>) -> Vec<PodEvent> {
        let mut inherited = self.inherited.lock().expect("inherited lock");
        pods.into_iter()
            .map(|(event, kept)| {
                inherited.insert(key(&event), kept);
                event
            })
            .collect()
    }

    /// Closes inherited listeners that no pod was enrolled on.
    pub(super) fn drop_inherited(&self) {
        let left = std::mem::take(&mut *self.inherited.lock().expect("inherited lock"));
        for ((namespace, name), kept) in left {
            tracing::info!(pod = %format!("{namespace}/{name}"), listeners = kept.len(), "closing listeners handed over for a pod that is no longer in the mesh");
        }
    }
}

/// Takes the handed-over listener for `slot`, if there is one.
pub(super) fn take_slot(handed: &mut Vec<Kept>, slot: &Slot) -> Option<std::os::fd::OwnedFd> {
    let at = handed.iter().position(|(s, _)| s == slot)?;
    Some(handed.swap_remove(at).1)
}
