//! `weftctl manifest generate`: the Kubernetes manifests of `deploy/`,
//! embedded at build time, with the namespace, image and trust domain
//! substituted.
//!
//! The files in `deploy/` are valid as they are (`kubectl apply -f
//! deploy/` installs the defaults); each line that carries a value to
//! substitute ends in a `# weftctl:<key>` marker, and only the default
//! value on a marked line is replaced.

use std::fmt::Write as _;

/// The manifests, in the order they are applied.
pub const FILES: [(&str, &str); 3] = [
    (
        "deploy/istio-crds.yaml",
        include_str!("../../deploy/istio-crds.yaml"),
    ),
    (
        "deploy/weft-control.yaml",
        include_str!("../../deploy/weft-control.yaml"),
    ),
    (
        "deploy/weft-agent.yaml",
        include_str!("../../deploy/weft-agent.yaml"),
    ),
];

pub const DEFAULT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The image the files name: `weft:<crate version>`.
pub fn default_image() -> String {
    format!("weft:{}", env!("CARGO_PKG_VERSION"))
}

/// What can be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// Namespace of the control plane and the agents.
    pub namespace: String,
    /// Image holding weft-control, weft-agent and weft-cni.
    pub image: String,
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            namespace: DEFAULT_NAMESPACE.into(),
            image: default_image(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error(
        "--namespace `{0}` is not a valid namespace name (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    Namespace(String),
    #[error(
        "--trust-domain `{0}` is not a valid trust domain (lowercase letters, digits, '.', '-', '_')"
    )]
    TrustDomain(String),
    #[error(
        "--image `{0}` is not an image reference (letters, digits and . _ - / : @ only, e.g. registry.example/weft:0.1.0)"
    )]
    Image(String),
    #[error("{file}:{line}: unknown substitution marker `weftctl:{key}`")]
    UnknownMarker {
        file: &'static str,
        line: usize,
        key: String,
    },
    #[error("{file}:{line}: the line marked `weftctl:{key}` does not hold the default `{default}`")]
    NoDefault {
        file: &'static str,
        line: usize,
        key: String,
        default: String,
    },
}

impl Values {
    pub fn validate(&self) -> Result<(), ManifestError> {
        let ns = &self.namespace;
        let ns_ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !ns_ok {
            return Err(ManifestError::Namespace(ns.clone()));
        }
        let td = &self.trust_domain;
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !td_ok {
            return Err(ManifestError::TrustDomain(td.clone()));
        }
        let image = &self.image;
        let image_ok = !image.is_empty()
            && image.as_bytes()[0].is_ascii_alphanumeric()
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if !image_ok {
            return Err(ManifestError::Image(image.clone()));
        }
        Ok(())
    }

    /// (default, chosen) for a marker key.
    fn pair(&self, key: &str) -> Option<(String, &str)> {
        match key {
            "namespace" => Some((DEFAULT_NAMESPACE.into(), &self.namespace)),
            "image" => Some((default_image(), &self.image)),
            "trust-domain" => Some((DEFAULT_TRUST_DOMAIN.into(), &self.trust_domain)),
            _ => None,
        }
    }
}

const MARKER: &str = " # weftctl:";

/// Every manifest, substituted, as one multi-document YAML stream.
pub fn render(values: &Values) -> Result<String, ManifestError> {
    values.validate()?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# weft {} (weftctl manifest generate --namespace {} --image {} --trust-domain {})",
        env!("CARGO_PKG_VERSION"),
        values.namespace,
        values.image,
        values.trust_domain
    );
    for (i, (file, text)) in FILES.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(out, "# Source: {file}");
        for (n, line) in text.lines().enumerate() {
            out.push_str(&substitute(file, n + 1, line, values)?);
            out.push('\n');
        }
    }
    Ok(out)
}

