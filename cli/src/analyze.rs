//! `weftctl analyze DIR`: the control plane's own validation and analysis
//! (`weft_control::validate`), run locally on a directory of YAML before
//! it is given to `weft-control`.

use std::path::Path;

use weft_control::validate::{Report, ValidateError, validate_dir};

/// Checks `dir` as `weft-control serve --config-dir DIR` would load it.
pub fn run(dir: &Path, domain_suffix: &str, root_namespace: &str) -> Result<Report, ValidateError> {
    validate_dir(dir, domain_suffix, root_namespace)
}

/// One line per error (`DIR/file:line:column: ...`, so that editors and
/// terminals can jump to it), one per finding, then a summary.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for e in &report.errors {
        let mut e = e.clone();
        e.file = report.directory.join(&e.file);
        out.push_str(&format!("error: {e}\n"));
    }
    for f in &report.findings {
        out.push_str(&format!("{f}\n"));
    }
    let verdict = if report.failed() {
        "FAILED"
    } else if report.findings.is_empty() {
        "OK"
    } else {
        "OK with findings"
    };
    out.push_str(&format!(
        "{verdict}: {} files, {} objects, {} errors, {} findings in {}\n",
        report.files,
        report.objects,
        report.errors.len(),
        report.findings.len(),
        report.directory.display(),
    ));
    out
}
