//! weft's wire types, generated from the `.proto` files in `proto/`, and
//! what the agent's and weft-control's HTTP ports share: the metrics'
//! exposition formats ([`exposition`]) and the bounds on a misbehaving
//! client's cost ([`serving`]); and what weft-control checks and the agent
//! writes alike, Envoy's access-log time formats ([`time_format`]).
//!
//! Package names and field numbers are those of upstream Istio and Envoy
//! (see `README.md`), so a real ztunnel can talk to weft's control plane
//! and weft's agent to istiod. L7 routing, which the Workload API does not
//! carry, is weft's own `weft.route.v1`.

#![forbid(unsafe_code)]

pub mod duration;
pub mod exposition;
pub mod serving;
pub mod time_format;

/// `istio.workload`: the Workload API (`Address`, `Workload`, `Service`, ...).
pub use generated::istio::workload;

/// `istio.security`: L4 authorization (`Authorization`), compiled from
/// AuthorizationPolicy and PeerAuthentication.
pub use generated::istio::security;

/// `istio.v1.auth`: the CA (`IstioCertificateService/CreateCertificate`).
pub use generated::istio::v1::auth as ca;

/// `envoy.service.discovery.v3`: delta ADS.
pub use generated::envoy::service::discovery::v3 as discovery;

/// `envoy.config.core.v3`: `Node` and friends.
pub use generated::envoy::config::core::v3 as core;

/// `envoy.service.auth.v3`: Envoy's external authorization API
/// (`Authorization/Check`), which weft's agent calls for CUSTOM
/// AuthorizationPolicies.
pub use generated::envoy::service::auth::v3 as ext_authz;

/// `envoy.service.accesslog.v3`: Envoy's gRPC Access Log Service
/// (`AccessLogService/StreamAccessLogs`), which weft's agent streams the
/// entries of `envoyHttpAls` and `envoyTcpAls` providers to.
pub use generated::envoy::service::accesslog::v3 as als;

/// `envoy.data.accesslog.v3`: the entries an access-log service gets
/// (`HTTPAccessLogEntry`, `TCPAccessLogEntry`).
pub use generated::envoy::data::accesslog::v3 as access_log_entry;

/// `envoy.type.v3`: `HttpStatus` (ext_authz answers).
pub use generated::envoy::r#type::v3 as envoy_type;

/// `google.rpc`: `Status`, carried in NACKs.
pub use generated::google::rpc;

/// `weft.route.v1`: weft's own L7 types, `RouteConfig` (a service's
/// VirtualService routes) and `DestinationPolicy` (its DestinationRules).
pub use generated::weft::route::v1 as route;

/// `weft.telemetry.v1`: weft's own `AccessLogPolicy` (MeshConfig's access
/// log and the Telemetry API's `accessLogging`, per namespace) and
/// `TracingPolicy` (MeshConfig's tracing and the Telemetry API's
/// `tracing`, per namespace) and `MetricsPolicy` (the Telemetry API's
/// `metrics`, per namespace).
pub use generated::weft::telemetry::v1 as telemetry;

/// The xDS type URL of [`workload::Address`] resources.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";

/// The xDS type URL of [`security::Authorization`] resources.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// The xDS type URL of [`route::RouteConfig`] resources.
pub const ROUTE_CONFIG_TYPE_URL: &str = "type.googleapis.com/weft.route.v1.RouteConfig";

/// The name of the [`route::RouteConfig`] that carries MeshConfig's
/// `defaultHttpRetryPolicy` for hosts no VirtualService routes.
pub const MESH_DEFAULT_ROUTE: &str = "~/default";

/// The name of the [`route::RouteConfig`] that carries MeshConfig's
/// `defaultInboundHttpRetryPolicy`, the retries of the requests a
/// destination's side sends to its app on ports not declared gRPC,
/// upgrades aside (absent: Istio's default).
pub const MESH_INBOUND_ROUTE: &str = "~/inbound";

/// The xDS type URL of [`route::DestinationPolicy`] resources.
pub const DESTINATION_POLICY_TYPE_URL: &str = "type.googleapis.com/weft.route.v1.DestinationPolicy";

/// The xDS type URL of [`telemetry::AccessLogPolicy`] resources.
pub const ACCESS_LOG_POLICY_TYPE_URL: &str =
    "type.googleapis.com/weft.telemetry.v1.AccessLogPolicy";

/// The xDS type URL of [`telemetry::TracingPolicy`] resources.
pub const TRACING_POLICY_TYPE_URL: &str = "type.googleapis.com/weft.telemetry.v1.TracingPolicy";

/// The xDS type URL of [`telemetry::MetricsPolicy`] resources.
pub const METRICS_POLICY_TYPE_URL: &str = "type.googleapis.com/weft.telemetry.v1.MetricsPolicy";

/// Every type weft serves, in the order a push sends them (workloads
/// before the policies that name them, services before the routes and
/// policies keyed by them, a host's DestinationPolicy before the routes
/// to its subsets, as istiod sends clusters before routes).
pub const TYPE_URLS: [&str; 7] = [
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    DESTINATION_POLICY_TYPE_URL,
    ROUTE_CONFIG_TYPE_URL,
    ACCESS_LOG_POLICY_TYPE_URL,
    TRACING_POLICY_TYPE_URL,
    METRICS_POLICY_TYPE_URL,
];

