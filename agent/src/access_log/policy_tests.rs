use weft_proto::telemetry::{
    AccessLogProvider, AccessLogging, Expr, FormatToken, WorkloadRules, expr, value,
};

use super::*;

/// An entry: its mode, whether it is `disabled`, its filter's attribute
/// (if any) and the providers it names.
struct E<'a>(Mode, bool, Option<&'a str>, &'a [&'a str]);

fn rules(name: &str, entries: &[E<'_>]) -> AccessLogRules {
    AccessLogRules {
        telemetry: name.into(),
        logging: entries
            .iter()
            .map(|E(mode, disabled, filter, providers)| AccessLogging {
                mode: *mode as i32,
                disabled: *disabled,
                filter: filter.map(|attribute| weft_proto::telemetry::Filter {
                    text: attribute.into(),
                    expr: Some(Expr {
                        kind: Some(expr::Kind::Value(weft_proto::telemetry::Value {
                            kind: Some(value::Kind::Attribute(attribute.into())),
                        })),
                    }),
                }),
                providers: providers.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
    }
}

fn out(file: &str) -> MeshAccessLog {
    MeshAccessLog {
        file: file.into(),
        encoding: Encoding::Text as i32,
        text: vec![FormatToken {
            operator: "RESPONSE_CODE".into(),
            ..Default::default()
        }],
        json: vec![],
    }
}

/// The root's policy: MeshConfig's `accessLogFile`, the file providers
/// `envoy` (stdout) and `json` (`/tmp/json.log`), and `defaults`.
fn root(file: &str, defaults: &[&str], namespace_rules: Option<AccessLogRules>) -> AccessLogPolicy {
    AccessLogPolicy {
        namespace: "istio-system".into(),
        mesh: Some(out(file)),
        namespace_rules,
        providers: vec![
            AccessLogProvider {
                name: "envoy".into(),
                output: Some(out("/dev/stdout")),
                ..Default::default()
            },
            AccessLogProvider {
                name: "json".into(),
                output: Some(out("/tmp/json.log")),
                ..Default::default()
            },
            // A provider without an output (a kind this agent does not
            // know, from a newer weft-control): it resolves, and gets
            // nothing.
            AccessLogProvider {
                name: "http-als".into(),
                ..Default::default()
            },
        ],
        default_providers: defaults.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

fn apply(policies: &Policies, list: Vec<AccessLogPolicy>) {
    let upserts = list
        .into_iter()
        .map(|p| {
            (
                p.namespace.clone(),
                "1".into(),
                Compiled::compile(&p).unwrap(),
            )
        })
        .collect();
    policies.apply(upserts, &[]);
}

/// The files `side` of workload `w` in `shop` writes to, each with its
/// filter's text.
fn lines(policies: &Policies, uid: &str, side: Side) -> Vec<(String, Option<String>)> {
    policies
        .decide("shop", uid, side)
        .map(|d| {
            d.lines()
                .map(|l| {
                    (
                        l.output.to.to_string(),
                        l.filter.as_ref().map(|f| f.text.clone()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn files(policies: &Policies, side: Side) -> Vec<String> {
    lines(policies, "w", side)
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

fn shop(namespace_rules: Option<AccessLogRules>, workloads: Vec<WorkloadRules>) -> AccessLogPolicy {
    AccessLogPolicy {
        namespace: "shop".into(),
        namespace_rules,
        workloads,
        ..Default::default()
    }
}

const BOTH: Mode = Mode::ClientAndServer;
const MESH_LOG: &str = "/var/log/mesh.log";
const STDOUT_: &str = "/dev/stdout";
const JSON: &str = "/tmp/json.log";

#[test]
fn nothing_before_the_mesh_policy_then_meshconfigs_own_output() {
    let policies = Policies::default();
    assert!(policies.decide("shop", "w", Side::Client).is_none());
    apply(&policies, vec![root(MESH_LOG, &[], None)]);
    assert_eq!(files(&policies, Side::Client), [MESH_LOG]);
    // `accessLogFile: ""`: off.
    apply(&policies, vec![root("", &[], None)]);
    assert!(policies.decide("shop", "w", Side::Client).is_none());
}

#[test]
fn entries_without_providers_act_on_meshconfigs_output() {
    let policies = Policies::default();
    apply(&policies, vec![root(MESH_LOG, &[], None)]);
    apply(
        &policies,
        vec![shop(
            Some(rules("shop/off", &[E(BOTH, true, None, &[])])),
            vec![WorkloadRules {
                rules: Some(rules(
                    "shop/api",
                    &[E(Mode::Server, false, Some("connection.mtls"), &[])],
                )),
                workload_uids: vec!["api".into()],
            }],
        )],
    );
    assert!(files(&policies, Side::Client).is_empty(), "disabled");
    assert!(lines(&policies, "api", Side::Client).is_empty());
    assert_eq!(
        lines(&policies, "api", Side::Server),
        [(MESH_LOG.to_string(), Some("connection.mtls".to_string()))],
        "the workload's entry turns it back on, filtered"
    );
    // With `accessLogFile: ""`, an entry without providers turns it on,
    // to stdout.
    apply(
        &policies,
        vec![root(
            "",
            &[],
            Some(rules(
                "istio-system/on",
                &[E(Mode::Client, false, None, &[])],
            )),
        )],
    );
    assert_eq!(
        files(&policies, Side::Client),
        Vec::<String>::new(),
        "shop's disables"
    );
    assert_eq!(
        policies
            .decide("other", "x", Side::Client)
            .unwrap()
            .lines()
            .map(|l| l.output.to.to_string())
            .collect::<Vec<_>>(),
        [STDOUT_]
    );
    assert!(policies.decide("other", "x", Side::Server).is_none());
}

#[test]
fn named_providers_replace_meshconfigs_output() {
    // Istio's "provider only" and "client - inbound": the root names
    // `envoy` for the client side.
    let policies = Policies::default();
    apply(
        &policies,
        vec![root(
            MESH_LOG,
            &[],
            Some(rules(
                "istio-system/envoy",
                &[E(Mode::Client, false, None, &["envoy"])],
            )),
        )],
    );
    assert_eq!(files(&policies, Side::Client), [STDOUT_]);
    // Nothing is said for the server side: `accessLogFile` applies, as
    // istiod falls back to it when a proxy's class has no logging.
    assert_eq!(files(&policies, Side::Server), [MESH_LOG]);
}

#[test]
fn default_providers_apply_and_a_namespace_can_replace_or_disable_them() {
    let policies = Policies::default();
    apply(&policies, vec![root(MESH_LOG, &["envoy"], None)]);
    // "default provider only".
    assert_eq!(files(&policies, Side::Client), [STDOUT_]);
    // "override namespace": the namespace names `json`; `envoy` is out
    // of scope.
    apply(
        &policies,
        vec![shop(
            Some(rules("shop/json", &[E(BOTH, false, None, &["JSON"])])),
            vec![],
        )],
    );
    assert_eq!(files(&policies, Side::Client), [JSON], "names ignore case");
    // "empty config inherits": an entry without providers, the defaults.
    apply(
        &policies,
        vec![shop(
            Some(rules("shop/empty", &[E(BOTH, false, None, &[])])),
            vec![],
        )],
    );
    assert_eq!(files(&policies, Side::Client), [STDOUT_]);
    // "disable default".
    apply(
        &policies,
        vec![shop(
            Some(rules("shop/off", &[E(BOTH, true, None, &[])])),
            vec![],
        )],
    );
    assert!(files(&policies, Side::Client).is_empty());
    // "non existing": a name no provider has resolves to nothing, and
    // MeshConfig's own output applies.
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/typo",
                &[E(BOTH, false, None, &["custom-provider"])],
            )),
            vec![],
        )],
    );
    assert_eq!(files(&policies, Side::Client), [MESH_LOG]);
    // Envoy's gRPC service resolves (istiod builds it): no fallback, and no
    // line here.
    apply(
        &policies,
        vec![shop(
            Some(rules("shop/otel", &[E(BOTH, false, None, &["http-als"])])),
            vec![],
        )],
    );
    assert!(policies.decide("shop", "w", Side::Client).is_none());
}

#[test]
fn an_otel_provider_is_an_output_to_its_collector() {
    let policies = Policies::default();
    let mut mesh = root(MESH_LOG, &[], None);
    mesh.providers.push(AccessLogProvider {
        name: "OTel".into(),
        otel: Some(weft_proto::telemetry::OtelAccessLog {
            service: "otel.observability.svc.cluster.local".into(),
            port: 4317,
            body: vec![FormatToken {
                operator: "RESPONSE_CODE".into(),
                ..Default::default()
            }],
            attributes: vec![],
        }),
        ..Default::default()
    });
    apply(&policies, vec![mesh]);
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/otel",
                &[E(Mode::Server, false, Some("connection.mtls"), &["otel"])],
            )),
            vec![],
        )],
    );
    assert_eq!(
        lines(&policies, "w", Side::Server),
        [(
            "otlp://otel.observability.svc.cluster.local:4317".to_string(),
            Some("connection.mtls".to_string())
        )],
        "named case-insensitively, with its filter"
    );
    assert_eq!(
        files(&policies, Side::Client),
        [MESH_LOG],
        "the entry is for the server side"
    );
    let decision = policies.decide("shop", "w", Side::Server).unwrap();
    let output = &decision.lines().next().unwrap().output;
    assert!(matches!(&output.to, Destination::Collector(c) if c.provider == "otel"));
}

#[test]
fn several_providers_and_filters_per_provider() {
    let policies = Policies::default();
    apply(&policies, vec![root("", &[], None)]);
    // "multi accesslogging": two entries, two providers; the filter of
    // each provider's last entry (for the side) applies to it.
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/multi",
                &[
                    E(BOTH, false, Some("response.code"), &["envoy"]),
                    E(BOTH, false, None, &["json"]),
                    E(Mode::Server, false, Some("response.size"), &["envoy"]),
                ],
            )),
            vec![],
        )],
    );
    assert_eq!(
        lines(&policies, "w", Side::Client),
        [
            (STDOUT_.into(), Some("response.code".into())),
            (JSON.into(), None)
        ]
    );
    assert_eq!(
        lines(&policies, "w", Side::Server),
        [
            (STDOUT_.into(), Some("response.size".into())),
            (JSON.into(), None)
        ]
    );
    // "multi accesslogging with disabled".
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/multi",
                &[
                    E(BOTH, false, None, &["envoy"]),
                    E(BOTH, true, None, &["json"]),
                ],
            )),
            vec![],
        )],
    );
    assert_eq!(files(&policies, Side::Client), [STDOUT_]);
}

