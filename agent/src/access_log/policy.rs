//! The access-log policies received from the control plane
//! (`weft.telemetry.v1.AccessLogPolicy`, one per namespace), and the
//! decision they make for one side of one request or connection: log or
//! not, with which filter. Istio's scopes: the root namespace's
//! Telemetry is mesh-wide, a namespace's applies to its pods, one with a
//! selector to the pods it picks; the most specific that says something
//! for the side (CLIENT, SERVER) wins.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use weft_proto::telemetry::{AccessLogPolicy, AccessLogRules, Encoding, MeshAccessLog, Mode};

use super::{entry::Headers, filter::Filter, format::Format};

/// Which side of the traffic a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's agent (`reporter="source"`): Telemetry mode CLIENT.
    Client,
    /// The server's agent: mode SERVER.
    Server,
}

/// One `accessLogging` entry, compiled.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    mode: Mode,
    disabled: bool,
    filter: Option<Arc<Filter>>,
}

/// One Telemetry's entries.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    telemetry: String,
    rules: Vec<Rule>,
}

impl Rules {
    fn compile(r: &AccessLogRules) -> Result<Rules, String> {
        let rules = r
            .logging
            .iter()
            .map(|l| {
                let filter = match &l.filter {
                    Some(f) => match &f.expr {
                        Some(e) => Some(Arc::new(Filter::checked(f.text.clone(), e.clone())?)),
                        None => None,
                    },
                    None => None,
                };
                Ok(Rule {
                    mode: l.mode(),
                    disabled: l.disabled,
                    filter,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|e| format!("Telemetry {}: {e}", r.telemetry))?;
        Ok(Rules {
            telemetry: r.telemetry.clone(),
            rules,
        })
    }
}

/// The mesh-wide output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// `/dev/stdout`, a path, or empty (off unless a Telemetry turns it on).
    pub file: String,
    pub format: Arc<Format>,
}

/// Looked up for every request and connection, by keys the control plane
/// sent: a fast hash rather than SipHash's flood resistance.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One namespace's policy, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    mesh: Option<Output>,
    namespace: Option<Arc<Rules>>,
    /// Workload uid → the first Telemetry that picks it.
    workloads: Map<String, Arc<Rules>>,
}

impl Compiled {
    /// Converts a policy; the error names what the agent cannot render.
    pub fn compile(p: &AccessLogPolicy) -> Result<Compiled, String> {
        let mesh = match &p.mesh {
            Some(m) => Some(output(m)?),
            None => None,
        };
        let mut workloads = Map::default();
        for w in &p.workloads {
            let Some(rules) = &w.rules else { continue };
            let rules = Arc::new(Rules::compile(rules)?);
            for uid in &w.workload_uids {
                workloads
                    .entry(uid.clone())
                    .or_insert_with(|| rules.clone());
            }
        }
        Ok(Compiled {
            mesh,
            namespace: match &p.namespace_rules {
                Some(r) => Some(Arc::new(Rules::compile(r)?)),
                None => None,
            },
            workloads,
        })
    }
}

fn output(m: &MeshAccessLog) -> Result<Output, String> {
    let format = match m.encoding() {
        Encoding::Json => Format::json(&m.json)?,
        Encoding::Text => Format::text(&m.text)?,
    };
    Ok(Output {
        file: m.file.clone(),
        format: Arc::new(format),
    })
}

/// What to do for one line.
#[derive(Debug, Clone)]
pub struct Decision {
    pub format: Arc<Format>,
    pub filter: Option<Arc<Filter>>,
}

impl Decision {
    /// What a logged request keeps of its headers: those the format
    /// prints and the filter reads.
    pub fn request_headers(&self, map: &http::HeaderMap) -> Headers {
        let filter = self
            .filter
            .as_ref()
            .map_or(&[][..], |f| f.request_headers());
        Headers::capture(map, self.format.request_headers(), filter)
    }

    /// What a logged response keeps of its headers.
    pub fn response_headers(&self, map: &http::HeaderMap) -> Headers {
        let filter = self
            .filter
            .as_ref()
            .map_or(&[][..], |f| f.response_headers());
        Headers::capture(map, self.format.response_headers(), filter)
    }

    /// Whether the line may print, or the filter read, the request's
    /// header `name`.
    pub fn wants_request_header(&self, name: &http::HeaderName) -> bool {
        self.format.request_headers().contains(name)
            || self
                .filter
                .as_ref()
                .is_some_and(|f| f.request_headers().contains(name))
    }
}

/// The policies by namespace.
#[derive(Debug, Default)]
pub struct Policies {
    inner: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Namespace → (version, policy).
    namespaces: Map<String, (String, Arc<Compiled>)>,
    /// The root namespace's (the one carrying `mesh`).
    root: Option<Arc<Compiled>>,
}

impl Policies {
    /// The versions held, for `initial_resource_versions`.
    pub fn versions(&self) -> HashMap<String, String> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state
            .namespaces
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect()
    }