/// The generated code refers to other packages by relative paths
/// (`super::super::...`), so the modules mirror the package tree.
#[allow(clippy::all, missing_docs)]
mod generated {
    pub mod istio {
        pub mod workload {
            include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));
        }
        pub mod security {
            include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
        }
        pub mod v1 {
            pub mod auth {
                include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
            }
        }
    }
    pub mod envoy {
        pub mod config {
            pub mod core {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
                }
            }
        }
        pub mod service {
            pub mod discovery {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
                }
            }
            pub mod auth {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v3.rs"));
                }
            }
            pub mod accesslog {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.service.accesslog.v3.rs"));
                }
            }
        }
        pub mod data {
            pub mod accesslog {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.data.accesslog.v3.rs"));
                }
            }
        }
        pub mod r#type {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
            }
        }
    }
    pub mod google {
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
    pub mod weft {
        pub mod route {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/weft.route.v1.rs"));
            }
        }
        pub mod telemetry {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/weft.telemetry.v1.rs"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::{Message, Name};

    use super::*;

    #[test]
    fn address_type_url_matches_the_generated_name() {
        assert_eq!(workload::Address::type_url(), ADDRESS_TYPE_URL);
        assert_eq!(security::Authorization::type_url(), AUTHORIZATION_TYPE_URL);
        assert_eq!(route::RouteConfig::type_url(), ROUTE_CONFIG_TYPE_URL);
        assert_eq!(
            route::DestinationPolicy::type_url(),
            DESTINATION_POLICY_TYPE_URL
        );
        assert_eq!(
            telemetry::AccessLogPolicy::type_url(),
            ACCESS_LOG_POLICY_TYPE_URL
        );
        assert_eq!(
            telemetry::TracingPolicy::type_url(),
            TRACING_POLICY_TYPE_URL
        );
        assert_eq!(
            telemetry::MetricsPolicy::type_url(),
            METRICS_POLICY_TYPE_URL
        );
    }

    #[test]
    fn authorization_field_numbers() {
        use security::{Authorization, Group, Match, Rules, StringMatch, string_match};
        let a = Authorization {
            name: "n".into(),
            dry_run: true,
            groups: vec![Group {
                rules: vec![Rules {
                    matches: vec![Match {
                        destination_ports: vec![80],
                        not_principals: vec![StringMatch {
                            match_type: Some(string_match::MatchType::Presence(())),
                        }],
                        ..Default::default()
                    }],
                }],
                rule: None,
            }],
            ..Default::default()
        };
        let bytes = a.encode_to_vec();
        // name = 1: tag 0x0a, length 1, "n".
        assert_eq!(&bytes[..3], &[0x0a, 0x01, b'n']);
        // groups = 5 (length-delimited): tag 0x2a; dry_run = 6: tag 0x30.
        assert_eq!(bytes[3], 0x2a);
        assert_eq!(&bytes[bytes.len() - 2..], &[0x30, 0x01]);
        // Inside: rules = 1 (0x0a), matches = 2 (0x12), not_principals = 4
        // (0x22) holding presence = 4 (0x22, empty), destination_ports = 9
        // (packed, 0x4a).
        let group = &bytes[5..];
        assert_eq!(&group[..1], &[0x0a]);
        assert!(bytes.windows(4).any(|w| w == [0x22, 0x02, 0x22, 0x00]));
        assert!(bytes.windows(3).any(|w| w == [0x4a, 0x01, 80]));
        // weft's `Group.rule` = 100 (varint): tag (100 << 3) = 800 =
        // varint a0 06; present even when 0 (proto3 `optional`).
        let rule = |rule| {
            Group {
                rules: vec![],
                rule: Some(rule),
            }
            .encode_to_vec()
        };
        assert_eq!(rule(0), [0xa0, 0x06, 0x00]);
        assert_eq!(rule(3), [0xa0, 0x06, 0x03]);
    }

    /// Field numbers are the contract with Istio: spot-check a few by
    /// encoding and reading the raw tags back.
    #[test]
    fn upstream_field_numbers() {
        let w = workload::Workload {
            uid: "u".into(),
            services: [("ns/h".into(), workload::PortList::default())].into(),
            ..Default::default()
        };
        let bytes = w.encode_to_vec();
        // uid = 20 (length-delimited): tag (20 << 3) | 2 = 162 = varint a2 01.
        assert_eq!(&bytes[..2], &[0xa2, 0x01]);
        // services = 22: tag (22 << 3) | 2 = 178 = varint b2 01.
        assert!(bytes.windows(2).any(|w| w == [0xb2, 0x01]));

        let req = ca::IstioCertificateRequest {
            csr: String::new(),
            validity_duration: 1,
            metadata: None,
        };
        // validity_duration = 3 (varint): tag 0x18.
        assert_eq!(req.encode_to_vec(), vec![0x18, 0x01]);
    }
}
