//! The Telemetry API's `metrics` (`weft.telemetry.v1.MetricsPolicy`, one
//! per namespace, compiled by weft-control) and what it makes of one side
//! of one workload's traffic: which of Istio's standard metrics are
//! recorded, and which labels each carries (`tagOverrides`: REMOVE drops
//! a label, UPSERT adds one or redefines a standard one with a value
//! computed per connection or request).
//!
//! The levels merge as Istio's `mergeMetrics` does: the `metrics` entries
//! of the root namespace's Telemetry, then the workload's namespace's,
//! then one that selects the workload, in order, each override applied
//! on top of the ones before for its side (`match.mode`), its metric
//! (`ALL_METRICS` is every one) and its tags. The providers named last
//! decide whether Prometheus (the only provider weft's agents serve)
//! gets anything; `ALL_METRICS` with `disabled: true` turns every metric
//! of the side off, and any later override of that side turns them back
//! on.
//!
//! Most workloads have no override: [`Policies::resolve`] answers `None`
//! and labels stay Istio's standard set, with nothing added to the path.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use http::HeaderName;
use weft_proto::telemetry::{IstioMetric, MetricsPolicy, Mode, Value};

use crate::{
    access_log::{Side, entry::Entry, filter},
    xds::levels::Levels,
};

/// Istio's standard metrics, by the index views keep them at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    GrpcRequestMessages,
    GrpcResponseMessages,
    TcpOpened,
    TcpClosed,
    TcpSent,
    TcpReceived,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::RequestCount,
        Metric::RequestDuration,
        Metric::RequestSize,
        Metric::ResponseSize,
        Metric::GrpcRequestMessages,
        Metric::GrpcResponseMessages,
        Metric::TcpOpened,
        Metric::TcpClosed,
        Metric::TcpSent,
        Metric::TcpReceived,
    ];

    fn of(metric: IstioMetric) -> Option<Metric> {
        Some(match metric {
            IstioMetric::AllMetrics => return None,
            IstioMetric::RequestCount => Metric::RequestCount,
            IstioMetric::RequestDuration => Metric::RequestDuration,
            IstioMetric::RequestSize => Metric::RequestSize,
            IstioMetric::ResponseSize => Metric::ResponseSize,
            IstioMetric::GrpcRequestMessages => Metric::GrpcRequestMessages,
            IstioMetric::GrpcResponseMessages => Metric::GrpcResponseMessages,
            IstioMetric::TcpOpenedConnections => Metric::TcpOpened,
            IstioMetric::TcpClosedConnections => Metric::TcpClosed,
            IstioMetric::TcpSentBytes => Metric::TcpSent,
            IstioMetric::TcpReceivedBytes => Metric::TcpReceived,
        })
    }
}

/// Istio's standard labels, in the order they are written: the 23 of
/// every metric, then the two of the HTTP ones.
pub const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
];

/// What one metric records under one view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricView {
    pub disabled: bool,
    /// Bits over [`LABELS`]: standard labels left out (removed, or
    /// redefined by an UPSERT).
    pub removed: u32,
    /// Labels added or redefined, by name: the index of their value in
    /// [`View::expressions`].
    pub upserts: Vec<(String, usize)>,
}

impl MetricView {
    /// Whether the standard label `i` of [`LABELS`] is written.
    pub fn keeps(&self, i: usize) -> bool {
        self.removed & (1 << i) == 0
    }
}

/// What the overrides make of one side of one workload's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// By [`Metric`] index.
    pub metrics: [MetricView; 10],
    /// The distinct UPSERT expressions, evaluated once per connection or
    /// request (as written, parsed).
    pub expressions: Vec<(String, Value)>,
    /// The request headers they read, kept for them when a request starts.
    pub request_headers: Vec<HeaderName>,
    /// The response headers they read, kept when its response arrives.
    pub response_headers: Vec<HeaderName>,
}

impl View {
    /// What `m` records under this view.
    pub fn metric(&self, m: Metric) -> &MetricView {
        &self.metrics[m as usize]
    }

    /// Whether any of `metrics` is recorded.
    pub fn records_any(&self, metrics: &[Metric]) -> bool {
        metrics.iter().any(|m| !self.metric(*m).disabled)
    }

