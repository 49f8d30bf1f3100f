//! `weftctl uninstall`: the objects install applies, deleted in reverse
//! order; then the agents' pods waited for; the namespace last, and only
//! when it is marked as weft's.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use tokio::time::Instant;

use super::{
    Cluster, Human, InstallError, POLL, Placed, Printer, Target,
    objects::{self, Object},
};
use crate::manifest::{self, Values};

/// What `weftctl uninstall` was asked.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// The namespace weft was installed in.
    pub namespace: String,
    pub target: Target,
    /// How long the agents' pods may take to terminate (also the longest
    /// single request).
    pub timeout: Duration,
    /// weft-cni is off the nodes (`weft-agent cni-uninstall` ran in every
    /// agent pod): delete the agents even though their pods run.
    pub cni_removed: bool,
}

/// Namespaces every cluster has: never deleted.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Kubernetes puts this label on every namespace: it marks nothing as weft's.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A DaemonSet of the manifests and the selector of its pods.
struct Agent {
    label: String,
    namespace: String,
    /// `app=weft-agent`.
    selector: String,
}

/// Deletes what install applied, in reverse order; prints a line per
/// object and a summary.
pub async fn uninstall<W: Write>(
    options: &UninstallOptions,
    out: &mut Printer<W>,
) -> Result<(), InstallError> {
    let values = Values {
        namespace: options.namespace.clone(),
        ..Values::default()
    };
    let mut objects = objects::parse(&manifest::render(&values)?)?;
    objects.reverse();
    let (cluster, version) = Cluster::connect(&options.target, options.timeout).await?;
    out.line(&format!(
        "uninstalling weft from {} (Kubernetes {version}): namespace {}",
        cluster.url, values.namespace
    ));

    // Where each object lives; None: the cluster does not serve its kind.
    let mut found = HashMap::new();
    let mut placed: Vec<(&Object, Option<Placed>)> = Vec::with_capacity(objects.len());
    for object in &objects {
        let key = format!("{}/{}", object.api_version, object.kind);
        if !found.contains_key(&key) {
            found.insert(key.clone(), cluster.resolve(&object.gvk()).await?);
        }
        let target = found[&key]
            .clone()
            .map(|(resource, caps)| Placed::new(object, resource, &caps, &values.namespace));
        placed.push((object, target));
    }

    let agents: Vec<Agent> = placed
        .iter()
        .filter_map(|(_, target)| agent(target.as_ref()?))
        .collect();
    if !options.cni_removed {
        for agent in &agents {
            let pods = agent_pods(&cluster, agent).await?;
            if !pods.is_empty() {
                return Err(InstallError::AgentsRunning {
                    daemonset: agent.label.clone(),
                    namespace: agent.namespace.clone(),
                    selector: agent.selector.clone(),
                    count: pods.len(),
                    pods: pods.join(", "),
                });
            }
        }
    }

    let (mut deleted, mut missing) = (0, 0);
    let mut kept = Vec::new();
    for (object, target) in placed.iter().filter(|(o, _)| o.kind != "Namespace") {
        if let Some(group) = object.crd_group().filter(|g| is_istio_group(g)) {
            out.line(&format!(
                "{}: kept (a CRD of {group}: Istio's tools and your configuration use it)",
                object.label()
            ));
            kept.push(object.label());
            continue;
        }
        let Some(target) = target else {
            out.line(&format!(
                "{}: not found (the cluster does not serve {} {})",
                object.label(),
                object.api_version,
                object.kind
            ));
            missing += 1;
            continue;
        };
        if delete(&cluster, target).await? {
            out.line(&format!("{}: deleted", target.describe()));
            deleted += 1;
        } else {
            out.line(&format!("{}: not found", target.describe()));
            missing += 1;
        }
    }

    let deadline = Instant::now() + options.timeout;
    for agent in &agents {
        wait_for_pods_gone(&cluster, agent, options.timeout, deadline, out).await?;
    }

    for (object, target) in placed.iter().filter(|(o, _)| o.kind == "Namespace") {
        let Some(target) = target else { continue };
        match namespace(&cluster, object, target).await? {
            Namespace::Deleted => {
                out.line(&format!("{}: deleted", object.label()));
                deleted += 1;
            }
            Namespace::NotFound => {
                out.line(&format!("{}: not found", object.label()));
                missing += 1;
            }
            Namespace::Kept(why) => {
                out.line(&format!("{}: kept ({why})", object.label()));
                kept.push(object.label());
            }
        }
    }

    let kept = match kept.as_slice() {
        [] => String::new(),
        kept => format!("; kept {}", kept.join(", ")),
    };
    out.line(&format!(
        "weft is uninstalled from namespace {}: {deleted} deleted, {missing} not found{kept}",
        values.namespace
    ));
    Ok(())
}

/// Groups whose CRDs stay: deleting a CRD deletes every object of it.
fn is_istio_group(group: &str) -> bool {
    group == "istio.io" || group.ends_with(".istio.io") || group == "gateway.networking.k8s.io"
}

/// The DaemonSet `target` as an agent whose pods are waited for.
fn agent(target: &Placed) -> Option<Agent> {
    if target.object.kind != "DaemonSet" || target.resource.group != "apps" {
        return None;
    }
    let labels = target
        .object
        .body
        .pointer("/spec/selector/matchLabels")?
        .as_object()?;
    let selector: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    (!selector.is_empty()).then(|| Agent {
        label: target.object.label(),
        namespace: target.namespace.clone().unwrap_or_default(),
        selector: selector.join(","),
    })
}

