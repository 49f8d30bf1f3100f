//! Where a route sends requests: resolved destinations, their weights, and
//! mirrors.

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_proto::route as pb;

use super::RouteError;
use super::fault;
use super::headers::HeaderOps;

/// A resolved destination (the proto's `Destination`); cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The fully qualified host.
    pub host: String,
    /// The subset, "" for the whole service.
    pub subset: String,
    /// The service port; 0: the port the request was sent to.
    pub port: u16,
    /// The service's resource name (`<namespace>/<hostname>`); "": no such
    /// service, answer 503 `NC` (no cluster).
    pub service: String,
    /// The endpoints traffic may go to; `None`: every endpoint of the
    /// service.
    pub endpoints: Option<Arc<EndpointSet>>,
}

/// A set of endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Workloads, by uid (`istio.workload.Workload.uid`).
    pub workload_uids: Vec<String>,
    /// Endpoints that are not workloads (ServiceEntry endpoints).
    pub addresses: Vec<AddressEndpoint>,
}

/// An endpoint given by address (a ServiceEntry's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressEndpoint {
    /// An IP address, a DNS name, or a "unix://" path.
    pub address: String,
    /// The port to connect to; 0: the destination port itself.
    pub port: u16,
    /// Load-balancing weight, at least 1 (the proto's 0 means 1).
    pub weight: u32,
    /// The endpoint's labels.
    pub labels: BTreeMap<String, String>,
    /// "region/zone/subzone", or "".
    pub locality: String,
    /// The service account it runs as, or "".
    pub service_account: String,
}

/// One of a route's destinations.
#[derive(Clone, Debug)]
pub struct WeightedDestination {
    /// Where requests go.
    pub destination: Destination,
    /// Relative weight; 0: never chosen (when the route has others).
    pub weight: u32,
    /// Header edits for this destination only.
    pub headers: HeaderOps,
}

/// A mirror: a copy of some requests is sent there, its answer dropped.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// Where copies go.
    pub destination: Destination,
    /// Of requests, 0-100 (fractions allowed).
    pub percentage: f64,
}

impl Mirror {
    /// Whether to mirror this request, given a uniform random `roll`.
    pub fn sampled(&self, roll: u32) -> bool {
        fault::roll(self.percentage, roll)
    }
}

fn port(p: u32, route: &str, field: &str) -> Result<u16, RouteError> {
    u16::try_from(p).map_err(|_| RouteError::Invalid {
        route: route.to_string(),
        field: field.to_string(),
        reason: format!("{p} is not a port"),
    })
}

impl Destination {
    pub(crate) fn compile(
        d: Option<&pb::Destination>,
        route: &str,
        field: &str,
    ) -> Result<Self, RouteError> {
        let d = d.ok_or_else(|| RouteError::Invalid {
            route: route.to_string(),
            field: field.to_string(),
            reason: "no destination".to_string(),
        })?;
        let endpoints = match &d.endpoints {
            None => None,
            Some(set) => {
                let addresses = set
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        Ok(AddressEndpoint {
                            address: e.address.clone(),
                            port: port(
                                e.port,
                                route,
                                &format!("{field}.endpoints.addresses[{i}].port"),
                            )?,
                            weight: e.weight.max(1),
                            labels: e.labels.clone(),
                            locality: e.locality.clone(),
                            service_account: e.service_account.clone(),
                        })
                    })
                    .collect::<Result<_, RouteError>>()?;
                Some(Arc::new(EndpointSet {
                    workload_uids: set.workload_uids.clone(),
                    addresses,
                }))
            }
        };
        Ok(Self {
            host: d.host.clone(),
            subset: d.subset.clone(),
            port: port(d.port, route, &format!("{field}.port"))?,
            service: d.service.clone(),
            endpoints,
        })
    }
}

impl WeightedDestination {
    pub(crate) fn compile(
        d: &pb::HttpRouteDestination,
        route: &str,
        field: &str,
    ) -> Result<Self, RouteError> {
        let weight = u32::try_from(d.weight).map_err(|_| RouteError::Invalid {
            route: route.to_string(),
            field: format!("{field}.weight"),
            reason: format!("negative weight {}", d.weight),
        })?;
        Ok(Self {
            destination: Destination::compile(
                d.destination.as_ref(),
                route,
                &format!("{field}.destination"),
            )?,
            weight,
            headers: HeaderOps::compile(d.headers.as_ref(), route, &format!("{field}.headers"))?,
        })
    }
}

// === impl dump (the admin API's config dump) ===

impl Destination {
    /// Host, subset, port and service key; a subset's endpoints as the
    /// route carries them (workload uids, addresses).
    pub fn dump(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "host": self.host,
            "subset": self.subset,
            "port": self.port,
            "service": self.service,
        });
        if let Some(set) = &self.endpoints {
            let addresses: Vec<String> = set
                .addresses
                .iter()
                .map(|a| format!("{}:{}", a.address, a.port))
                .collect();
            out["endpoints"] = serde_json::json!({
                "workload_uids": set.workload_uids,
                "addresses": addresses,
            });
        }
        out
    }
}

