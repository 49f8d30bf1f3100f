//! Request paths: discovery documents and resource URLs
//! (`/api/v1/namespaces/{ns}/pods/{name}/status`,
//! `/apis/{group}/{version}/{plural}`, ...).

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    GroupList,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`.
    ResourceList { group: String, version: String },
    /// A collection, an object or an object's subresource.
    Resource(ResourcePath),
    /// Anything else.
    Unknown,
}

/// The parts of a resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a request path (without query).
pub fn parse(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis"] => Route::GroupList,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::Unknown,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    // `namespaces/{ns}/{plural}/...` unless it is a Namespace's own subresource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns.to_string()), prepend(plural, tail))
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name.to_string()), None),
        [plural, name, sub] => (plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Route::Unknown,
    };
    Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        plural: plural.to_string(),
        name,
        subresource,
    })
}

fn prepend<'a>(first: &'a str, tail: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![first];
    all.extend_from_slice(tail);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(
        group: &str,
        ns: Option<&str>,
        plural: &str,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: if group.is_empty() {
                "v1".into()
            } else {
                "v1beta1".into()
            },
            namespace: ns.map(Into::into),
            plural: plural.into(),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn paths() {
        assert_eq!(parse("/api/v1/pods"), res("", None, "pods", None, None));
        assert_eq!(
            parse("/api/v1/namespaces/a/pods/p/status"),
            res("", Some("a"), "pods", Some("p"), Some("status"))
        );
        assert_eq!(
            parse("/api/v1/namespaces/a"),
            res("", None, "namespaces", Some("a"), None)
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/status"),
            res("", None, "namespaces", Some("a"), Some("status"))
        );
        assert_eq!(
            parse("/api/v1/namespaces"),
            res("", None, "namespaces", None, None)
        );
        assert_eq!(
            parse("/apis/networking.istio.io/v1beta1/namespaces/x/virtualservices"),
            res(
                "networking.istio.io",
                Some("x"),
                "virtualservices",
                None,
                None
            )
        );
        assert_eq!(parse("/apis/g"), Route::Group("g".into()));
        assert_eq!(parse("/version"), Route::Version);
        assert_eq!(parse("/api/v1/a/b/c/d"), Route::Unknown);
    }
}
