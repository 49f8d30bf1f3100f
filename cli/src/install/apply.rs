//! `weftctl install`: render, look every kind up, apply in order with
//! server-side apply, then wait for the Deployments and DaemonSets to
//! roll out.

use std::{collections::HashMap, fmt, io::Write, time::Duration};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    discovery::ApiCapabilities,
};
use serde_json::Value;
use tokio::time::Instant;

use super::{
    Cluster, FIELD_MANAGER, Human, InstallError, POLL, Placed, Printer, Target,
    objects::{self, Object},
    rollout::{self, Rollout},
};
use crate::manifest::{self, Values};

/// What `weftctl install` was asked.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Namespace, image and trust domain, as `manifest generate` takes them.
    pub values: Values,
    pub target: Target,
    /// How long the rollout may take (also the longest single request, and
    /// how long a CRD of the manifests may take to be served).
    pub timeout: Duration,
    /// Wait for every Deployment and DaemonSet to roll out.
    pub wait: bool,
}

/// What server-side apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Created,
    Configured,
    Unchanged,
    /// A CustomResourceDefinition the cluster already had: left as it is
    /// (Istio's own, when Istio is installed).
    Kept,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Kept => "exists, kept",
        })
    }
}

type Found = (ApiResource, ApiCapabilities);

/// Applies the manifests rendered from `options.values` and, unless told
/// not to, waits for them to roll out; prints a line per object and per
/// rollout, and a summary.
pub async fn install<W: Write>(
    options: &InstallOptions,
    out: &mut Printer<W>,
) -> Result<(), InstallError> {
    let values = &options.values;
    let objects = objects::parse(&manifest::render(values)?)?;
    let (cluster, version) = Cluster::connect(&options.target, options.timeout).await?;
    out.line(&format!(
        "installing weft {} into {} (Kubernetes {version}): namespace {}, image {}, trust domain {}",
        env!("CARGO_PKG_VERSION"),
        cluster.url,
        values.namespace,
        values.image,
        values.trust_domain
    ));
    let start = Instant::now();

    // Every kind before the first write: one the cluster lacks stops the
    // install here, not halfway.
    let mut found: HashMap<String, Option<Found>> = HashMap::new();
    for object in &objects {
        let key = format!("{}/{}", object.api_version, object.kind);
        if !found.contains_key(&key) {
            let resource = lookup(&cluster, object, &objects).await?;
            found.insert(key.clone(), resource);
        }
    }

    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    let mut applied = Vec::with_capacity(objects.len());
    for (index, object) in objects.iter().enumerate() {
        let partial = |error| match index {
            0 => error,
            applied => InstallError::Partial {
                error: Box::new(error),
                applied,
                total: objects.len(),
            },
        };
        let key = format!("{}/{}", object.api_version, object.kind);
        let (resource, capabilities) = match found.get(&key).cloned().flatten() {
            Some(resource) => resource,
            None => {
                let resource = served_after_crd(&cluster, object, start + options.timeout)
                    .await
                    .map_err(partial)?;
                found.insert(key, Some(resource.clone()));
                resource
            }
        };
        let target = Placed::new(object, resource, &capabilities, &values.namespace);
        let outcome = apply(&cluster, &target).await.map_err(partial)?;
        out.line(&format!("{}: {outcome}", target.describe()));
        *counts.entry(outcome).or_default() += 1;
        applied.push(target);
    }

    let what = summary(&counts, applied.len());
    let workloads: Vec<&Placed> = applied.iter().filter(|p| is_workload(p)).collect();
    let names = list(workloads.iter().map(|p| p.object.label()));
    if !options.wait {
        out.line(&format!(
            "weft is applied in namespace {}: {what}; not waiting for {names} to roll out (--no-wait)",
            values.namespace
        ));
        return Ok(());
    }
    wait_for_rollouts(&cluster, &workloads, options.timeout, out).await?;
    out.line(&format!(
        "weft is installed in namespace {}: {what}; {names} rolled out",
        values.namespace
    ));
    Ok(())
}

/// The resource of `object`'s kind; None when a CustomResourceDefinition
/// of the manifests declares it (it is served once that is applied).
async fn lookup(
    cluster: &Cluster,
    object: &Object,
    objects: &[Object],
) -> Result<Option<Found>, InstallError> {
    let gvk = object.gvk();
    if let Some(found) = cluster.resolve(&gvk).await? {
        return Ok(Some(found));
    }
    if objects.iter().any(|o| o.declares(&gvk)) {
        return Ok(None);
    }
    Err(InstallError::UnknownKind {
        object: object.label(),
        kind: object.kind.clone(),
        api_version: object.api_version.clone(),
        why: format!(
            "a CRD the cluster lacks, or a Kubernetes release without {}; nothing was applied",
            object.api_version
        ),
    })
}