fn substitute(
    file: &'static str,
    line_no: usize,
    line: &str,
    values: &Values,
) -> Result<String, ManifestError> {
    let Some(at) = line.find(MARKER) else {
        return Ok(line.to_string());
    };
    let key = line[at + MARKER.len()..].trim();
    let (default, chosen) = values
        .pair(key)
        .ok_or_else(|| ManifestError::UnknownMarker {
            file,
            line: line_no,
            key: key.to_string(),
        })?;
    let content = &line[..at];
    if !content.contains(&default) {
        return Err(ManifestError::NoDefault {
            file,
            line: line_no,
            key: key.to_string(),
            default,
        });
    }
    Ok(content.replace(&default, chosen))
}

// === The Helm chart ===

/// The Helm chart, from the repository's root.
pub const CHART_DIR: &str = "deploy/charts/weft";

/// The files of the chart made from `deploy/`, as (path in [`CHART_DIR`],
/// contents): a file of CustomResourceDefinitions goes to `crds/` as it is
/// (Helm creates those only where missing and never upgrades or deletes
/// them, as `weftctl install` and `uninstall` do); every other one becomes
/// a template whose marked lines take `{{ .Release.Namespace }}`,
/// `{{ .Values.image }}` and `{{ .Values.trustDomain }}` instead of the
/// defaults, without its `Namespace` object (Helm makes it with
/// `--create-namespace`; a chart cannot own the namespace it is installed
/// into). The rest of the chart is written by hand; `cli/tests/chart.rs`
/// checks the files on disk against these.
pub fn chart_files() -> Result<Vec<(String, String)>, ManifestError> {
    // The same substitution as `render`, with template actions as values.
    let actions = Values {
        namespace: "{{ .Release.Namespace }}".into(),
        image: "{{ .Values.image }}".into(),
        trust_domain: "{{ .Values.trustDomain }}".into(),
    };
    let mut out = Vec::new();
    for (file, text) in FILES {
        let name = file.rsplit('/').next().unwrap_or(file);
        let all_crds = text
            .lines()
            .filter(|l| l.starts_with("kind: "))
            .all(|l| l == "kind: CustomResourceDefinition");
        if all_crds {
            out.push((format!("crds/{name}"), text.to_string()));
        } else {
            out.push((
                format!("templates/{name}"),
                chart_template(file, text, &actions)?,
            ));
        }
    }
    Ok(out)
}

/// One manifest as a template: documents split at `---`, the `Namespace`
/// dropped (the comments above it kept, for the next document), the
/// header's paragraph about `weftctl:` markers replaced by where the
/// template comes from.
fn chart_template(
    file: &'static str,
    text: &str,
    actions: &Values,
) -> Result<String, ManifestError> {
    let mut docs: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (n, line) in text.lines().enumerate() {
        if line == "---" {
            docs.push(Vec::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push((n + 1, line));
        }
    }
    let leading_comments =
        |doc: &[(usize, &str)]| doc.iter().take_while(|(_, l)| l.starts_with('#')).count();
    // The header, without its paragraph about markers (a `#` line
    // separates paragraphs and goes with the one below it).
    let header_len = leading_comments(&docs[0]);
    let header: Vec<(usize, &str)> = docs[0].drain(..header_len).collect();
    let mut paragraphs: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for line in header {
        if line.1 == "#" {
            paragraphs.push(Vec::new());
        }
        if let Some(p) = paragraphs.last_mut() {
            p.push(line);
        }
    }
    let mut carried: Vec<(usize, &str)> = paragraphs
        .into_iter()
        .filter(|p| !p.iter().any(|(_, l)| l.contains("weftctl:")))
        .flatten()
        .collect();
    let mut out = format!(
        "# Made from {file} (weftctl's manifest::chart_files): edit\n\
         # that file, then `WEFT_UPDATE_CHART=1 cargo test -p weftctl --test chart`.\n#\n"
    );
    let mut first = true;
    for doc in docs {
        if doc.iter().any(|(_, l)| *l == "kind: Namespace") {
            let comments = leading_comments(&doc);
            carried.extend_from_slice(&doc[..comments]);
            continue;
        }
        if !first {
            out.push_str("---\n");
        }
        first = false;
        for (n, line) in carried.drain(..).chain(doc) {
            out.push_str(&substitute(file, n, line, actions)?);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
