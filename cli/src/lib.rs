//! `weftctl`: weft's command-line tool. Each subcommand is a module that
//! turns what a weft component serves into something to read; `main.rs`
//! parses flags and prints.
//!
//! | subcommand | reads |
//! | --- | --- |
//! | `analyze DIR` | a directory of YAML, with `weft_control::validate` |
//! | `proxy-status` | the control plane's `/debug/syncz` (15014) |
//! | `proxy-config` | an agent's `/config_dump` (admin, 15000); `log`: its `/logging` |
//! | `stats` | an agent's `/stats` (admin, 15000) |
//! | `bug-report` | all of the above and the agents' `/logs`, into one `.tar.gz` |
//! | `diagnose SRC DST[:PORT]` | the control plane's `/debug/objects`, `/debug/syncz`, `/debug/config`; the involved agents' `/config_dump` and `/stats/prometheus` |
//! | `profile POD\|--agent\|--node` | an agent's `POST /profile` (admin, 15000); for a POD, the control plane's `/debug/objects` and `/debug/syncz` to find its node's agent |
//! | `manifest generate` | the manifests of `deploy/`, embedded |
//! | `install`, `uninstall` | the same manifests, applied to or deleted from a cluster (kube-rs) |

#![forbid(unsafe_code)]

pub mod analyze;
pub mod bug_report;
pub mod diagnose;
pub mod http;
pub mod install;
pub mod manifest;
pub mod profile;
pub mod proxy_config;
pub mod proxy_status;
pub mod stats;
pub mod table;
pub mod top;

/// `then` to `now` as `3d4h`, `5m12s`, `40s` (two units at most).
pub fn age(now_unix: u64, then_unix: u64) -> String {
    let secs = now_unix.saturating_sub(then_unix);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::age(100, 60), "40s");
        assert_eq!(super::age(1000, 0), "16m40s");
        assert_eq!(super::age(7_200 + 60, 0), "2h1m");
        assert_eq!(super::age(3 * 86_400 + 3600, 0), "3d1h");
        assert_eq!(super::age(0, 10), "0s");
    }
}
