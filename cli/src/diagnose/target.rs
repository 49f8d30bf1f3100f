//! SRC and DST as the user wrote them, resolved against the control
//! plane's objects: a pod (`ns/name`, `name.ns`, or `name` in `default`)
//! or, for DST, a Service (`name.ns`, `name.ns.svc[.<suffix>]`, `ns/name`)
//! with an optional `:PORT`. An unknown name is an error that lists close
//! names (edit distance, or a shared prefix).

use super::inputs::{Item, Objects, PodSpec, ServiceSpec};

/// Where the request goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Through a Service's VIP (routes apply on HTTP ports).
    Service(Item<ServiceSpec>),
    /// Straight to a pod's address (L4 at the client).
    Pod(Item<PodSpec>),
}

/// SRC and DST, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub source: Item<PodSpec>,
    pub destination: Destination,
    /// The port asked for, else the Service's only (or first) port.
    pub port: Option<u16>,
}

impl Item<PodSpec> {
    pub fn display(&self) -> String {
        self.key()
    }
}

impl Resolved {
    /// `Service shop/api` or `Pod shop/api-0`.
    pub fn destination_name(&self) -> String {
        match &self.destination {
            Destination::Service(s) => format!("Service {}", s.key()),
            Destination::Pod(p) => format!("Pod {}", p.key()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{what} `{given}` is not a pod{services} the control plane knows{}", suggestions(.close))]
    Unknown {
        what: &'static str,
        given: String,
        services: &'static str,
        close: Vec<String>,
    },
    #[error("`{0}`: the port is not a number from 1 to 65535")]
    BadPort(String),
}

fn suggestions(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(", "))
    }
}

/// `(namespace, name)` candidates for a written name.
fn candidates(given: &str, suffix: &str) -> Vec<(String, String)> {
    if let Some((ns, name)) = given.split_once('/') {
        return vec![(ns.to_string(), name.to_string())];
    }
    let host = given
        .strip_suffix(&format!(".svc.{suffix}"))
        .or_else(|| given.strip_suffix(".svc"))
        .unwrap_or(given);
    match host.split_once('.') {
        Some((name, ns)) if !ns.contains('.') => vec![(ns.to_string(), name.to_string())],
        Some(_) => vec![],
        None => vec![("default".to_string(), host.to_string())],
    }
}

fn find_pod<'a>(objects: &'a Objects, given: &str, suffix: &str) -> Option<&'a Item<PodSpec>> {
    candidates(given, suffix)
        .into_iter()
        .find_map(|(ns, name)| {
            objects
                .pods
                .iter()
                .find(|p| p.namespace == ns && p.name == name)
        })
}

fn find_service<'a>(
    objects: &'a Objects,
    given: &str,
    suffix: &str,
) -> Option<&'a Item<ServiceSpec>> {
    candidates(given, suffix)
        .into_iter()
        .find_map(|(ns, name)| {
            objects
                .services
                .iter()
                .find(|s| s.namespace == ns && s.name == name)
        })
}

/// A pod as written (`ns/name`, `name.ns`, or `name` in `default`);
/// `what` names the argument in the error (e.g. "SRC", "POD").
pub fn resolve_pod<'a>(
    objects: &'a Objects,
    given: &str,
    suffix: &str,
    what: &'static str,
) -> Result<&'a Item<PodSpec>, TargetError> {
    find_pod(objects, given, suffix).ok_or_else(|| TargetError::Unknown {
        what,
        given: given.to_string(),
        services: "",
        close: close_names(given, objects.pods.iter().map(|p| p.key())),
    })
}

