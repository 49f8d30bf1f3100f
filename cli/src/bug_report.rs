//! `weftctl bug-report`: what the control plane and the agents serve for
//! debugging, in one `.tar.gz` to attach to an issue. Each file is
//! fetched on its own; what cannot be fetched (an agent that is down, a
//! control plane not ready) is listed in the archive's `README.txt` with
//! the reason, and the rest is still collected.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::http::{Endpoint, HttpError};

/// What is fetched from the control plane's debug endpoint (15014):
/// (file in the archive, path).
pub const CONTROL_FILES: [(&str, &str); 5] = [
    ("syncz.json", "/debug/syncz"),
    ("config_errors.json", "/debug/config_errors"),
    ("config.json", "/debug/config"),
    ("metrics.txt", "/metrics"),
    ("ready.txt", "/ready"),
];

/// What is fetched from each agent's admin endpoint (15000).
pub const AGENT_FILES: [(&str, &str); 6] = [
    ("config_dump.json", "/config_dump"),
    ("stats.json", "/stats"),
    ("stats_prometheus.txt", "/stats/prometheus"),
    ("config.json", "/config"),
    ("logging.json", "/logging"),
    ("logs.txt", "/logs"),
];

#[derive(Debug, thiserror::Error)]
pub enum BugReportError {
    #[error("cannot write the bug report to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One file of the report, or why it is missing.
#[derive(Debug)]
pub struct Item {
    /// Path in the archive, below its top directory.
    pub name: String,
    /// What was asked: `GET http://addr/path`.
    pub source: String,
    pub outcome: Result<Vec<u8>, String>,
}

/// Everything collected.
#[derive(Debug)]
pub struct Report {
    /// The archive's top directory: `weft-bug-report-<UTC stamp>`.
    pub top: String,
    pub created_unix: u64,
    pub items: Vec<Item>,
}

impl Report {
    /// Items that could not be fetched.
    pub fn failed(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.outcome.is_err())
    }
}

