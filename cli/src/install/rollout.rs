//! Whether a Deployment or a DaemonSet has rolled out, decided as
//! `kubectl rollout status` decides (kubectl's
//! `polymorphichelpers/rollout_status.go`), with its progress in words.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the applied spec and is available.
    Done,
    /// Still going: what it waits for (`1 of 3 updated pods available`).
    Waiting(String),
    /// It will not finish by itself (a Deployment past its progress deadline).
    Failed(String),
}

fn not_observed(generation: Option<i64>, observed: Option<i64>) -> Option<Rollout> {
    let generation = generation.unwrap_or(0);
    match observed {
        Some(observed) if observed >= generation => None,
        None => Some(Rollout::Waiting(format!(
            "generation {generation} not yet seen by its controller"
        ))),
        Some(observed) => Some(Rollout::Waiting(format!(
            "generation {generation} not yet seen by its controller, which saw {observed}"
        ))),
    }
}

fn plural(n: i32, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A Deployment: the controller saw the current generation, every replica
/// is updated, none of the old ones is left, every updated one is available.
pub fn deployment(deployment: &Deployment) -> Rollout {
    let status = deployment.status.clone().unwrap_or_default();
    if let Some(waiting) = not_observed(deployment.metadata.generation, status.observed_generation)
    {
        return waiting;
    }
    let deadline_exceeded = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = deadline_exceeded {
        return Rollout::Failed(format!(
            "exceeded its progress deadline: {}",
            condition.message.as_deref().unwrap_or("no message")
        ));
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        Rollout::Waiting(format!(
            "{updated} of {} updated",
            plural(wanted, "replica")
        ))
    } else if replicas > updated {
        Rollout::Waiting(format!(
            "{} pending termination",
            plural(replicas - updated, "old replica")
        ))
    } else if available < updated {
        Rollout::Waiting(format!(
            "{available} of {} available",
            plural(updated, "updated replica")
        ))
    } else {
        Rollout::Done
    }
}

/// A DaemonSet: the controller saw the current generation, every node
/// that should run a pod runs an updated one, and each is available. An
/// `OnDelete` DaemonSet is never waited for (its pods change only when
/// someone deletes them).
pub fn daemonset(daemonset: &DaemonSet) -> Rollout {
    let strategy = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref());
    if strategy.is_some_and(|s| s != "RollingUpdate") {
        return Rollout::Done;
    }
    let status = daemonset.status.clone().unwrap_or_default();
    if let Some(waiting) = not_observed(daemonset.metadata.generation, status.observed_generation) {
        return waiting;
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        Rollout::Waiting(format!("{updated} of {} updated", plural(desired, "pod")))
    } else if available < desired {
        Rollout::Waiting(format!(
            "{available} of {} available",
            plural(desired, "updated pod")
        ))
    } else {
        Rollout::Done
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment_with(replicas: i32, generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "weft-control", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    fn daemonset_with(generation: i64, status: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "weft-agent", "generation": generation},
            "spec": {"selector": {}, "template": {}, "updateStrategy": {"type": "RollingUpdate"}},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(text: &str) -> Rollout {
        Rollout::Waiting(text.to_string())
    }

    #[test]
    fn deployment_steps() {
        let step = |status| deployment(&deployment_with(2, 3, status));
        assert_eq!(
            step(json!({})),
            waiting("generation 3 not yet seen by its controller")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            ),
            waiting("generation 3 not yet seen by its controller, which saw 2")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2})
            ),
            waiting("1 of 2 replicas updated")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})
            ),
            waiting("1 old replica pending termination")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1})
            ),
            waiting("1 of 2 updated replicas available")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            ),
            Rollout::Done
        );
        assert_eq!(
            step(json!({"observedGeneration": 3, "conditions": [{
                "type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"weft-control-5d4\" has timed out progressing."
            }]})),
            Rollout::Failed(
                "exceeded its progress deadline: ReplicaSet \"weft-control-5d4\" has timed out progressing."
                    .into()
            )
        );
        // Zero replicas: done once observed.
        assert_eq!(
            deployment(&deployment_with(0, 1, json!({"observedGeneration": 1}))),
            Rollout::Done
        );
    }

    #[test]
    fn daemonset_steps() {
        let step = |status| daemonset(&daemonset_with(2, status));
        assert_eq!(
            step(
                json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0})
            ),
            waiting("generation 2 not yet seen by its controller")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 1,
                "numberAvailable": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3})
            ),
            waiting("1 of 3 pods updated")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                "numberAvailable": 1, "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 1})
            ),
            waiting("1 of 3 updated pods available")
        );
        assert_eq!(
            step(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                "numberAvailable": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3})
            ),
            Rollout::Done
        );
        // No node to run on: nothing to wait for.
        assert_eq!(
            step(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
                "numberMisscheduled": 0, "numberReady": 0})
            ),
            Rollout::Done
        );
        let mut on_delete = daemonset_with(2, json!({}));
        on_delete.spec.as_mut().unwrap().update_strategy =
            serde_json::from_value(json!({"type": "OnDelete"})).unwrap();
        assert_eq!(daemonset(&on_delete), Rollout::Done);
    }
}
