//! The L7 configuration received from the control plane: each service's
//! routes (`weft.route.v1.RouteConfig`) and destination policy
//! (`weft.route.v1.DestinationPolicy`), compiled once when they arrive,
//! by the service key `<namespace>/<hostname>`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use super::{cluster::Policies, route::RouteTable};

/// Routes and policies by service key, with their xDS versions.
#[derive(Default)]
pub struct L7Config {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Arc<RouteTable>>,
    route_versions: HashMap<String, String>,
    policies: HashMap<String, Arc<Policies>>,
    policy_versions: HashMap<String, String>,
}

impl L7Config {
    /// The routes of a service; `None`: no VirtualService routes it (the
    /// default route applies).
    pub fn routes(&self, service: &str) -> Option<Arc<RouteTable>> {
        self.inner
            .read()
            .expect("l7 config lock")
            .routes
            .get(service)
            .cloned()
    }

    /// The destination policy of a service; `None`: no DestinationRule
    /// (defaults apply).
    pub fn policies(&self, service: &str) -> Option<Arc<Policies>> {
        self.inner
            .read()
            .expect("l7 config lock")
            .policies
            .get(service)
            .cloned()
    }

    /// Whether a VirtualService's `tcp`/`tls` routes or a DestinationRule
    /// apply to a service's L4 ports (`l4::steer` decides its
    /// connections).
    pub fn steers(&self, service: &str) -> bool {
        let inner = self.inner.read().expect("l7 config lock");
        inner.policies.contains_key(service)
            || inner.routes.get(service).is_some_and(|t| t.routes_l4())
    }

    /// Applies one xDS update of routes.
    pub fn apply_routes(&self, upserts: Vec<(String, String, RouteTable)>, removals: &[String]) {
        let mut inner = self.inner.write().expect("l7 config lock");
        for name in removals {
            inner.routes.remove(name);
            inner.route_versions.remove(name);
        }
        for (name, version, table) in upserts {
            inner.routes.insert(name.clone(), Arc::new(table));
            inner.route_versions.insert(name, version);
        }
    }

    /// Applies one xDS update of destination policies.
    pub fn apply_policies(&self, upserts: Vec<(String, String, Policies)>, removals: &[String]) {
        let mut inner = self.inner.write().expect("l7 config lock");
        for name in removals {
            inner.policies.remove(name);
            inner.policy_versions.remove(name);
        }
        for (name, version, policies) in upserts {
            inner.policies.insert(name.clone(), Arc::new(policies));
            inner.policy_versions.insert(name, version);
        }
    }

    /// Route name → version, for `initial_resource_versions`.
    pub fn route_versions(&self) -> HashMap<String, String> {
        self.inner
            .read()
            .expect("l7 config lock")
            .route_versions
            .clone()
    }

    /// Policy name → version, for `initial_resource_versions`.
    pub fn policy_versions(&self) -> HashMap<String, String> {
        self.inner
            .read()
            .expect("l7 config lock")
            .policy_versions
            .clone()
    }

    /// Everything held, for the admin API: each RouteConfig and
    /// DestinationPolicy as compiled, with its xDS version, by name.
    pub fn dump(&self) -> serde_json::Value {
        let inner = self.inner.read().expect("l7 config lock");
        let mut routes: Vec<(&String, &Arc<RouteTable>)> = inner.routes.iter().collect();
        routes.sort_by_key(|(name, _)| *name);
        let routes: Vec<serde_json::Value> = routes
            .into_iter()
            .map(|(name, table)| {
                let mut out = table.dump();
                out["resource"] = name.clone().into();
                out["version"] = inner.route_versions.get(name).cloned().into();
                out
            })
            .collect();
        let mut policies: Vec<(&String, &Arc<Policies>)> = inner.policies.iter().collect();
        policies.sort_by_key(|(name, _)| *name);
        let policies: Vec<serde_json::Value> = policies
            .into_iter()
            .map(|(name, p)| {
                serde_json::json!({
                    "name": name,
                    "version": inner.policy_versions.get(name),
                    "entries": p.dump(),
                })
            })
            .collect();
        serde_json::json!({ "routes": routes, "destination_policies": policies })
    }

    /// Every RouteConfig held, for the admin API's cluster dump.
    pub(crate) fn all_routes(&self) -> Vec<Arc<RouteTable>> {
        let inner = self.inner.read().expect("l7 config lock");
        inner.routes.values().cloned().collect()
    }
}
