//! Resolving what routes name: destination hosts to services and ports,
//! subsets to endpoints, source labels to workloads, delegates to their
//! VirtualServices. Records what a route depended on, so that it is
//! compiled again when that changes.

use std::{collections::BTreeMap, sync::Arc};

use weft_proto::route::{self as pb, EndpointSet};

use super::{Context, L7, registry::candidates, route::Resolve};
use crate::kinds::{
    Object, ObjectKey, ServiceEntry, VirtualService, istio, service_entry::WorkloadEntrySpec,
};

pub struct Resolver<'a, 'b> {
    pub l7: &'a L7,
    pub cx: &'a Context<'b>,
    /// Every FQDN a destination could have meant.
    pub deps: Vec<String>,
    /// Whether a match selects sources by labels.
    pub uses_sources: bool,
    /// Every VirtualService a route delegated to, found or not.
    pub delegates: Vec<ObjectKey>,
}

impl Resolve for Resolver<'_, '_> {
    fn destination(&mut self, d: &istio::Destination, namespace: &str) -> pb::Destination {
        let suffix = &self.cx.config.domain_suffix;
        let forms = candidates(&d.host, namespace, suffix);
        let host = self.l7.registry.resolve(&d.host, namespace, suffix);
        self.deps.extend(forms);
        let mut out = pb::Destination {
            host: host.clone(),
            subset: d.subset.clone(),
            port: d.port.map_or(0, |p| p.number),
            ..Default::default()
        };
        let Some(owner) = self.l7.registry.owner(&host) else {
            return out;
        };
        out.service = format!("{}/{host}", owner.namespace);
        let subset_labels = (!d.subset.is_empty())
            .then(|| self.subset_labels(&host, &d.subset, namespace, &owner.namespace));
        match self.cx.objects.get(&owner.object) {
            Some(Object::Service(svc)) => {
                let tcp: Vec<u16> = svc
                    .spec
                    .ports
                    .iter()
                    .filter(|p| p.is_tcp())
                    .map(|p| p.port)
                    .collect();
                if out.port == 0 && tcp.len() == 1 {
                    out.port = u32::from(tcp[0]);
                }
                if let Some(labels) = subset_labels {
                    out.endpoints = Some(EndpointSet {
                        workload_uids: labels
                            .map(|l| self.service_endpoints(&out.service, &l))
                            .unwrap_or_default(),
                        addresses: Vec::new(),
                    });
                }
            }
            Some(Object::ServiceEntry(se)) => {
                if out.port == 0 && se.spec.ports.len() == 1 {
                    out.port = se.spec.ports[0].number;
                }
                let labels = match subset_labels {
                    None => Some(BTreeMap::new()),
                    Some(l) => l,
                };
                out.endpoints = Some(match labels {
                    Some(l) => self.entry_endpoints(se, out.port, &l),
                    None => EndpointSet::default(),
                });
            }
            _ => {}
        }
        out
    }

    fn source_workloads(
        &mut self,
        labels: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Vec<String> {
        self.uses_sources = true;
        let mut uids: Vec<String> = self
            .l7
            .pods
            .iter()
            .filter(|(k, p)| {
                (namespace.is_empty() || k.namespace == namespace)
                    && p.has_workload
                    && includes(&p.pod.metadata.labels, labels)
            })
            .map(|(k, _)| self.uid(k))
            .collect();
        uids.sort();
        uids
    }

    fn delegate(&mut self, namespace: &str, name: &str) -> Option<Arc<VirtualService>> {
        let key = ObjectKey {
            kind: "VirtualService",
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let found = match self.cx.objects.get(&key) {
            Some(Object::VirtualService(v)) if v.spec.hosts.is_empty() => Some(Arc::clone(v)),
            _ => None,
        };
        self.delegates.push(key);
        found
    }
}

impl Resolver<'_, '_> {
    /// The labels of `subset` of `host` in the DestinationRule that the
    /// route sees: the VirtualService's namespace's, else the service's,
    /// else the root namespace's. `None` when that rule does not define
    /// the subset (or there is no rule).
    fn subset_labels(
        &self,
        host: &str,
        subset: &str,
        vs_namespace: &str,
        service_namespace: &str,
    ) -> Option<BTreeMap<String, String>> {
        let groups = self.l7.rule_groups(self.cx, host);
        let root = self.cx.config.root_namespace.as_str();
        let (_, rules) = [vs_namespace, service_namespace, root]
            .iter()
            .find_map(|ns| groups.get(*ns))?;
        rules
            .iter()
            .flat_map(|r| &r.spec.subsets)
            .find(|s| s.name == subset)
            .map(|s| s.labels.clone())
    }

    /// The workloads of a Kubernetes Service whose labels include `labels`.
    fn service_endpoints(&self, service: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        let Some(members) = self.l7.members.get(service) else {
            return Vec::new();
        };
        let mut uids: Vec<String> = members
            .iter()
            .filter(|k| {
                self.l7
                    .pods
                    .get(*k)
                    .is_some_and(|p| p.has_workload && includes(&p.pod.metadata.labels, labels))
            })
            .map(|k| self.uid(k))
            .collect();
        uids.sort();
        uids
    }

    /// A ServiceEntry's endpoints whose labels include `labels`: its own
    /// `endpoints`, or what its workload selector picks in its namespace
    /// (WorkloadEntries and pods).
    fn entry_endpoints(
        &self,
        se: &ServiceEntry,
        port: u32,
        labels: &BTreeMap<String, String>,
    ) -> EndpointSet {
        let se_port = se
            .spec
            .ports
            .iter()
            .find(|p| p.number == port)
            .or_else(|| (se.spec.ports.len() == 1).then(|| &se.spec.ports[0]));
        let endpoint = |e: &WorkloadEntrySpec| pb::Endpoint {
            address: e.address.clone(),
            port: se_port
                .and_then(|p| e.ports.get(&p.name).copied().or(p.target_port))
                .unwrap_or(0),
            weight: e.weight.unwrap_or(0),
            labels: e.labels.clone(),
            locality: e.locality.clone(),
            service_account: e.service_account.clone(),
        };
        let mut out = EndpointSet::default();
        match &se.spec.workload_selector {
            None => {
                out.addresses = se
                    .spec
                    .endpoints
                    .iter()
                    .filter(|e| includes(&e.labels, labels))
                    .map(endpoint)
                    .collect();
            }
            Some(selector) => {
                let ns = se.metadata.namespace();
                for key in &self.l7.workload_entries {
                    if key.namespace != ns {
                        continue;
                    }
                    if let Some(Object::WorkloadEntry(we)) = self.cx.objects.get(key)
                        && includes(&we.spec.labels, &selector.labels)
                        && includes(&we.spec.labels, labels)
                    {
                        out.addresses.push(endpoint(&we.spec));
                    }
                }
                for key in self.cx.pods_by_ns.get(ns).into_iter().flatten() {
                    if let Some(p) = self.l7.pods.get(key)
                        && p.has_workload
                        && includes(&p.pod.metadata.labels, &selector.labels)
                        && includes(&p.pod.metadata.labels, labels)
                    {
                        out.workload_uids.push(self.uid(key));
                    }
                }
                out.workload_uids.sort();
            }
        }
        out
    }

    fn uid(&self, pod: &ObjectKey) -> String {
        format!(
            "{}//Pod/{}/{}",
            self.cx.config.cluster_id, pod.namespace, pod.name
        )
    }
}

/// Whether `labels` has every entry of `wanted`.
fn includes(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}
