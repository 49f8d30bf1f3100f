//! The L7 configuration received from the control plane: each service's
//! routes (`weft.route.v1.RouteConfig`) and destination policy
//! (`weft.route.v1.DestinationPolicy`), compiled once when they arrive,
//! by the service key `<namespace>/<hostname>`; and the default route's
//! retry policy (MeshConfig's `defaultHttpRetryPolicy`, the RouteConfig
//! [`MESH_DEFAULT_ROUTE`]) and the retries of requests to the apps
//! (`defaultInboundHttpRetryPolicy`, the RouteConfig
//! [`MESH_INBOUND_ROUTE`]).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use weft_proto::{MESH_DEFAULT_ROUTE, MESH_INBOUND_ROUTE};

use super::{
    cluster::Policies,
    route::{RetryPolicy, RouteTable},
};

/// Routes and policies by service key, with their xDS versions.
#[derive(Default)]
pub struct L7Config {
    inner: RwLock<Inner>,
}

struct Inner {
    routes: HashMap<String, Arc<RouteTable>>,
    route_versions: HashMap<String, String>,
    policies: HashMap<String, Arc<Policies>>,
    policy_versions: HashMap<String, String>,
    /// The default route's retries: MeshConfig's, else Istio's default.
    default_retry: Arc<RetryPolicy>,
    /// The retries of requests to the apps: MeshConfig's
    /// `defaultInboundHttpRetryPolicy`, else Istio's default.
    inbound_retry: Arc<RetryPolicy>,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            routes: HashMap::new(),
            route_versions: HashMap::new(),
            policies: HashMap::new(),
            policy_versions: HashMap::new(),
            default_retry: Arc::default(),
            inbound_retry: Arc::new(istio_inbound_retry()),
        }
    }
}

/// Istio's retries of requests to the apps, when MeshConfig sets none.
fn istio_inbound_retry() -> RetryPolicy {
    RetryPolicy::inbound(None, MESH_INBOUND_ROUTE).expect("no durations to refuse")
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

    /// The retries of the default route (a service no VirtualService
    /// routes, or none of whose routes is for the client).
    pub fn default_retry(&self) -> Arc<RetryPolicy> {
        Arc::clone(&self.inner.read().expect("l7 config lock").default_retry)
    }

    /// The retries of a request a destination's side sends to its app
    /// (on a port that is not gRPC).
    pub fn inbound_retry(&self) -> Arc<RetryPolicy> {
        Arc::clone(&self.inner.read().expect("l7 config lock").inbound_retry)
    }

    /// [`L7Config::routes`] for an HTTP request, and the default route's
    /// retries when the service has no routes, under one lock.
    pub fn http_routes(&self, service: &str) -> Result<Arc<RouteTable>, Arc<RetryPolicy>> {
        let inner = self.inner.read().expect("l7 config lock");
        match inner.routes.get(service) {
            Some(table) => Ok(Arc::clone(table)),
            None => Err(Arc::clone(&inner.default_retry)),
        }
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
            if name == MESH_DEFAULT_ROUTE {
                inner.default_retry = Arc::default();
            }
            if name == MESH_INBOUND_ROUTE {
                inner.inbound_retry = Arc::new(istio_inbound_retry());
            }
        }
        for (name, version, table) in upserts {
            if name == MESH_DEFAULT_ROUTE {
                inner.default_retry = Arc::new(table.default_retry());
            }
            if let Some(retry) = table.inbound_retry() {
                inner.inbound_retry = Arc::new(retry.clone());
            }
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

#[cfg(test)]
mod tests {
    use weft_proto::route as pb;

    use super::*;

    #[test]
    fn the_mesh_default_route_sets_the_default_retries() {
        let config = L7Config::default();
        assert_eq!(*config.default_retry(), RetryPolicy::default());
        let mesh_default = pb::RouteConfig {
            name: MESH_DEFAULT_ROUTE.into(),
            http: vec![pb::HttpRoute {
                retries: Some(pb::HttpRetry {
                    attempts: 0,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = RouteTable::compile(&mesh_default).expect("compiles");
        config.apply_routes(vec![(MESH_DEFAULT_ROUTE.into(), "1".into(), table)], &[]);
        assert_eq!(*config.default_retry(), RetryPolicy::none());
        // It is held like any RouteConfig (its version is sent on
        // reconnects), and routes no service.
        assert!(config.route_versions().contains_key(MESH_DEFAULT_ROUTE));
        assert!(!config.steers(MESH_DEFAULT_ROUTE));
        config.apply_routes(Vec::new(), &[MESH_DEFAULT_ROUTE.into()]);
        assert_eq!(*config.default_retry(), RetryPolicy::default());
    }

    #[test]
    fn the_mesh_inbound_route_sets_the_retries_to_the_apps() {
        let config = L7Config::default();
        let istio = RetryPolicy::inbound(None, MESH_INBOUND_ROUTE).unwrap();
        assert_eq!(*config.inbound_retry(), istio);
        let inbound = pb::RouteConfig {
            name: MESH_INBOUND_ROUTE.into(),
            http: vec![pb::HttpRoute {
                retries: Some(pb::HttpRetry {
                    attempts: 5,
                    retry_on: "connect-failure".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = RouteTable::compile(&inbound).expect("compiles");
        config.apply_routes(vec![(MESH_INBOUND_ROUTE.into(), "1".into(), table)], &[]);
        let set = config.inbound_retry();
        assert_eq!(
            (set.attempts, set.retry_on.to_string().as_str()),
            (5, "connect-failure")
        );
        // The outbound default is not touched, and removal restores
        // Istio's inbound default.
        assert_eq!(*config.default_retry(), RetryPolicy::default());
        config.apply_routes(Vec::new(), &[MESH_INBOUND_ROUTE.into()]);
        assert_eq!(*config.inbound_retry(), istio);
    }
}
