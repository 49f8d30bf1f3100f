//! `weft-control validate DIR`: check a config directory once, as the
//! server would load it, and report every error and analysis finding.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    analysis::{self, Finding, Severity},
    source::{FileError, dir::DirSource, parse::all_errors},
};

/// Everything wrong with a directory.
#[derive(Debug, Serialize)]
pub struct Report {
    pub directory: PathBuf,
    pub files: usize,
    pub objects: usize,
    pub errors: Vec<FileError>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the directory has errors (findings of severity `error`
    /// count too: a route to nothing).
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// One line per problem, then a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        for f in &self.findings {
            out.push_str(&format!("{f}\n"));
        }
        out.push_str(&format!(
            "{}: {} files, {} objects, {} errors, {} findings\n",
            self.directory.display(),
            self.files,
            self.objects,
            self.errors.len(),
            self.findings.len()
        ));
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ValidateError(#[from] crate::source::dir::DirError);

/// Loads `dir` and checks it.
pub fn validate_dir(
    dir: &Path,
    domain_suffix: &str,
    root_namespace: &str,
) -> Result<Report, ValidateError> {
    let mut source = DirSource::load(dir)?;
    let snapshot = source.snapshot();
    // The source reports the first broken rule of an object; list all.
    let mut errors = Vec::new();
    for file in source.files() {
        let relative = file.strip_prefix(dir).unwrap_or(file);
        let file_errors: Vec<&FileError> = snapshot
            .errors
            .iter()
            .filter(|e| e.file == relative)
            .collect();
        if file_errors.is_empty() {
            continue;
        }
        let all = std::fs::read_to_string(file)
            .map(|text| all_errors(relative, &text))
            .unwrap_or_default();
        if all.is_empty() {
            errors.extend(file_errors.into_iter().cloned());
        } else {
            errors.extend(all);
        }
    }
    let mut findings = analysis::analyze(&snapshot.objects, domain_suffix, root_namespace);
    let compiled = crate::model::build(
        &snapshot.objects,
        &crate::model::ModelConfig {
            cluster_id: "Kubernetes".into(),
            trust_domain: "cluster.local".into(),
            domain_suffix: domain_suffix.into(),
            root_namespace: root_namespace.into(),
            mesh: Default::default(),
        },
    );
    findings.extend(compiled.findings);
    findings.sort();
    findings.dedup();
    Ok(Report {
        directory: dir.to_path_buf(),
        files: source.files().count(),
        objects: snapshot.objects.len(),
        errors,
        findings,
    })
}