    /// The UPSERT values on `e` (`None`: missing, written `unknown`).
    pub fn values(&self, e: &Entry<'_>) -> Box<[Option<Box<str>>]> {
        self.expressions
            .iter()
            .map(|(_, v)| filter::label_value(v, e).map(String::into_boxed_str))
            .collect()
    }
}

/// A label set's overrides: the view it was made under and its UPSERT
/// values. Two label sets are the same series only under the same view
/// (compared by identity: a policy change makes a new one) with the same
/// values.
#[derive(Debug, Clone)]
pub struct Custom {
    pub view: Arc<View>,
    pub values: Box<[Option<Box<str>>]>,
}

impl Custom {
    /// Under `view`, values not computed yet (`unknown`).
    pub fn new(view: Arc<View>) -> Custom {
        let values = vec![None; view.expressions.len()].into_boxed_slice();
        Custom { view, values }
    }

    /// The value of expression `i`.
    pub fn value(&self, i: usize) -> &str {
        self.values
            .get(i)
            .and_then(|v| v.as_deref())
            .unwrap_or("unknown")
    }
}

impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.view, &other.view) && self.values == other.values
    }
}

impl Eq for Custom {}

impl Hash for Custom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.view), state);
        self.values.hash(state);
    }
}

/// The policies by namespace, and what they resolve to per workload.
#[derive(Debug, Default)]
pub struct Policies {
    inner: RwLock<State>,
    /// Some policy has rules (else every workload has the standard set,
    /// and [`Policies::resolve`] answers without a lock).
    active: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    levels: Levels<MetricsPolicy>,
    /// Resolved per workload uid, [client, server]: `None` not resolved
    /// yet, `Some(None)` the standard set. Cleared on change.
    cache: HashMap<String, [Option<Option<Arc<View>>>; 2]>,
    /// The views in use, one per content: a push that changes nothing for
    /// a workload resolves to the same view, so its label sets (keyed by
    /// the view's identity) stay the same series.
    interned: Vec<Arc<View>>,
}

/// The agent's policies (one set per process, as the access log's).
pub fn global() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(Policies::default)
}

/// Istio's default metrics provider, and the only one weft serves.
const PROMETHEUS: &str = "prometheus";

impl Policies {
    /// Applies one xDS update.
    pub fn apply(&self, upserts: Vec<(String, String, MetricsPolicy)>, removals: &[String]) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.levels.apply(upserts, removals);
        state.cache.clear();
        // Views no series keeps are forgotten.
        state.interned.retain(|v| Arc::strong_count(v) > 1);
        let active = state.levels.policies().any(|p| {
            p.namespace_rules.is_some()
                || !p.workloads.is_empty()
                || p.mesh
                    .as_ref()
                    .is_some_and(|m| !m.default_providers.iter().any(|p| p == PROMETHEUS))
        });
        self.active.store(active, Relaxed);
    }

    /// The xDS versions held, for a reconnecting stream.
    pub fn versions(&self) -> HashMap<String, String> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .levels
            .versions()
            .clone()
    }

    /// What the overrides make of `side` of the workload `uid` in
    /// `namespace`; `None`: Istio's standard metrics and labels.
    pub fn resolve(&self, namespace: &str, uid: &str, side: Side) -> Option<Arc<View>> {
        if !self.active.load(Relaxed) {
            return None;
        }
        let slot = side as usize;
        if let Some(cached) = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cache
            .get(uid)
            .and_then(|sides| sides[slot].clone())
        {
            return cached;
        }
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let view = state.merge(namespace, uid, side).map(|view| {
            match state.interned.iter().find(|v| ***v == view) {
                Some(same) => same.clone(),
                None => {
                    let view = Arc::new(view);
                    state.interned.push(view.clone());
                    view
                }
            }
        });
        state.cache.entry(uid.to_string()).or_default()[slot] = Some(view.clone());
        view
    }
}

/// A tag's operation after the merge.
#[derive(Debug, Clone, PartialEq)]
enum TagOp {
    Remove,
    Upsert { text: String, value: Value },
}

/// One metric's overrides after the merge.
#[derive(Debug, Clone, Default)]
struct Merged {
    disabled: Option<bool>,
    tags: BTreeMap<String, TagOp>,
}