/// Names of the pods of `agent`, terminating ones included.
async fn agent_pods(cluster: &Cluster, agent: &Agent) -> Result<Vec<String>, InstallError> {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &agent.namespace)
        .list(&ListParams::default().labels(&agent.selector))
        .await
        .map_err(cluster.fail(format!(
            "list pods -l {} in namespace {}",
            agent.selector, agent.namespace
        )))?;
    Ok(pods
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect())
}

/// Deletes one object (its dependents in the background, as kubectl
/// does); false if it did not exist.
async fn delete(cluster: &Cluster, target: &Placed<'_>) -> Result<bool, InstallError> {
    match target
        .api(&cluster.client)
        .delete(&target.object.name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(cluster.fail(target.action("delete"))(error)),
    }
}

/// Waits until `agent` has no pods left, printing how many when it changes.
async fn wait_for_pods_gone<W: Write>(
    cluster: &Cluster,
    agent: &Agent,
    timeout: Duration,
    deadline: Instant,
    out: &mut Printer<W>,
) -> Result<(), InstallError> {
    let mut last = None;
    loop {
        let pods = agent_pods(cluster, agent).await?;
        if pods.is_empty() {
            out.line(&format!(
                "{} ({}): no pods left",
                agent.label, agent.namespace
            ));
            return Ok(());
        }
        let progress = format!(
            "waiting for {} pod(s) of {} to terminate: {}...",
            pods.len(),
            agent.label,
            pods.join(", ")
        );
        if out.is_terminal() || last.as_ref() != Some(&progress) {
            out.progress(&progress);
        }
        last = Some(progress);
        let now = Instant::now();
        if now >= deadline {
            out.finish();
            return Err(InstallError::PodsRemain {
                timeout: Human(timeout),
                daemonset: format!("{} ({})", agent.label, agent.namespace),
                pods: pods.join(", "),
            });
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

enum Namespace {
    Deleted,
    NotFound,
    Kept(String),
}

/// Deletes the namespace unless [`why_keep`] finds a reason not to.
async fn namespace(
    cluster: &Cluster,
    object: &Object,
    target: &Placed<'_>,
) -> Result<Namespace, InstallError> {
    let Some(live) = target
        .api(&cluster.client)
        .get_opt(&object.name)
        .await
        .map_err(cluster.fail(target.action("get")))?
    else {
        return Ok(Namespace::NotFound);
    };
    if let Some(why) = why_keep(object, &live.metadata.labels.unwrap_or_default()) {
        return Ok(Namespace::Kept(why));
    }
    if delete(cluster, target).await? {
        Ok(Namespace::Deleted)
    } else {
        Ok(Namespace::NotFound)
    }
}

/// Why the namespace `object` must stay, if it must: deleting a namespace
/// deletes everything in it, and `istio-system` may hold more than weft.
/// It goes only when it is not one every cluster has and carries every
/// label the manifests put on it.
fn why_keep(object: &Object, live_labels: &BTreeMap<String, String>) -> Option<String> {
    let name = &object.name;
    if SYSTEM_NAMESPACES.contains(&name.as_str()) {
        return Some("every cluster has it".into());
    }
    let markers: Vec<(&str, &str)> = object
        .labels()
        .into_iter()
        .filter(|(key, _)| *key != NAME_LABEL)
        .collect();
    if markers.is_empty() {
        return Some(format!(
            "the manifests put no label on it that marks it as weft's, and it may hold more than weft; `kubectl delete namespace {name}` deletes it and everything in it"
        ));
    }
    markers
        .iter()
        .find(|(key, value)| live_labels.get(*key).map(String::as_str) != Some(*value))
        .map(|(key, value)| {
            format!("it lacks the label {key}={value} that weftctl install puts on it")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_crds_are_recognised() {
        for group in [
            "networking.istio.io",
            "security.istio.io",
            "gateway.networking.k8s.io",
        ] {
            assert!(is_istio_group(group), "{group}");
        }
        for group in ["weft.dev", "apps", "notistio.io"] {
            assert!(!is_istio_group(group), "{group}");
        }
    }

    fn namespace(yaml_labels: &str) -> Object {
        let yaml =
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft\n{yaml_labels}");
        objects::parse(&yaml).unwrap().remove(0)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_namespace_goes_only_when_marked_as_weft_s() {
        let marked = namespace("  labels:\n    app.kubernetes.io/part-of: weft\n");
        assert_eq!(
            why_keep(&marked, &labels(&[("app.kubernetes.io/part-of", "weft")])),
            None
        );
        assert_eq!(
            why_keep(&marked, &labels(&[("app.kubernetes.io/part-of", "istio")])).unwrap(),
            "it lacks the label app.kubernetes.io/part-of=weft that weftctl install puts on it"
        );
        // Kubernetes' own name label marks nothing.
        let unmarked = namespace("  labels:\n    kubernetes.io/metadata.name: weft\n");
        let why = why_keep(
            &unmarked,
            &labels(&[("kubernetes.io/metadata.name", "weft")]),
        );
        assert!(why.unwrap().starts_with("the manifests put no label on it"));
        let mut system = marked.clone();
        system.name = "kube-system".into();
        assert_eq!(
            why_keep(&system, &labels(&[("app.kubernetes.io/part-of", "weft")])).unwrap(),
            "every cluster has it"
        );
    }
}