#[test]
fn workload_telemetries_merge_in_order_after_the_namespace() {
    // "client - disabled - enabled": the root logs the client side, the
    // namespace turns it off, a selector Telemetry on again.
    let policies = Policies::default();
    apply(
        &policies,
        vec![root(
            "",
            &[],
            Some(rules(
                "istio-system/client",
                &[E(Mode::Client, false, None, &["envoy"])],
            )),
        )],
    );
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/off",
                &[E(Mode::Client, true, None, &["envoy"])],
            )),
            vec![
                WorkloadRules {
                    rules: Some(rules(
                        "shop/on",
                        &[E(Mode::Client, false, None, &["envoy"])],
                    )),
                    workload_uids: vec!["api".into(), "web".into()],
                },
                WorkloadRules {
                    rules: Some(rules("shop/web-off", &[E(BOTH, true, None, &[])])),
                    workload_uids: vec!["web".into()],
                },
            ],
        )],
    );
    assert!(files(&policies, Side::Client).is_empty());
    assert_eq!(lines(&policies, "api", Side::Client).len(), 1);
    assert!(
        lines(&policies, "web", Side::Client).is_empty(),
        "the newer Telemetry picking web disables what it inherits"
    );
}

#[test]
fn an_entry_without_providers_filters_those_it_inherits() {
    // weft's reading (istiod takes a filter only from an entry that names
    // its provider): the default `envoy`, filtered.
    let policies = Policies::default();
    apply(&policies, vec![root(MESH_LOG, &["envoy"], None)]);
    apply(
        &policies,
        vec![shop(
            Some(rules(
                "shop/errors",
                &[E(BOTH, false, Some("response.code"), &[])],
            )),
            vec![],
        )],
    );
    assert_eq!(
        lines(&policies, "w", Side::Client),
        [(STDOUT_.into(), Some("response.code".into()))]
    );
}