impl State {
    /// Istio's `mergeMetrics` for one side; `None`: nothing overridden.
    fn merge(&self, namespace: &str, uid: &str, side: Side) -> Option<View> {
        let defaults = self
            .levels
            .root()?
            .mesh
            .as_ref()
            .map(|m| m.default_providers.clone())
            .unwrap_or_default();
        let entries: Vec<_> = self
            .levels
            .levels(namespace, uid)
            .flat_map(|l| &l.metrics)
            .collect();

        // The providers named last are the ones configured.
        let mut in_scope = &defaults;
        for e in &entries {
            if !e.providers.is_empty() {
                in_scope = &e.providers;
            }
        }
        if !in_scope.iter().any(|p| p == PROMETHEUS) {
            return Some(all_off());
        }

        let mut all_disabled = false;
        let mut merged: [Merged; 10] = Default::default();
        let mut parent = &defaults;
        for e in &entries {
            let names = if e.providers.is_empty() {
                parent
            } else {
                &e.providers
            };
            parent = names;
            if !names.iter().any(|p| p == PROMETHEUS) {
                continue;
            }
            for o in &e.overrides {
                // A mode or metric this agent does not know (a newer
                // control plane's) applies to nothing here.
                let (Ok(mode), Ok(metric)) =
                    (Mode::try_from(o.mode), IstioMetric::try_from(o.metric))
                else {
                    continue;
                };
                let applies = match mode {
                    Mode::ClientAndServer => true,
                    Mode::Client => side == Side::Client,
                    Mode::Server => side == Side::Server,
                };
                if !applies {
                    continue;
                }
                let metric = Metric::of(metric);
                if metric.is_none() && o.disabled == Some(true) && o.custom_metric.is_empty() {
                    all_disabled = true;
                    continue;
                }
                // Any other override of the side turns it back on (Istio's
                // way: a root that turns everything off, then a namespace
                // that overrides one metric, records).
                all_disabled = false;
                if !o.custom_metric.is_empty() {
                    continue;
                }
                let targets: Vec<Metric> = match metric {
                    Some(m) => vec![m],
                    None => Metric::ALL.to_vec(),
                };
                for m in targets {
                    let slot = &mut merged[m as usize];
                    if let Some(d) = o.disabled {
                        slot.disabled = Some(d);
                    }
                    for tag in &o.tags {
                        let op = match (&tag.value, tag.remove) {
                            (_, true) => TagOp::Remove,
                            (Some(value), false) => TagOp::Upsert {
                                text: tag.text.clone(),
                                value: value.clone(),
                            },
                            (None, false) => continue,
                        };
                        slot.tags.insert(tag.name.clone(), op);
                    }
                }
            }
        }
        if all_disabled {
            return Some(all_off());
        }
        if merged
            .iter()
            .all(|m| m.disabled != Some(true) && m.tags.is_empty())
        {
            return None;
        }
        Some(view_of(&merged))
    }
}

/// Every metric off.
fn all_off() -> View {
    let mut view = View::default();
    for m in &mut view.metrics {
        m.disabled = true;
    }
    view
}

