//! The tracing policies received from the control plane
//! (`weft.telemetry.v1.TracingPolicy`, one per namespace) and what they
//! say for one side of one workload's traffic: which providers get its
//! spans, the sampling percentage, whether spans are reported, and the
//! custom tags. Istio's levels, each overriding the one before field by
//! field: MeshConfig, the root namespace's Telemetry, the workload's
//! namespace's, then one that selects the workload. Custom tags merge by
//! name.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use weft_proto::telemetry::{
    Mode, TracingPolicy, TracingProvider, TracingProviderKind, TracingRules, custom_tag,
};

use crate::{access_log::Side, xds::levels::Levels};

/// A provider that receives spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    /// `false`: a kind weft does not export to (Zipkin, Datadog, ...);
    /// trace headers are still continued.
    pub exports: bool,
    pub service: String,
    pub port: u16,
    /// Tag values are cut to this many bytes.
    pub max_tag_length: usize,
}

/// Istio's default `maxTagLength`.
const DEFAULT_MAX_TAG_LENGTH: usize = 256;

impl Provider {
    fn from_proto(p: &TracingProvider) -> Provider {
        Provider {
            name: p.name.clone(),
            exports: p.kind() == TracingProviderKind::Opentelemetry,
            service: p.service.clone(),
            port: u16::try_from(p.port).unwrap_or(0),
            max_tag_length: match p.max_tag_length {
                0 => DEFAULT_MAX_TAG_LENGTH,
                n => n as usize,
            },
        }
    }
}

/// Where a custom tag's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Literal(String),
    /// A request header (lower case), else the default.
    Header {
        name: String,
        default: String,
    },
    /// The agent's environment variable, read when the policy arrives.
    Environment(String),
}

/// What applies to one side of one workload's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The providers named that the mesh config defines.
    pub providers: Vec<Arc<Provider>>,
    /// Percent of requests without a caller's decision that are traced.
    pub sampling: f64,
    /// `false`: `disableSpanReporting` (headers continue, no spans sent).
    pub report: bool,
    pub custom_tags: Vec<(String, TagValue)>,
}

impl Effective {
    /// Samples one request with no decision from its caller.
    pub fn sample(&self) -> bool {
        self.sampling >= 100.0 || fastrand::f64() * 100.0 < self.sampling
    }

    /// Whether spans are sent anywhere.
    pub fn exports(&self) -> bool {
        self.report && self.providers.iter().any(|p| p.exports)
    }
}

/// Workloads whose resolution is kept at most (a node's pods, with room).
const CACHED: usize = 4096;

/// The policies by namespace, and what they resolve to per workload.
#[derive(Debug, Default)]
pub struct Policies {
    inner: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    levels: Levels<TracingPolicy>,
    /// Resolved per workload uid: [client, server]; cleared on change,
    /// and when [`CACHED`] workloads are kept.
    ///
    /// Looked up on every request, by uids the control plane sent: a
    /// fast hash rather than SipHash's flood resistance.
    cache: HashMap<String, [Option<Arc<Effective>>; 2], foldhash::fast::RandomState>,
}

impl Policies {
    /// Applies one xDS update.
    pub fn apply(&self, upserts: Vec<(String, String, TracingPolicy)>, removals: &[String]) {
        let mut state = self.inner.write().expect("tracing policies lock");
        state.levels.apply(upserts, removals);
        state.cache.clear();
    }

    /// The xDS versions held, for a reconnecting stream.
    pub fn versions(&self) -> HashMap<String, String> {
        self.inner
            .read()
            .expect("tracing policies lock")
            .levels
            .versions()
            .clone()
    }

    /// What applies to `side` of the workload `uid` in `namespace`;
    /// `None`: no tracing (off in the mesh config, or no provider).
    pub fn resolve(&self, namespace: &str, uid: &str, side: Side) -> Option<Arc<Effective>> {
        let slot = match side {
            Side::Client => 0,
            Side::Server => 1,
        };
        if let Some(cached) = self
            .inner
            .read()
            .expect("tracing policies lock")
            .cache
            .get(uid)
            .and_then(|sides| sides[slot].clone())
        {
            return (!cached.providers.is_empty()).then_some(cached);
        }
        let mut state = self.inner.write().expect("tracing policies lock");
        // No tracing is kept too (as no provider), so that a mesh without
        // it does not take the write lock on every request.
        let effective = Arc::new(state.merge(namespace, uid, side).unwrap_or(Effective {
            providers: Vec::new(),
            sampling: 0.0,
            report: false,
            custom_tags: Vec::new(),
        }));
        // Bounded, as pods come and go between policy changes.
        if state.cache.len() >= CACHED && !state.cache.contains_key(uid) {
            state.cache.clear();
        }
        state.cache.entry(uid.to_string()).or_default()[slot] = Some(effective.clone());
        (!effective.providers.is_empty()).then_some(effective)
    }
}

