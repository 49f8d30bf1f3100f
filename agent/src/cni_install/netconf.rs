//! weft-cni's place in a CNI network configuration: pure functions over a
//! parsed file, no I/O.
//!
//! A `.conflist` holds a network list (`{"name", "cniVersion", "plugins":
//! [...]}`) the runtime runs in order; a `.conf` or `.json` holds one
//! plugin (`"type"` at the top). weft-cni must run after the primary
//! plugin (it reads the pod's IPs from `prevResult`), so it goes last.

use super::json::{Json, Object};

/// The plugin's `type`, which is also its binary's name in the CNI bin dir.
pub const PLUGIN_TYPE: &str = "weft-cni";

/// weft-cni's entry in a plugin list: the keys `weft-cni` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEntry {
    /// The agent's `--cni-socket`.
    pub agent_socket: String,
    /// How long a pod ADD waits for the agent.
    pub timeout_seconds: u64,
}

/// How the container runtime reads a config file, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.conflist`: a network list.
    List,
    /// `.conf` or `.json`: a single plugin.
    Single,
}

/// What chaining weft-cni into a config takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// It is chained as wanted: leave the file alone.
    None,
    /// Write this in the file's place.
    Rewrite(Json),
    /// A single-plugin config: write this network list as `<stem>.conflist`
    /// and remove the single-plugin file.
    Convert(Json),
}

// === impl PluginEntry ===

