//! The Telemetries by namespace, shared by the compilers of the
//! Telemetry API's parts (`access_log`, `trace_policy`,
//! `metrics_policy`): which namespaces have any, and a namespace's as
//! istiod applies them ([`Scoped`]: one namespace-wide Telemetry, the
//! oldest, for all three parts; then those picking workloads, oldest
//! first).

use std::collections::{BTreeSet, HashMap};

use prost::Message;

use super::{Resources, XdsResource};
use crate::kinds::{Object, ObjectKey, Telemetry};

/// Puts `namespace`'s compiled policy of `type_url` into `resources`, or
/// takes it out when there is none; the names that changed are added to
/// `names` (they are pushed).
pub fn publish<M: Message>(
    namespace: &str,
    policy: Option<M>,
    type_url: &'static str,
    resources: &mut Resources,
    names: &mut Vec<(&'static str, String)>,
) {
    let changed = match policy {
        Some(policy) => {
            let bytes = policy.encode_to_vec();
            resources.put(XdsResource::new(
                namespace.to_string(),
                type_url,
                bytes.clone(),
                &bytes,
            ))
        }
        None => resources.remove(namespace),
    };
    if changed {
        names.push((type_url, namespace.to_string()));
    }
}

/// The warnings last logged for each namespace's policy: a namespace is
/// compiled again on every change of its pods, and only what is new is
/// logged.
#[derive(Debug, Default)]
pub struct Warned(HashMap<String, Vec<String>>);

impl Warned {
    /// Logs the warnings of `namespace` (`part`: `tracing`, `metrics`,
    /// `access logging`, `Telemetry`)
    /// that were not logged for its previous policy.
    pub fn log(&mut self, namespace: &str, part: &str, warnings: Vec<String>) {
        let before = self.0.remove(namespace).unwrap_or_default();
        for w in warnings.iter().filter(|w| !before.contains(w)) {
            tracing::warn!(namespace = %namespace, "{part}: {w}");
        }
        if !warnings.is_empty() {
            self.0.insert(namespace.to_string(), warnings);
        }
    }
}

/// The Telemetries' keys, by namespace.
#[derive(Debug, Default)]
pub struct TelemetryIndex {
    by_namespace: HashMap<String, BTreeSet<ObjectKey>>,
}

impl TelemetryIndex {
    /// Keeps the index up to date (other kinds are ignored).
    pub fn index(&mut self, key: &ObjectKey, present: bool) {
        if key.kind != "Telemetry" {
            return;
        }
        let set = self.by_namespace.entry(key.namespace.clone()).or_default();
        if present {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }

    /// Whether a namespace has Telemetries (a pod change there may change
    /// which workloads they pick).
    pub fn has_telemetry(&self, namespace: &str) -> bool {
        self.by_namespace
            .get(namespace)
            .is_some_and(|s| !s.is_empty())
    }

    /// The namespaces that have Telemetries.
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.by_namespace
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(ns, _)| ns)
    }

    /// A namespace's Telemetries as Istio applies them (see [`Scoped`]).
    pub fn scoped<'a>(
        &self,
        namespace: &str,
        objects: &'a HashMap<ObjectKey, Object>,
    ) -> Scoped<'a> {
        let mut telemetries: Vec<&Telemetry> = self
            .by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| match objects.get(k) {
                Some(Object::Telemetry(t)) => Some(t.as_ref()),
                _ => None,
            })
            .collect();
        telemetries.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        let (mut wide, selecting): (Vec<&Telemetry>, Vec<&Telemetry>) =
            telemetries.into_iter().partition(|t| namespace_wide(t));
        let namespace_wide = (!wide.is_empty()).then(|| wide.remove(0));
        Scoped {
            namespace_wide,
            ignored: wide,
            selecting,
        }
    }
}

/// A namespace's Telemetries, oldest first (then by name), as istiod
/// takes them (`applicableTelemetries`).
#[derive(Debug, Default)]
pub struct Scoped<'a> {
    /// The namespace-wide one (in the root namespace: mesh-wide): the
    /// oldest Telemetry without a selector (or with empty `matchLabels`)
    /// or targetRef, whatever it sets. Where it sets no `metrics` (no
    /// `tracing`, no `accessLogging`), the namespace has none, even when a
    /// newer namespace-wide Telemetry sets some.
    pub namespace_wide: Option<&'a Telemetry>,
    /// The newer namespace-wide Telemetries: Istio ignores them.
    pub ignored: Vec<&'a Telemetry>,
    /// Those with a selector or targetRef, each applying to the workloads
    /// it picks, in this order.
    pub selecting: Vec<&'a Telemetry>,
}

impl Scoped<'_> {
    /// The warning for a namespace with several namespace-wide
    /// Telemetries, naming the one that applies and those ignored.
    pub fn ignored_warning(&self, namespace: &str) -> Option<String> {
        let applies = self.namespace_wide?;
        if self.ignored.is_empty() {
            return None;
        }
        let ignored: Vec<String> = self
            .ignored
            .iter()
            .map(|t| format!("{namespace}/{}", t.metadata.name))
            .collect();
        Some(format!(
            "several namespace-wide Telemetries: {namespace}/{} applies; {} {} ignored (istiod applies only the oldest Telemetry without a selector or targetRef, to metrics, tracing and access logging alike)",
            applies.metadata.name,
            ignored.join(", "),
            if ignored.len() == 1 { "is" } else { "are" }
        ))
    }
}

/// Whether a Telemetry applies to its whole namespace: no `selector` (or
/// one with empty `matchLabels`) and no `targetRef(s)`.
pub fn namespace_wide(t: &Telemetry) -> bool {
    let spec = &t.spec;
    spec.selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
        && spec.target_ref.is_none()
        && spec.target_refs.is_empty()
}