impl State {
    fn merge(&self, namespace: &str, uid: &str, side: Side) -> Option<Effective> {
        let mesh = self.levels.root()?.mesh.as_ref()?;
        let known: HashMap<&str, Arc<Provider>> = mesh
            .providers
            .iter()
            .map(|p| (p.name.as_str(), Arc::new(Provider::from_proto(p))))
            .collect();
        let mut merged = Merge {
            providers: mesh.default_providers.clone(),
            sampling: mesh.sampling,
            report: true,
            custom_tags: BTreeMap::new(),
        };
        if mesh.enabled {
            for rules in self.levels.levels(namespace, uid) {
                merged.level(rules, side);
            }
        } else {
            merged.providers.clear();
        }
        Some(Effective {
            providers: merged
                .providers
                .iter()
                .filter_map(|name| known.get(name.as_str()).cloned())
                .collect(),
            sampling: merged.sampling.clamp(0.0, 100.0),
            report: merged.report,
            custom_tags: merged.custom_tags.into_iter().collect(),
        })
    }
}

/// The fields as the levels override them.
struct Merge {
    providers: Vec<String>,
    sampling: f64,
    report: bool,
    custom_tags: BTreeMap<String, TagValue>,
}

impl Merge {
    fn level(&mut self, rules: &TracingRules, side: Side) {
        for entry in &rules.tracing {
            let applies = match entry.mode() {
                Mode::ClientAndServer => true,
                Mode::Client => side == Side::Client,
                Mode::Server => side == Side::Server,
            };
            if !applies {
                continue;
            }
            if !entry.providers.is_empty() {
                self.providers = entry.providers.clone();
            }
            if let Some(sampling) = entry.random_sampling_percentage {
                self.sampling = sampling;
            }
            if let Some(disabled) = entry.disable_span_reporting {
                self.report = !disabled;
            }
            for tag in &entry.custom_tags {
                let value = match &tag.kind {
                    Some(custom_tag::Kind::Literal(v)) => TagValue::Literal(v.clone()),
                    Some(custom_tag::Kind::Header(h)) => TagValue::Header {
                        name: h.name.to_ascii_lowercase(),
                        default: h.default_value.clone(),
                    },
                    Some(custom_tag::Kind::Environment(e)) => TagValue::Environment(
                        std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone()),
                    ),
                    None => continue,
                };
                self.custom_tags.insert(tag.name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::telemetry::{CustomTag, HeaderTag, MeshTracing, Tracing, TracingWorkloadRules};

    use super::*;

    fn mesh(enabled: bool) -> TracingPolicy {
        TracingPolicy {
            namespace: "istio-system".into(),
            mesh: Some(MeshTracing {
                enabled,
                sampling: 1.0,
                default_providers: vec!["otel".into()],
                providers: vec![
                    TracingProvider {
                        name: "otel".into(),
                        kind: TracingProviderKind::Opentelemetry as i32,
                        service: "collector.obs.svc.cluster.local".into(),
                        port: 4317,
                        max_tag_length: 0,
                    },
                    TracingProvider {
                        name: "zipkin".into(),
                        kind: TracingProviderKind::Unsupported as i32,
                        service: "zipkin.obs".into(),
                        port: 9411,
                        max_tag_length: 0,
                    },
                ],
            }),
            namespace_rules: None,
            workloads: vec![],
        }
    }

    fn rules(telemetry: &str, tracing: Vec<Tracing>) -> Option<TracingRules> {
        Some(TracingRules {
            telemetry: telemetry.into(),
            tracing,
        })
    }

    fn tag(name: &str, literal: &str) -> CustomTag {
        CustomTag {
            name: name.into(),
            kind: Some(custom_tag::Kind::Literal(literal.into())),
        }
    }

    fn apply(policies: &Policies, list: Vec<TracingPolicy>) {
        policies.apply(
            list.into_iter()
                .map(|p| (p.namespace.clone(), "1".into(), p))
                .collect(),
            &[],
        );
    }

    #[test]
    fn mesh_defaults_apply_without_telemetry() {
        let policies = Policies::default();
        // Asked twice: the second answer is the one kept.
        for _ in 0..2 {
            assert!(
                policies.resolve("shop", "w1", Side::Client).is_none(),
                "no root yet"
            );
        }
        apply(&policies, vec![mesh(true)]);
        let e = policies.resolve("shop", "w1", Side::Client).unwrap();
        assert_eq!(e.providers[0].name, "otel");
        assert_eq!(e.providers[0].max_tag_length, 256);
        assert_eq!(e.sampling, 1.0);
        assert!(e.report && e.exports());
        apply(&policies, vec![mesh(false)]);
        assert!(policies.resolve("shop", "w1", Side::Client).is_none());
    }

    #[test]
    fn levels_override_field_by_field_and_tags_merge() {
        let policies = Policies::default();
        let mut root = mesh(true);
        root.mesh.as_mut().unwrap().default_providers.clear();
        root.namespace_rules = rules(
            "istio-system/mesh-default",
            vec![Tracing {
                providers: vec!["otel".into()],
                random_sampling_percentage: Some(10.0),
                custom_tags: vec![tag("team", "mesh"), tag("env", "prod")],
                ..Default::default()
            }],
        );
        let shop = TracingPolicy {
            namespace: "shop".into(),
            mesh: None,
            namespace_rules: rules(
                "shop/ns",
                vec![Tracing {
                    random_sampling_percentage: Some(100.0),
                    custom_tags: vec![tag("team", "shop")],
                    ..Default::default()
                }],
            ),
            workloads: vec![
                TracingWorkloadRules {
                    rules: rules(
                        "shop/quiet",
                        vec![Tracing {
                            mode: Mode::Server as i32,
                            disable_span_reporting: Some(true),
                            custom_tags: vec![CustomTag {
                                name: "user".into(),
                                kind: Some(custom_tag::Kind::Header(HeaderTag {
                                    name: "X-User".into(),
                                    default_value: "anon".into(),
                                })),
                            }],
                            ..Default::default()
                        }],
                    ),
                    workload_uids: vec!["quiet".into()],
                },
                TracingWorkloadRules {
                    // A newer Telemetry picking `quiet` too: merged after the
                    // first, as istiod appends every match.
                    rules: rules(
                        "shop/quiet-sampled",
                        vec![Tracing {
                            random_sampling_percentage: Some(50.0),
                            ..Default::default()
                        }],
                    ),
                    workload_uids: vec!["quiet".into()],
                },
            ],
        };
        apply(&policies, vec![root, shop]);
        let loud = policies.resolve("shop", "loud", Side::Server).unwrap();
        assert_eq!(loud.sampling, 100.0);
        assert!(loud.report);
        assert_eq!(
            loud.custom_tags,
            vec![
                ("env".to_string(), TagValue::Literal("prod".into())),
                ("team".to_string(), TagValue::Literal("shop".into())),
            ]
        );
        let quiet_server = policies.resolve("shop", "quiet", Side::Server).unwrap();
        assert!(!quiet_server.report && !quiet_server.exports());
        assert_eq!(quiet_server.sampling, 50.0, "the newer Telemetry's");
        assert!(quiet_server.custom_tags.contains(&(
            "user".to_string(),
            TagValue::Header {
                name: "x-user".into(),
                default: "anon".into()
            }
        )));
        let quiet_client = policies.resolve("shop", "quiet", Side::Client).unwrap();
        assert!(
            quiet_client.report,
            "the SERVER entry leaves the client side"
        );
        // Another namespace sees only the root's Telemetry.
        let other = policies.resolve("other", "x", Side::Client).unwrap();
        assert_eq!(other.sampling, 10.0);
    }

    #[test]
    fn unknown_and_unsupported_providers() {
        let policies = Policies::default();
        let mut root = mesh(true);
        root.namespace_rules = rules(
            "istio-system/t",
            vec![Tracing {
                providers: vec!["zipkin".into(), "nowhere".into()],
                ..Default::default()
            }],
        );
        apply(&policies, vec![root]);
        let e = policies.resolve("shop", "w", Side::Client).unwrap();
        assert_eq!(e.providers.len(), 1, "the unknown name is dropped");
        assert!(
            !e.exports(),
            "zipkin continues headers but is not exported to"
        );
    }

    #[test]
    fn a_change_clears_what_was_resolved() {
        let policies = Policies::default();
        apply(&policies, vec![mesh(true)]);
        assert_eq!(
            policies
                .resolve("shop", "w", Side::Client)
                .unwrap()
                .sampling,
            1.0
        );
        let mut root = mesh(true);
        root.mesh.as_mut().unwrap().sampling = 50.0;
        apply(&policies, vec![root]);
        assert_eq!(
            policies
                .resolve("shop", "w", Side::Client)
                .unwrap()
                .sampling,
            50.0
        );
        policies.apply(vec![], &["istio-system".into()]);
        assert!(policies.resolve("shop", "w", Side::Client).is_none());
    }
}