/// Waits for the kind of `object`, declared by a CRD applied just before,
/// to be served (the API server takes a moment to establish a CRD).
async fn served_after_crd(
    cluster: &Cluster,
    object: &Object,
    deadline: Instant,
) -> Result<Found, InstallError> {
    loop {
        if let Some(found) = cluster.resolve(&object.gvk()).await? {
            return Ok(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(InstallError::UnknownKind {
                object: object.label(),
                kind: object.kind.clone(),
                api_version: object.api_version.clone(),
                why: "its CustomResourceDefinition was applied but is not served yet; is it established? (`kubectl get crd`)".into(),
            });
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// Server-side applies one object; compares it before and after.
async fn apply(cluster: &Cluster, target: &Placed<'_>) -> Result<Outcome, InstallError> {
    let api = target.api(&cluster.client);
    let name = &target.object.name;
    let before = api
        .get_opt(name)
        .await
        .map_err(cluster.fail(target.action("get")))?;
    if before.is_some() && target.object.kind == "CustomResourceDefinition" {
        // Created only when missing: never take over someone else's CRD.
        return Ok(Outcome::Kept);
    }
    let mut body = target.object.body.clone();
    if let Some(namespace) = &target.namespace {
        body["metadata"]["namespace"] = Value::from(namespace.as_str());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api
        .patch(name, &params, &Patch::Apply(&body))
        .await
        .map_err(cluster.fail(target.action("patch (server-side apply)")))?;
    Ok(match before {
        None => Outcome::Created,
        Some(before) if content(&before) == content(&after) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    })
}

/// What an apply can change: the object without its status and without
/// the bookkeeping every write changes (resourceVersion, managedFields).
fn content(object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for bookkeeping in ["resourceVersion", "managedFields", "generation"] {
            metadata.remove(bookkeeping);
        }
    }
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
    }
    value
}

fn is_workload(target: &Placed) -> bool {
    target.resource.group == "apps"
        && matches!(target.object.kind.as_str(), "Deployment" | "DaemonSet")
}

/// Polls every workload until each has rolled out (as `kubectl rollout
/// status` decides), printing its progress when it changes.
async fn wait_for_rollouts<W: Write>(
    cluster: &Cluster,
    workloads: &[&Placed<'_>],
    timeout: Duration,
    out: &mut Printer<W>,
) -> Result<(), InstallError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pending: Vec<(&Placed, Option<String>)> =
        workloads.iter().map(|target| (*target, None)).collect();
    loop {
        let mut still = Vec::with_capacity(pending.len());
        for (target, last) in pending {
            match rollout_of(cluster, target).await {
                Ok(Rollout::Done) => out.line(&format!("{}: rolled out", target.describe())),
                Ok(Rollout::Waiting(progress)) => {
                    if !out.is_terminal() && last.as_ref() != Some(&progress) {
                        out.progress(&format!(
                            "waiting for {}: {progress}...",
                            target.object.label()
                        ));
                    }
                    still.push((target, Some(progress)));
                }
                Ok(Rollout::Failed(reason)) => {
                    out.finish();
                    return Err(InstallError::RolloutFailed {
                        label: target.object.label(),
                        namespace: target.namespace.clone().unwrap_or_default(),
                        reason,
                    });
                }
                Err(error) => {
                    out.finish();
                    return Err(error);
                }
            }
        }
        pending = still;
        let Some((first, Some(progress))) = pending.first() else {
            return Ok(());
        };
        let now = Instant::now();
        if out.is_terminal() {
            let more = match pending.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            out.progress(&format!(
                "waiting for {}: {progress}...{more} [{}s]",
                first.object.label(),
                (now - start).as_secs()
            ));
        }
        if now >= deadline {
            out.finish();
            return Err(InstallError::RolloutTimeout {
                timeout: Human(timeout),
                namespace: first.namespace.clone().unwrap_or_default(),
                pending: pending
                    .iter()
                    .map(|(target, progress)| {
                        format!(
                            "{} ({})",
                            target.object.label(),
                            progress.as_deref().unwrap_or("not checked")
                        )
                    })
                    .collect(),
                describe: pending
                    .iter()
                    .map(|(target, _)| target.object.label())
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// Where one Deployment's or DaemonSet's rollout stands now.
async fn rollout_of(cluster: &Cluster, target: &Placed<'_>) -> Result<Rollout, InstallError> {
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let name = &target.object.name;
    let client = cluster.client.clone();
    let rollout = if target.object.kind == "Deployment" {
        Api::<Deployment>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map(|d| d.as_ref().map(rollout::deployment))
    } else {
        Api::<DaemonSet>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map(|d| d.as_ref().map(rollout::daemonset))
    };
    rollout
        .map_err(cluster.fail(target.action("get")))?
        .ok_or_else(|| InstallError::Vanished {
            object: target.describe(),
        })
}

/// `9 objects (3 created, 5 configured, 1 unchanged)`.
fn summary(counts: &HashMap<Outcome, usize>, total: usize) -> String {
    let parts: Vec<String> = [
        Outcome::Created,
        Outcome::Configured,
        Outcome::Unchanged,
        Outcome::Kept,
    ]
    .iter()
    .filter_map(|o| counts.get(o).map(|n| format!("{n} {o}")))
    .collect();
    format!("{total} objects ({})", parts.join(", "))
}

/// `a`, `a and b`, `a, b and c`; `nothing` when empty.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_as_sentences() {
        let counts = HashMap::from([(Outcome::Created, 2), (Outcome::Unchanged, 1)]);
        assert_eq!(summary(&counts, 3), "3 objects (2 created, 1 unchanged)");
        let names = |n: usize| list((0..n).map(|i| format!("w{i}")));
        assert_eq!(names(0), "nothing");
        assert_eq!(names(1), "w0");
        assert_eq!(names(2), "w0 and w1");
        assert_eq!(names(3), "w0, w1 and w2");
    }
}
