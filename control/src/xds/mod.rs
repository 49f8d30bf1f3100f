//! Delta xDS (`envoy.service.discovery.v3.AggregatedDiscoveryService`
//! `/DeltaAggregatedResources`). Seven types are served on the one stream:
//!
//! | type URL | resource names | from |
//! | --- | --- | --- |
//! | `type.googleapis.com/istio.workload.Address` | workload uid (`Kubernetes//Pod/<ns>/<name>`), or `<ns>/<hostname>` for a service | Pods, Services, Namespaces |
//! | `type.googleapis.com/istio.security.Authorization` | `<ns>/<name>`: an AuthorizationPolicy's own name; `<root>/istio_converted_static_strict` and `<ns>/converted_peer_authentication_<name>` for PeerAuthentication | AuthorizationPolicy, PeerAuthentication (see `model::authorization`, `model::peer_authentication`) |
//! | `type.googleapis.com/weft.route.v1.RouteConfig` | `<ns>/<hostname>` of a service that VirtualServices route for the mesh | VirtualService, resolved through Services, ServiceEntries, DestinationRule subsets, Pods (see `model::l7`) |
//! | `type.googleapis.com/weft.route.v1.DestinationPolicy` | `<ns>/<hostname>` of a service that DestinationRules apply to | DestinationRule |
//! | `type.googleapis.com/weft.telemetry.v1.AccessLogPolicy` | `<ns>`: the root namespace (always, with the mesh's output and format) and each namespace with a Telemetry that sets `accessLogging` | MeshConfig, Telemetry (see `model::access_log`) |
//! | `type.googleapis.com/weft.telemetry.v1.TracingPolicy` | `<ns>`: the root namespace (always, with the mesh's tracing settings and providers) and each namespace with a Telemetry that sets `tracing` | MeshConfig, Telemetry (see `model::trace_policy`) |
//! | `type.googleapis.com/weft.telemetry.v1.MetricsPolicy` | `<ns>`: the root namespace (always, with the mesh's default metrics providers) and each namespace with a Telemetry that sets `metrics` | MeshConfig, Telemetry (see `model::metrics_policy`) |
//!
//! A client subscribes to each type with that type's first request on the
//! stream (wildcard when it names nothing, or explicit names), in any
//! order; each type then has its own subscription, held versions, nonces
//! and ACK/NACK (`stream.rs`). Workloads name the `WORKLOAD_SELECTOR`
//! policies that apply to them in `authorization_policies`; `GLOBAL` and
//! `NAMESPACE` policies apply by scope alone. Any other type URL ends the
//! stream with `INVALID_ARGUMENT`.

pub mod raw;
mod server;
mod stream;
pub mod syncz;
mod view;

pub use server::XdsServer;
pub use stream::SERVED_TYPES;
pub use syncz::{StreamStatus, SyncRegistry, TypeStatus};