/// `10.0.0.1:15000` → `10.0.0.1_15000`: a directory name.
fn dir_name(addr: &str) -> String {
    addr.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Fetches `files`; once the endpoint cannot be reached (refused, or
/// silent past the timeout), the rest are not asked for.
fn fetch(endpoint: &Endpoint, dir: &str, files: &[(&str, &str)]) -> Vec<Item> {
    let mut unreachable: Option<String> = None;
    files
        .iter()
        .map(|(file, path)| {
            let outcome = match &unreachable {
                Some(first) => Err(format!("not asked: {first}")),
                None => endpoint.get(path).map_err(|err| {
                    if matches!(err, HttpError::Connect { .. } | HttpError::Timeout { .. }) {
                        unreachable = Some(format!("{} did not answer {path}", endpoint.addr));
                    }
                    err.to_string()
                }),
            };
            Item {
                name: format!("{dir}/{file}"),
                source: format!("GET http://{}{path}", endpoint.addr),
                outcome,
            }
        })
        .collect()
}

/// Fetches every file from the control plane (if given) and each agent.
pub fn collect(control: Option<&Endpoint>, agents: &[Endpoint], now_unix: u64) -> Report {
    let stamp = crate::proxy_config::utc(now_unix)
        .replace(['-', ':'], "")
        .trim_end_matches('Z')
        .replace('T', "-");
    let mut items = Vec::new();
    if let Some(control) = control {
        items.extend(fetch(control, "control", &CONTROL_FILES));
    }
    for agent in agents {
        let dir = format!("agents/{}", dir_name(&agent.addr));
        items.extend(fetch(agent, &dir, &AGENT_FILES));
    }
    Report {
        top: format!("weft-bug-report-{stamp}"),
        created_unix: now_unix,
        items,
    }
}

/// The archive's `README.txt`: what was collected, what failed and why.
pub fn readme(report: &Report) -> String {
    let mut out = format!(
        "weft bug report, created {} by weftctl {}\n\n",
        crate::proxy_config::utc(report.created_unix),
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("Collected:\n");
    let mut any = false;
    for item in &report.items {
        if let Ok(body) = &item.outcome {
            out.push_str(&format!(
                "  {}  ({} bytes, {})\n",
                item.name,
                body.len(),
                item.source
            ));
            any = true;
        }
    }
    if !any {
        out.push_str("  nothing\n");
    }
    out.push_str("\nFailed:\n");
    let mut failed = report.failed().peekable();
    if failed.peek().is_none() {
        out.push_str("  nothing\n");
    }
    for item in failed {
        let reason = item.outcome.as_ref().err().map_or("", String::as_str);
        out.push_str(&format!("  {}  ({}): {reason}\n", item.name, item.source));
    }
    out
}

/// Writes the report as a gzipped tar: `<top>/README.txt`, then every
/// file collected.
pub fn write_archive(report: &Report, path: &Path) -> Result<(), BugReportError> {
    let err = |source| BugReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(err)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, body: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(report.created_unix);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{}/{name}", report.top), body)
    };
    add("README.txt", readme(report).as_bytes()).map_err(err)?;
    for item in &report.items {
        if let Ok(body) = &item.outcome {
            add(&item.name, body).map_err(err)?;
        }
    }
    let gz = tar.into_inner().map_err(err)?;
    let mut file = gz.finish().map_err(err)?;
    file.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_what_was_collected_and_why_the_rest_failed() {
        let report = Report {
            top: "weft-bug-report-x".into(),
            created_unix: 0,
            items: vec![
                Item {
                    name: "agents/10.0.0.1_15000/stats.json".into(),
                    source: "GET http://10.0.0.1:15000/stats".into(),
                    outcome: Ok(b"{}".to_vec()),
                },
                Item {
                    name: "agents/10.0.0.2_15000/stats.json".into(),
                    source: "GET http://10.0.0.2:15000/stats".into(),
                    outcome: Err("connection refused".into()),
                },
            ],
        };
        let text = readme(&report);
        assert!(text.starts_with("weft bug report, created 1970-01-01T00:00:00Z"));
        assert!(text.contains(
            "Collected:\n  agents/10.0.0.1_15000/stats.json  (2 bytes, GET http://10.0.0.1:15000/stats)\n"
        ));
        assert!(text.contains(
            "Failed:\n  agents/10.0.0.2_15000/stats.json  (GET http://10.0.0.2:15000/stats): connection refused\n"
        ));
    }

    #[test]
    fn the_archive_holds_the_readme_and_every_file() {
        let report = Report {
            top: "weft-bug-report-t".into(),
            created_unix: 1_700_000_000,
            items: vec![Item {
                name: "control/syncz.json".into(),
                source: "GET http://c/debug/syncz".into(),
                outcome: Ok(b"{\"agents\":[]}".to_vec()),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.tar.gz");
        write_archive(&report, &path).unwrap();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
        let mut archive = tar::Archive::new(gz);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            if name.ends_with("syncz.json") {
                assert_eq!(body, "{\"agents\":[]}");
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "weft-bug-report-t/README.txt",
                "weft-bug-report-t/control/syncz.json"
            ]
        );
    }

    #[test]
    fn a_down_endpoint_is_asked_once() {
        // Bind, then close: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint = Endpoint {
            addr: addr.to_string(),
            what: "the agent's admin endpoint",
            hint: "is it running?",
            timeout: std::time::Duration::from_secs(2),
        };
        let report = collect(None, &[endpoint], 0);
        let reasons: Vec<String> = report
            .items
            .iter()
            .map(|i| i.outcome.as_ref().unwrap_err().clone())
            .collect();
        assert_eq!(reasons.len(), AGENT_FILES.len());
        assert!(reasons[0].contains("connection refused"), "{}", reasons[0]);
        assert_eq!(
            reasons[1],
            format!("not asked: {addr} did not answer /config_dump")
        );
    }

    #[test]
    fn addresses_become_directory_names() {
        assert_eq!(dir_name("10.0.0.1:15000"), "10.0.0.1_15000");
        assert_eq!(dir_name("[::1]:15000"), "___1__15000");
    }
}
