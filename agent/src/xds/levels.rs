//! What weft-control's per-namespace Telemetry policies share
//! (`weft.telemetry.v1.TracingPolicy`, `MetricsPolicy`): one resource per
//! namespace, the root namespace's carrying the mesh-wide part (`mesh`),
//! each with its namespace-wide rules and the rules of the Telemetries
//! that pick workloads (`workloads`, with their uids). [`Levels`] keeps
//! them as received and finds, for one workload, Istio's levels in order:
//! the root namespace's rules, its own namespace's, then every Telemetry
//! that picks it, oldest first (istiod appends them all; the later ones
//! override the earlier ones in the merge).

use std::collections::HashMap;

use weft_proto::telemetry::{MetricsPolicy, MetricsRules, TracingPolicy, TracingRules};

/// A per-namespace policy of the Telemetry API.
pub trait Leveled {
    type Rules;
    /// The root namespace's (it carries the mesh-wide part).
    fn is_root(&self) -> bool;
    fn namespace_rules(&self) -> Option<&Self::Rules>;
    /// The uids each workload rule picks, in order.
    fn picks(&self) -> impl Iterator<Item = &[String]>;
    fn workload_rules(&self, i: usize) -> Option<&Self::Rules>;
}

macro_rules! leveled {
    ($policy:ty, $rules:ty) => {
        impl Leveled for $policy {
            type Rules = $rules;

            fn is_root(&self) -> bool {
                self.mesh.is_some()
            }

            fn namespace_rules(&self) -> Option<&$rules> {
                self.namespace_rules.as_ref()
            }

            fn picks(&self) -> impl Iterator<Item = &[String]> {
                self.workloads.iter().map(|w| w.workload_uids.as_slice())
            }

            fn workload_rules(&self, i: usize) -> Option<&$rules> {
                self.workloads.get(i)?.rules.as_ref()
            }
        }
    };
}

leveled!(TracingPolicy, TracingRules);
leveled!(MetricsPolicy, MetricsRules);

/// One namespace's policy, as received.
#[derive(Debug, Clone)]
struct Namespace<P> {
    policy: P,
    /// Workload uid → the indexes of the workload rules that pick it, in
    /// order.
    workloads: HashMap<String, Vec<usize>>,
}

/// The policies of one kind by namespace.
#[derive(Debug)]
pub struct Levels<P> {
    namespaces: HashMap<String, Namespace<P>>,
    versions: HashMap<String, String>,
    root: Option<String>,
}

impl<P> Default for Levels<P> {
    fn default() -> Self {
        Levels {
            namespaces: HashMap::new(),
            versions: HashMap::new(),
            root: None,
        }
    }
}

impl<P: Leveled> Levels<P> {
    /// Applies one xDS update.
    pub fn apply(&mut self, upserts: Vec<(String, String, P)>, removals: &[String]) {
        for name in removals {
            self.namespaces.remove(name);
            self.versions.remove(name);
            if self.root.as_deref() == Some(name) {
                self.root = None;
            }
        }
        for (name, version, policy) in upserts {
            if policy.is_root() {
                self.root = Some(name.clone());
            } else if self.root.as_deref() == Some(name.as_str()) {
                self.root = None;
            }
            let mut workloads: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, uids) in policy.picks().enumerate() {
                for uid in uids {
                    workloads.entry(uid.clone()).or_default().push(i);
                }
            }
            self.namespaces
                .insert(name.clone(), Namespace { policy, workloads });
            self.versions.insert(name, version);
        }
    }

    /// The xDS versions held, for a reconnecting stream.
    pub fn versions(&self) -> &HashMap<String, String> {
        &self.versions
    }

    /// Every namespace's policy.
    pub fn policies(&self) -> impl Iterator<Item = &P> {
        self.namespaces.values().map(|n| &n.policy)
    }

    /// The root namespace's policy, once received.
    pub fn root(&self) -> Option<&P> {
        Some(&self.namespaces.get(self.root.as_deref()?)?.policy)
    }

    /// The rules that apply to the workload `uid` of `namespace`, from
    /// the widest: the root namespace's, the namespace's own (unless it is
    /// the root), then each Telemetry that picks the workload, oldest
    /// first.
    pub fn levels<'a>(
        &'a self,
        namespace: &str,
        uid: &str,
    ) -> impl Iterator<Item = &'a P::Rules> + use<'a, P> {
        let root = self.root.as_deref();
        let own = self.namespaces.get(namespace);
        let picked = own
            .and_then(|n| n.workloads.get(uid))
            .map_or(&[][..], Vec::as_slice);
        self.root()
            .and_then(Leveled::namespace_rules)
            .into_iter()
            .chain(
                own.filter(|_| root != Some(namespace))
                    .and_then(|n| n.policy.namespace_rules()),
            )
            .chain(
                picked
                    .iter()
                    .filter_map(move |i| own?.policy.workload_rules(*i)),
            )
    }
}