impl WeightedDestination {
    /// [`Destination::dump`] with the weight.
    pub fn dump(&self) -> serde_json::Value {
        let mut out = self.destination.dump();
        out["weight"] = self.weight.into();
        out
    }
}

/// Weighted choice among `dests` with a uniform random `roll`. A lone
/// destination takes all traffic whatever its weight (Istio); otherwise
/// zero weights are never chosen, and `None` when every weight is zero.
pub(crate) fn pick(dests: &[WeightedDestination], roll: u32) -> Option<&WeightedDestination> {
    if let [only] = dests {
        return Some(only);
    }
    let total: u128 = dests.iter().map(|d| u128::from(d.weight)).sum();
    // Scale the roll to [0, total): no modulo bias.
    let mut x = (u128::from(roll) * total) >> 32;
    for d in dests {
        let w = u128::from(d.weight);
        if x < w {
            return Some(d);
        }
        x -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, weight: u32) -> WeightedDestination {
        WeightedDestination {
            destination: Destination {
                host: host.into(),
                subset: String::new(),
                port: 0,
                service: String::new(),
                endpoints: None,
            },
            weight,
            headers: HeaderOps::default(),
        }
    }

    /// How often each destination is picked over `n` evenly spread rolls.
    fn counts(dests: &[WeightedDestination], n: u64) -> Vec<u64> {
        let mut counts = vec![0; dests.len()];
        let step = (1u64 << 32) / n;
        for i in 0..n {
            let roll = u32::try_from(i * step).unwrap();
            let picked = pick(dests, roll).unwrap();
            let at = dests.iter().position(|d| std::ptr::eq(d, picked)).unwrap();
            counts[at] += 1;
        }
        counts
    }

    #[test]
    fn distribution_follows_weights() {
        let dests = [dest("a", 25), dest("b", 0), dest("c", 75)];
        let c = counts(&dests, 100_000);
        assert!((24_500..=25_500).contains(&c[0]), "{c:?}");
        assert_eq!(c[1], 0);
        assert!((74_500..=75_500).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn pseudo_random_rolls() {
        let dests = [dest("a", 10), dest("b", 90)];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut a = 0;
        for _ in 0..100_000 {
            if pick(&dests, rng.u32(..)).unwrap().destination.host == "a" {
                a += 1;
            }
        }
        assert!((9_000..=11_000).contains(&a), "{a}");
    }

    #[test]
    fn any_positive_sum() {
        let dests = [dest("a", 1), dest("b", 2)];
        let c = counts(&dests, 30_000);
        assert!((9_800..=10_200).contains(&c[0]), "{c:?}");
        let dests = [dest("a", u32::MAX), dest("b", u32::MAX)];
        assert_eq!(pick(&dests, 0).unwrap().destination.host, "a");
        assert_eq!(pick(&dests, u32::MAX).unwrap().destination.host, "b");
    }

    #[test]
    fn edges() {
        assert!(pick(&[], 0).is_none());
        assert!(pick(&[dest("a", 0), dest("b", 0)], 5).is_none());
        // A lone destination, even unweighted.
        assert_eq!(
            pick(&[dest("a", 0)], u32::MAX).unwrap().destination.host,
            "a"
        );
        let dests = [dest("a", 50), dest("b", 50)];
        assert_eq!(pick(&dests, 0).unwrap().destination.host, "a");
        assert_eq!(pick(&dests, u32::MAX).unwrap().destination.host, "b");
    }

    #[test]
    fn compile_destination() {
        let d = pb::Destination {
            host: "r.ns.svc.cluster.local".into(),
            subset: "v1".into(),
            port: 9080,
            service: "ns/r.ns.svc.cluster.local".into(),
            endpoints: Some(pb::EndpointSet {
                workload_uids: vec!["w1".into()],
                addresses: vec![pb::Endpoint {
                    address: "10.0.0.1".into(),
                    port: 0,
                    weight: 0,
                    ..Default::default()
                }],
            }),
        };
        let c = Destination::compile(Some(&d), "r", "route[0].destination").unwrap();
        assert_eq!(c.port, 9080);
        let eps = c.endpoints.unwrap();
        assert_eq!(eps.workload_uids, ["w1"]);
        assert_eq!(eps.addresses[0].weight, 1);
        let bad = pb::Destination { port: 70_000, ..d };
        let err =
            Destination::compile(Some(&bad), "route 0 of a/b", "route[0].destination").unwrap_err();
        assert_eq!(
            err.to_string(),
            "route 0 of a/b: route[0].destination.port: 70000 is not a port"
        );
        let err =
            Destination::compile(None, "route 0 of a/b", "mirrors[1].destination").unwrap_err();
        assert_eq!(
            err.to_string(),
            "route 0 of a/b: mirrors[1].destination: no destination"
        );
    }
}