    /// Applies an xDS response (already compiled); returns the mesh
    /// output now in force, if any.
    pub fn apply(
        &self,
        upserts: Vec<(String, String, Compiled)>,
        removed: &[String],
    ) -> Option<Output> {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for name in removed {
            state.namespaces.remove(name);
        }
        for (name, version, compiled) in upserts {
            state.namespaces.insert(name, (version, Arc::new(compiled)));
        }
        state.root = state
            .namespaces
            .values()
            .find(|(_, c)| c.mesh.is_some())
            .map(|(_, c)| c.clone());
        state.root.as_ref().and_then(|r| r.mesh.clone())
    }

    /// Whether `side` of the workload `uid` in `namespace` logs, and how.
    /// `None` also before the control plane has sent the mesh's policy.
    pub fn decide(&self, namespace: &str, uid: &str, side: Side) -> Option<Decision> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let root = state.root.as_ref()?;
        let mesh = root.mesh.as_ref()?;
        let own = state.namespaces.get(namespace).map(|(_, c)| c);
        let levels = [
            root.namespace.as_ref(),
            own.filter(|c| !Arc::ptr_eq(c, root))
                .and_then(|c| c.namespace.as_ref()),
            own.and_then(|c| c.workloads.get(uid)),
        ];
        let mut on = !mesh.file.is_empty();
        let mut filter = None;
        for rules in levels.into_iter().flatten() {
            let mut said = false;
            for rule in &rules.rules {
                let applies = matches!(
                    (rule.mode, side),
                    (Mode::ClientAndServer, _)
                        | (Mode::Client, Side::Client)
                        | (Mode::Server, Side::Server)
                );
                if !applies {
                    continue;
                }
                if !said {
                    // A more specific Telemetry replaces what the less
                    // specific ones said for this side.
                    filter = None;
                    said = true;
                }
                on = !rule.disabled;
                if rule.filter.is_some() {
                    filter = rule.filter.clone();
                }
            }
        }
        on.then(|| Decision {
            format: mesh.format.clone(),
            filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::telemetry::{AccessLogging, Expr, FormatToken, WorkloadRules, expr, value};

    use super::*;

    fn rules(name: &str, entries: &[(Mode, bool, bool)]) -> AccessLogRules {
        AccessLogRules {
            telemetry: name.into(),
            logging: entries
                .iter()
                .map(|(mode, disabled, filtered)| AccessLogging {
                    mode: *mode as i32,
                    disabled: *disabled,
                    filter: filtered.then(|| weft_proto::telemetry::Filter {
                        text: "connection.mtls".into(),
                        expr: Some(Expr {
                            kind: Some(expr::Kind::Value(weft_proto::telemetry::Value {
                                kind: Some(value::Kind::Attribute("connection.mtls".into())),
                            })),
                        }),
                    }),
                })
                .collect(),
        }
    }

    fn mesh(file: &str) -> MeshAccessLog {
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

    #[test]
    fn the_most_specific_scope_decides_each_side() {
        let policies = Policies::default();
        assert!(
            policies.decide("shop", "w", Side::Client).is_none(),
            "no mesh policy yet"
        );
        apply(
            &policies,
            vec![AccessLogPolicy {
                namespace: "istio-system".into(),
                mesh: Some(mesh("/dev/stdout")),
                ..Default::default()
            }],
        );
        assert!(
            policies.decide("shop", "w", Side::Client).is_some(),
            "on by default"
        );
        apply(
            &policies,
            vec![AccessLogPolicy {
                namespace: "shop".into(),
                namespace_rules: Some(rules("shop/off", &[(Mode::ClientAndServer, true, false)])),
                workloads: vec![WorkloadRules {
                    rules: Some(rules("shop/api", &[(Mode::Server, false, true)])),
                    workload_uids: vec!["api".into()],
                }],
                ..Default::default()
            }],
        );
        assert!(policies.decide("shop", "w", Side::Client).is_none());
        assert!(policies.decide("shop", "api", Side::Client).is_none());
        let server = policies.decide("shop", "api", Side::Server).unwrap();
        assert_eq!(server.filter.unwrap().text, "connection.mtls");
        assert!(policies.decide("other", "x", Side::Server).is_some());
        // Mesh-wide: the root namespace's rules; off with an empty file
        // unless a Telemetry turns it on.
        apply(
            &policies,
            vec![AccessLogPolicy {
                namespace: "istio-system".into(),
                mesh: Some(mesh("")),
                namespace_rules: Some(rules("istio-system/mesh", &[(Mode::Client, false, false)])),
                ..Default::default()
            }],
        );
        assert!(policies.decide("other", "x", Side::Client).is_some());
        assert!(policies.decide("other", "x", Side::Server).is_none());
    }
}