fn view_of(merged: &[Merged; 10]) -> View {
    let mut view = View::default();
    for (slot, m) in view.metrics.iter_mut().zip(merged) {
        slot.disabled = m.disabled == Some(true);
        for (name, op) in &m.tags {
            if let Some(i) = LABELS.iter().position(|l| l == name) {
                slot.removed |= 1 << i;
            }
            let TagOp::Upsert { text, value } = op else {
                continue;
            };
            let index = match view.expressions.iter().position(|(_, v)| v == value) {
                Some(i) => i,
                None => {
                    view.expressions.push((text.clone(), value.clone()));
                    if let Some(h) = filter::request_headers_of(value)
                        && !view.request_headers.contains(&h)
                    {
                        view.request_headers.push(h);
                    }
                    if let Some(h) = filter::response_header_of(value)
                        && !view.response_headers.contains(&h)
                    {
                        view.response_headers.push(h);
                    }
                    view.expressions.len() - 1
                }
            };
            slot.upserts.push((name.clone(), index));
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use weft_proto::telemetry::{
        MeshMetrics, Metrics, MetricsOverride, MetricsRules, MetricsWorkloadRules, TagOverride,
        value,
    };

    use super::*;

    fn root(providers: &[&str], rules: Option<MetricsRules>) -> MetricsPolicy {
        MetricsPolicy {
            namespace: "istio-system".into(),
            mesh: Some(MeshMetrics {
                default_providers: providers.iter().map(|p| p.to_string()).collect(),
            }),
            namespace_rules: rules,
            workloads: vec![],
        }
    }

    fn rules(overrides: Vec<MetricsOverride>) -> MetricsRules {
        MetricsRules {
            telemetry: "t".into(),
            metrics: vec![Metrics {
                providers: vec![],
                overrides,
            }],
        }
    }

    fn over(mode: Mode, metric: IstioMetric, disabled: Option<bool>) -> MetricsOverride {
        MetricsOverride {
            mode: mode as i32,
            metric: metric as i32,
            disabled,
            ..Default::default()
        }
    }

    fn remove(name: &str) -> TagOverride {
        TagOverride {
            name: name.into(),
            remove: true,
            ..Default::default()
        }
    }

    fn upsert(name: &str, attribute: &str) -> TagOverride {
        TagOverride {
            name: name.into(),
            value: Some(Value {
                kind: Some(value::Kind::Attribute(attribute.into())),
            }),
            text: attribute.into(),
            ..Default::default()
        }
    }

    fn policies(list: Vec<MetricsPolicy>) -> Policies {
        let p = Policies::default();
        p.apply(
            list.into_iter()
                .map(|p| (p.namespace.clone(), "1".into(), p))
                .collect(),
            &[],
        );
        p
    }

    #[test]
    fn no_rules_is_the_standard_set_without_a_lookup() {
        let p = policies(vec![root(&["prometheus"], None)]);
        assert!(!p.active.load(Relaxed));
        assert_eq!(p.resolve("shop", "uid", Side::Client), None);
    }

    #[test]
    fn a_mesh_without_prometheus_records_nothing() {
        let p = policies(vec![root(&["stackdriver"], None)]);
        let view = p.resolve("shop", "uid", Side::Server).unwrap();
        assert!(!view.records_any(&Metric::ALL));
    }

    #[test]
    fn client_side_off_mesh_wide_leaves_the_server_side() {
        let p = policies(vec![root(
            &["prometheus"],
            Some(rules(vec![over(
                Mode::Client,
                IstioMetric::AllMetrics,
                Some(true),
            )])),
        )]);
        let client = p.resolve("shop", "uid", Side::Client).unwrap();
        assert!(!client.records_any(&Metric::ALL));
        assert_eq!(p.resolve("shop", "uid", Side::Server), None);
    }

    #[test]
    fn a_namespace_turns_back_on_what_the_root_turned_off() {
        let mut shop = MetricsPolicy {
            namespace: "shop".into(),
            namespace_rules: Some(rules(vec![over(
                Mode::ClientAndServer,
                IstioMetric::AllMetrics,
                Some(false),
            )])),
            ..Default::default()
        };
        let p = policies(vec![
            root(
                &["prometheus"],
                Some(rules(vec![over(
                    Mode::ClientAndServer,
                    IstioMetric::AllMetrics,
                    Some(true),
                )])),
            ),
            shop.clone(),
        ]);
        // Back to the standard set.
        assert_eq!(p.resolve("shop", "a", Side::Client), None);
        assert!(
            !p.resolve("bank", "b", Side::Client)
                .unwrap()
                .records_any(&Metric::ALL)
        );
        // A workload rule naming another provider only: Prometheus is no
        // longer in scope for it.
        shop.workloads = vec![MetricsWorkloadRules {
            rules: Some(MetricsRules {
                telemetry: "w".into(),
                metrics: vec![Metrics {
                    providers: vec!["stackdriver".into()],
                    overrides: vec![],
                }],
            }),
            workload_uids: vec!["w1".into()],
        }];
        p.apply(vec![("shop".into(), "2".into(), shop)], &[]);
        assert!(
            !p.resolve("shop", "w1", Side::Server)
                .unwrap()
                .records_any(&Metric::ALL)
        );
    }

    #[test]
    fn tags_merge_per_metric_and_later_levels_win() {
        let mut count = over(Mode::ClientAndServer, IstioMetric::RequestCount, None);
        count.tags = vec![
            upsert("request_host", "request.host"),
            remove("source_principal"),
        ];
        let mut all = over(Mode::Server, IstioMetric::AllMetrics, None);
        all.tags = vec![remove("request_protocol")];
        let shop = MetricsPolicy {
            namespace: "shop".into(),
            namespace_rules: Some(rules(vec![{
                // The namespace puts back `source_principal` as a value.
                let mut o = over(Mode::ClientAndServer, IstioMetric::RequestCount, None);
                o.tags = vec![upsert("source_principal", "connection.mtls")];
                o
            }])),
            ..Default::default()
        };
        let p = policies(vec![
            root(&["prometheus"], Some(rules(vec![count, all]))),
            shop,
        ]);

        let server = p.resolve("shop", "a", Side::Server).unwrap();
        let count = server.metric(Metric::RequestCount);
        let label = |name: &str| LABELS.iter().position(|l| *l == name).unwrap();
        assert!(!count.keeps(label("request_protocol")));
        assert!(!count.keeps(label("source_principal")));
        assert!(count.keeps(label("source_workload")));
        let names: Vec<&str> = count.upserts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["request_host", "source_principal"]);
        assert_eq!(server.expressions.len(), 2);
        // Other metrics: only the ALL_METRICS removal.
        let duration = server.metric(Metric::RequestDuration);
        assert!(!duration.keeps(label("request_protocol")));
        assert!(duration.upserts.is_empty());

        // The client side has no ALL_METRICS removal.
        let client = p.resolve("shop", "a", Side::Client).unwrap();
        assert!(
            client
                .metric(Metric::RequestCount)
                .keeps(label("request_protocol"))
        );
        assert_eq!(client.metric(Metric::TcpOpened), &MetricView::default());
    }

    #[test]
    fn any_later_override_turns_a_side_back_on() {
        let mut count = over(Mode::ClientAndServer, IstioMetric::RequestCount, None);
        count.tags = vec![remove("request_protocol")];
        let shop = MetricsPolicy {
            namespace: "shop".into(),
            namespace_rules: Some(rules(vec![count])),
            ..Default::default()
        };
        let off = rules(vec![over(
            Mode::ClientAndServer,
            IstioMetric::AllMetrics,
            Some(true),
        )]);
        let p = policies(vec![root(&["prometheus"], Some(off)), shop]);
        let view = p.resolve("shop", "a", Side::Server).unwrap();
        assert!(view.records_any(&Metric::ALL), "{view:?}");
        assert!(
            !p.resolve("bank", "b", Side::Server)
                .unwrap()
                .records_any(&Metric::ALL)
        );
    }

    #[test]
    fn unknown_enum_values_apply_to_nothing() {
        let mut o = over(Mode::ClientAndServer, IstioMetric::AllMetrics, Some(true));
        o.metric = 99;
        let p = policies(vec![root(&["prometheus"], Some(rules(vec![o])))]);
        assert_eq!(p.resolve("shop", "a", Side::Client), None);
    }

    #[test]
    fn a_push_that_changes_nothing_keeps_the_view() {
        let disabled = || {
            root(
                &["prometheus"],
                Some(rules(vec![over(
                    Mode::ClientAndServer,
                    IstioMetric::RequestDuration,
                    Some(true),
                )])),
            )
        };
        let p = policies(vec![disabled()]);
        let first = p.resolve("shop", "a", Side::Client).unwrap();
        p.apply(vec![("istio-system".into(), "2".into(), disabled())], &[]);
        let again = p.resolve("shop", "a", Side::Client).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn one_metric_disabled() {
        let p = policies(vec![root(
            &["prometheus"],
            Some(rules(vec![over(
                Mode::ClientAndServer,
                IstioMetric::RequestDuration,
                Some(true),
            )])),
        )]);
        let view = p.resolve("shop", "a", Side::Client).unwrap();
        assert!(view.metric(Metric::RequestDuration).disabled);
        assert!(!view.metric(Metric::RequestCount).disabled);
        assert!(view.records_any(&[Metric::RequestCount]));
    }
}