/// Resolves SRC and DST[:PORT].
pub fn resolve(
    objects: &Objects,
    src: &str,
    dst: &str,
    suffix: &str,
) -> Result<Resolved, TargetError> {
    let source = resolve_pod(objects, src, suffix, "SRC")?.clone();
    let (dst, port) = split_port(dst)?;
    // `ns/name` reads as a pod first; a host name as a Service first.
    let as_pod = || {
        find_pod(objects, dst, suffix)
            .cloned()
            .map(Destination::Pod)
    };
    let as_service = || {
        find_service(objects, dst, suffix)
            .cloned()
            .map(Destination::Service)
    };
    let destination = if dst.contains('/') {
        as_pod().or_else(as_service)
    } else {
        as_service().or_else(as_pod)
    };
    let destination = destination.ok_or_else(|| TargetError::Unknown {
        what: "DST",
        given: dst.to_string(),
        services: " or Service",
        close: close_names(
            dst,
            objects.pods.iter().map(|p| p.key()).chain(
                objects
                    .services
                    .iter()
                    .map(|s| format!("{}.{}", s.name, s.namespace)),
            ),
        ),
    })?;
    let port = port.or(match &destination {
        Destination::Service(s) => s.spec.ports.first().map(|p| p.port),
        Destination::Pod(_) => None,
    });
    Ok(Resolved {
        source,
        destination,
        port,
    })
}

/// `host:port` → (`host`, port); a name without a numeric tail has no port.
fn split_port(given: &str) -> Result<(&str, Option<u16>), TargetError> {
    match given.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((host, Some(p))),
            _ => Err(TargetError::BadPort(given.to_string())),
        },
        None => Ok((given, None)),
    }
}

/// Levenshtein distance, in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(here).min(row[j])
            };
            prev = here;
        }
    }
    row[b.len()]
}

/// Up to five known names close to `given`, closest first: within a third
/// of its length in edits (at least 2), or its name alone (without the
/// namespace) within a third of the name's (at least 1), or sharing the
/// name's beginning.
pub fn close_names(given: &str, known: impl Iterator<Item = String>) -> Vec<String> {
    let bare = |s: &str| -> String {
        let s = s.rsplit('/').next().unwrap_or(s);
        s.split('.').next().unwrap_or(s).to_string()
    };
    let given_bare = bare(given);
    let limit = (given.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, String)> = known
        .filter_map(|name| {
            let whole = edit_distance(given, &name);
            let by_name = edit_distance(&given_bare, &bare(&name));
            let close = whole <= limit || by_name <= (given_bare.chars().count() / 3).max(1);
            let prefix = given_bare.len() >= 3
                && (bare(&name).starts_with(&given_bare) || given_bare.starts_with(&bare(&name)));
            (close || prefix).then_some((whole.min(by_name), name))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("api", "api"), 0);
    }

    #[test]
    fn close_names_by_typo_and_prefix() {
        let known = [
            "shop/api",
            "shop/api-v2",
            "shop/web",
            "other/database",
            "shop/catalogue-v1",
        ];
        let known = || known.iter().map(|s| s.to_string());
        assert_eq!(close_names("shop/apo", known()), ["shop/api"]);
        assert_eq!(
            close_names("shop/api-v", known()),
            ["shop/api-v2", "shop/api"]
        );
        assert_eq!(close_names("shop/cat", known()), ["shop/catalogue-v1"]);
        assert_eq!(close_names("shop/databse", known()), ["other/database"]);
        assert!(close_names("zzzzzzzz", known()).is_empty());
        // A prefix of the name: `web` for `shop/web`.
        assert_eq!(close_names("frontend/web", known()), ["shop/web"]);
    }

    #[test]
    fn names_as_written() {
        assert_eq!(
            candidates("shop/api", "cluster.local"),
            [("shop".into(), "api".into())]
        );
        assert_eq!(
            candidates("api.shop.svc.cluster.local", "cluster.local"),
            [("shop".into(), "api".into())]
        );
        assert_eq!(
            candidates("api.shop", "cluster.local"),
            [("shop".into(), "api".into())]
        );
        assert_eq!(
            candidates("api", "cluster.local"),
            [("default".into(), "api".into())]
        );
        assert_eq!(split_port("api.shop:8080"), Ok(("api.shop", Some(8080))));
        assert_eq!(split_port("api.shop"), Ok(("api.shop", None)));
        assert!(split_port("api.shop:http").is_err());
    }
}