#[test]
fn outputs_open_on_their_first_line_one_sink_per_file() {
    let dir = std::env::temp_dir().join(format!("weft-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("both.log");
    let path = file.display().to_string();
    let log = super::super::AccessLog::default();
    let mut policy = root(MESH_LOG, &["a", "b", "unused"], None);
    policy.providers = ["a", "b"]
        .iter()
        .map(|name| AccessLogProvider {
            name: name.to_string(),
            output: Some(out(&path)),
            ..Default::default()
        })
        .chain(std::iter::once(AccessLogProvider {
            name: "unused".into(),
            output: Some(out(&dir.join("never.log").display().to_string())),
            ..Default::default()
        }))
        .collect();
    policy.default_providers = vec!["a".into(), "b".into()];
    log.apply(
        vec![(
            "istio-system".into(),
            "1".into(),
            Compiled::compile(&policy).unwrap(),
        )],
        &[],
    );
    let decision = log.decide("shop", "w", Side::Client).unwrap();
    assert_eq!(decision.lines().count(), 2);
    let mut entry = super::super::Entry::new(std::time::SystemTime::now(), Default::default());
    entry.http = Some(super::super::Http::get(204));
    log.write(&decision, &entry);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text == "204\n204\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "two lines: {text:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(log.sinks.lock().unwrap().len(), 1, "one sink for the file");
    assert!(!dir.join("never.log").exists(), "a provider no line uses");
    // A new root without that file closes it.
    log.apply(
        vec![(
            "istio-system".into(),
            "2".into(),
            Compiled::compile(&root(MESH_LOG, &[], None)).unwrap(),
        )],
        &[],
    );
    assert!(log.sinks.lock().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