impl PluginEntry {
    fn fields(&self) -> [(&'static str, Json); 3] {
        [
            ("type", Json::string(PLUGIN_TYPE)),
            ("agent_socket", Json::string(&self.agent_socket)),
            ("timeout_seconds", Json::Number(self.timeout_seconds.into())),
        ]
    }

    fn object(&self) -> Json {
        Json::Object(
            self.fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
}

// === impl Format ===

impl Format {
    /// The format of a file the runtime reads (containerd and CRI-O: names
    /// ending in `.conflist`, `.conf` or `.json`); `None` for any other.
    pub fn of(name: &str) -> Option<Format> {
        if name.ends_with(".conflist") {
            Some(Format::List)
        } else if name.ends_with(".conf") || name.ends_with(".json") {
            Some(Format::Single)
        } else {
            None
        }
    }
}

/// Chains weft-cni into `doc`, a file of format `format`. `Err` is why the
/// file cannot be chained into (the runtime could not use it either).
pub fn chain(doc: Json, format: Format, entry: &PluginEntry) -> Result<Edit, String> {
    let Json::Object(mut top) = doc else {
        return Err("not a JSON object".into());
    };
    match format {
        Format::List => {
            let changed = chain_list(&mut top, entry)?;
            Ok(if changed {
                Edit::Rewrite(Json::Object(top))
            } else {
                Edit::None
            })
        }
        Format::Single => convert(top, entry).map(Edit::Convert),
    }
}

/// Adds weft-cni at the end of `plugins`, or sets its keys where it is
/// already; whether anything changed.
fn chain_list(top: &mut Object, entry: &PluginEntry) -> Result<bool, String> {
    let plugins = match top.get_mut("plugins") {
        Some(Json::Array(plugins)) if !plugins.is_empty() => plugins,
        Some(Json::Array(_)) => return Err("its `plugins` list is empty".into()),
        Some(_) => return Err("`plugins` is not a list".into()),
        None => return Err("no `plugins` list (a .conflist holds a network list)".into()),
    };
    if let Some(i) = plugins.iter().position(|p| p.as_object().is_none()) {
        return Err(format!("plugin {i} is not a JSON object"));
    }
    let mut changed = false;
    let mut found = false;
    for plugin in plugins.iter_mut() {
        let Json::Object(plugin) = plugin else {
            continue;
        };
        if !is_weft(plugin) {
            continue;
        }
        found = true;
        for (key, value) in entry.fields() {
            if plugin.get(key) != Some(&value) {
                plugin.insert(key, value);
                changed = true;
            }
        }
    }
    if !found {
        plugins.push(entry.object());
        changed = true;
    }
    Ok(changed)
}

/// A single-plugin config as a network list, the way istio-cni converts
/// one: `name` and `cniVersion` stay at the top (in their places), every
/// other key goes to the first plugin, weft-cni is the second.
fn convert(single: Object, entry: &PluginEntry) -> Result<Json, String> {
    match single.get("type") {
        Some(Json::String(t)) if t == PLUGIN_TYPE => {
            return Err(format!(
                "its only plugin is {PLUGIN_TYPE}: there is no primary CNI plugin to chain after"
            ));
        }
        Some(Json::String(_)) => {}
        Some(_) => return Err("`type` is not a string".into()),
        None if single.get("plugins").is_some() => {
            return Err(
                "it holds a network list (`plugins`) but is not named .conflist, so the runtime reads it as a single plugin without a `type`; rename it to .conflist"
                    .into(),
            );
        }
        None => return Err("no `type` (a .conf or .json file holds one plugin)".into()),
    }
    let mut top = Object::default();
    let mut plugin = Object::default();
    for (key, value) in single.iter() {
        match key {
            "name" | "cniVersion" => top.insert(key, value.clone()),
            _ => plugin.insert(key, value.clone()),
        }
    }
    top.insert(
        "plugins",
        Json::Array(vec![Json::Object(plugin), entry.object()]),
    );
    Ok(Json::Object(top))
}

/// Removes every weft-cni plugin from a network list; how many.
pub fn unchain(doc: &mut Json) -> usize {
    let Some(Json::Array(plugins)) = (match doc {
        Json::Object(top) => top.get_mut("plugins"),
        _ => None,
    }) else {
        return 0;
    };
    let before = plugins.len();
    plugins.retain(|p| !p.as_object().is_some_and(is_weft));
    before - plugins.len()
}

/// Whether a network list chains weft-cni.
pub fn is_chained(doc: &Json) -> bool {
    let plugins = doc.as_object().and_then(|top| top.get("plugins"));
    matches!(plugins, Some(Json::Array(p)) if p.iter().any(|p| p.as_object().is_some_and(is_weft)))
}

fn is_weft(plugin: &Object) -> bool {
    plugin.get("type").and_then(Json::as_str) == Some(PLUGIN_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> PluginEntry {
        PluginEntry {
            agent_socket: "/var/run/weft/cni.sock".into(),
            timeout_seconds: 60,
        }
    }

    fn parse(text: &str) -> Json {
        serde_json::from_str(text).unwrap()
    }

    fn text(json: &Json) -> String {
        serde_json::to_string(json).unwrap()
    }

    const WEFT: &str =
        r#"{"type":"weft-cni","agent_socket":"/var/run/weft/cni.sock","timeout_seconds":60}"#;

    #[test]
    fn appended_last_to_a_network_list_keeping_everything_else() {
        let doc = parse(
            r#"{"name":"k8s","cniVersion":"1.0.0","plugins":[{"type":"ptp","z":1,"a":{"y":2,"b":3}},{"type":"portmap"}],"zz":true}"#,
        );
        let Edit::Rewrite(out) = chain(doc, Format::List, &entry()).unwrap() else {
            panic!("expected a rewrite")
        };
        assert_eq!(
            text(&out),
            format!(
                r#"{{"name":"k8s","cniVersion":"1.0.0","plugins":[{{"type":"ptp","z":1,"a":{{"y":2,"b":3}}}},{{"type":"portmap"}},{WEFT}],"zz":true}}"#
            )
        );
        assert!(is_chained(&out));
        assert_eq!(chain(out, Format::List, &entry()).unwrap(), Edit::None);
    }

    #[test]
    fn an_existing_entry_is_updated_in_place() {
        let doc = parse(
            r#"{"plugins":[{"type":"bridge"},{"timeout_seconds":5,"type":"weft-cni","x":"kept","agent_socket":"/old"},{"type":"bandwidth"}]}"#,
        );
        let Edit::Rewrite(out) = chain(doc, Format::List, &entry()).unwrap() else {
            panic!("expected a rewrite")
        };
        assert_eq!(
            text(&out),
            r#"{"plugins":[{"type":"bridge"},{"timeout_seconds":60,"type":"weft-cni","x":"kept","agent_socket":"/var/run/weft/cni.sock"},{"type":"bandwidth"}]}"#
        );
    }

    #[test]
    fn a_single_plugin_becomes_a_list_with_name_and_version_on_top() {
        let doc = parse(
            r#"{"cniVersion":"0.4.0","name":"net","type":"bridge","ipam":{"type":"host-local"},"isGateway":true}"#,
        );
        let Edit::Convert(out) = chain(doc, Format::Single, &entry()).unwrap() else {
            panic!("expected a conversion")
        };
        assert_eq!(
            text(&out),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"net","plugins":[{{"type":"bridge","ipam":{{"type":"host-local"}},"isGateway":true}},{WEFT}]}}"#
            )
        );
    }

    #[test]
    fn files_the_runtime_could_not_use_are_refused_with_the_reason() {
        let refused = |text: &str, format| chain(parse(text), format, &entry()).unwrap_err();
        assert!(refused(r#"[1]"#, Format::List).contains("not a JSON object"));
        assert!(refused(r#"{"name":"x"}"#, Format::List).contains("no `plugins`"));
        assert!(refused(r#"{"plugins":[]}"#, Format::List).contains("empty"));
        assert!(refused(r#"{"plugins":[{"type":"a"},3]}"#, Format::List).contains("plugin 1"));
        assert!(refused(r#"{"plugins":[{"type":"a"}]}"#, Format::Single).contains(".conflist"));
        assert!(refused(r#"{"name":"x"}"#, Format::Single).contains("no `type`"));
        assert!(refused(r#"{"type":"weft-cni"}"#, Format::Single).contains("no primary"));
    }

    #[test]
    fn unchain_removes_only_weft_cni() {
        let mut doc = parse(&format!(
            r#"{{"name":"k8s","plugins":[{{"type":"calico"}},{WEFT},{{"type":"portmap"}}]}}"#
        ));
        assert_eq!(unchain(&mut doc), 1);
        assert_eq!(
            text(&doc),
            r#"{"name":"k8s","plugins":[{"type":"calico"},{"type":"portmap"}]}"#
        );
        assert!(!is_chained(&doc));
        assert_eq!(unchain(&mut doc), 0);
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::of("10-calico.conflist"), Some(Format::List));
        assert_eq!(Format::of("87-podman.conf"), Some(Format::Single));
        assert_eq!(Format::of("99-x.json"), Some(Format::Single));
        assert_eq!(Format::of("10-x.conflist.bak"), None);
        assert_eq!(Format::of("README"), None);
    }
}
