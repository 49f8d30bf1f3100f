//! What the admin API and the scrapes read of the enroller: the pods it
//! knows, their listeners, and what the proxy holds for them.

use std::sync::Arc;

use super::Enroller;
use crate::proxy::PodContext;

impl Enroller {
    /// How many pods are enrolled; `None` while an enrolment holds the
    /// pods (a scrape does not wait for it).
    pub fn enrolled_count(&self) -> Option<u64> {
        let pods = self.pods.try_lock().ok()?;
        Some(pods.values().filter(|p| p.enrolled.is_some()).count() as u64)
    }

    /// The pods known.
    pub async fn dump(&self) -> serde_json::Value {
        let pods = self.pods.lock().await;
        let mut list: Vec<serde_json::Value> = pods
            .values()
            .map(|p| {
                serde_json::json!({
                    "namespace": p.event.pod_namespace,
                    "name": p.event.pod_name,
                    "netns": p.event.netns,
                    "enrolled": p.enrolled.is_some(),
                    "identity": p.enrolled.as_ref().map(|e| e.context.identity().to_string()),
                })
            })
            .collect();
        list.sort_by_key(|v| v.to_string());
        serde_json::Value::Array(list)
    }

    /// The proxy's listeners in each enrolled pod, as bound.
    pub async fn dump_listeners(&self) -> serde_json::Value {
        let pods = self.pods.lock().await;
        let mut list: Vec<serde_json::Value> = pods
            .values()
            .filter_map(|p| Some((p, p.enrolled.as_ref()?)))
            .flat_map(|(p, e)| {
                e.listeners.iter().map(move |(what, addr)| {
                    serde_json::json!({
                        "pod": format!("{}/{}", p.event.pod_namespace, p.event.pod_name),
                        "name": what,
                        "address": addr.to_string(),
                        "netns": p.event.netns,
                    })
                })
            })
            .collect();
        list.sort_by_key(|v| (v["pod"].to_string(), v["address"].to_string()));
        serde_json::Value::Array(list)
    }

    /// The workload of the enrolled pod with this network namespace.
    pub fn workload_of_netns(&self, netns_cookie: u64) -> Option<Arc<crate::state::Workload>> {
        self.proxy
            .local_pods
            .by_netns_cookie(netns_cookie)
            .map(|pod| pod.workload.clone())
    }

    /// The pods enrolled here, as the proxy holds them.
    pub fn local_pods(&self) -> Vec<Arc<PodContext>> {
        self.proxy.local_pods.all()
    }

    /// The L7 clusters and their endpoints (see `l7::L7::dump_clusters`).
    pub fn dump_clusters(&self) -> serde_json::Value {
        self.proxy.l7.dump_clusters(&self.proxy.store)
    }
}
