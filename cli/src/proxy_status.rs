//! `weftctl proxy-status`: what the control plane sent each connected
//! agent and what the agent acknowledged, per xDS type (the control
//! plane's `/debug/syncz`, shaped by `weft_control::xds::syncz`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{age, table::Table};

/// `/debug/syncz`: the config source's state and every agent's stream.
#[derive(Debug, Deserialize)]
pub struct Syncz {
    pub source: Source,
    pub agents: Vec<Stream>,
}

/// Whether the control plane has read its config source.
#[derive(Debug, Deserialize)]
pub struct Source {
    /// `directory` or `kubernetes`.
    pub mode: String,
    pub synced: bool,
    #[serde(default)]
    pub resources: Vec<SourceResource>,
}

/// One watched Kubernetes resource.
#[derive(Debug, Deserialize)]
pub struct SourceResource {
    pub resource: String,
    pub synced: bool,
    pub absent: bool,
    pub error: Option<String>,
}

impl Source {
    /// Lines on what is wrong with the source; none when all is well.
    fn problems(&self) -> String {
        let mut out = String::new();
        if !self.synced {
            let waiting: Vec<&str> = self
                .resources
                .iter()
                .filter(|r| !r.synced)
                .map(|r| r.resource.as_str())
                .collect();
            out += &format!(
                "the {} source is not synced yet; agents are not served (waiting for: {})\n",
                self.mode,
                waiting.join(", ")
            );
        }
        for r in &self.resources {
            if let Some(error) = &r.error {
                out += &format!("watch of {} failing: {error}\n", r.resource);
            }
        }
        out
    }
}

/// One agent's stream, as `/debug/syncz` lists it.
#[derive(Debug, Deserialize)]
pub struct Stream {
    pub connection: u64,
    pub node: String,
    pub node_id: String,
    pub peer: Option<String>,
    pub connected_at_unix: u64,
    pub types: BTreeMap<String, TypeStatus>,
}

/// One subscribed type on a stream.
#[derive(Debug, Deserialize)]
pub struct TypeStatus {
    pub resources: usize,
    pub responses_sent: u64,
    pub last_sent_version: String,
    pub last_sent_nonce: String,
    pub last_acked_version: String,
    pub last_acked_nonce: String,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Deserialize)]
pub struct Nack {
    pub nonce: String,
    pub code: i32,
    pub message: String,
    pub at_unix: u64,
}

/// Where a type stands on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Nothing sent yet.
    NotSent,
    /// The newest response was acknowledged.
    Synced,
    /// The newest response was rejected.
    Nacked,
    /// The newest response is not acknowledged yet.
    Stale,
}

impl TypeStatus {
    pub fn sync(&self) -> Sync {
        if self.responses_sent == 0 {
            Sync::NotSent
        } else if self
            .last_nack
            .as_ref()
            .is_some_and(|n| n.nonce == self.last_sent_nonce)
        {
            Sync::Nacked
        } else if self.last_acked_nonce == self.last_sent_nonce {
            Sync::Synced
        } else {
            Sync::Stale
        }
    }

    /// The table cell: state, resources held, short version(s).
    fn cell(&self) -> String {
        let sent = short(&self.last_sent_version);
        match self.sync() {
            Sync::NotSent => "NOT SENT".into(),
            Sync::Synced => format!("SYNCED ({}) {sent}", self.resources),
            Sync::Nacked => format!("NACKED ({}) {sent}", self.resources),
            Sync::Stale if self.last_acked_nonce.is_empty() => {
                format!("STALE ({}) {sent}, never acked", self.resources)
            }
            Sync::Stale => format!(
                "STALE ({}) {sent}, acked {}",
                self.resources,
                short(&self.last_acked_version)
            ),
        }
    }
}

/// Versions are digests; eight hex digits tell them apart on screen.
fn short(version: &str) -> &str {
    if version.is_empty() {
        return "-";
    }
    version.get(..8).unwrap_or(version)
}

/// Column title of a type URL: the served types by what they carry, any
/// other by its message name.
fn column(type_url: &str) -> String {
    match type_url.rsplit('/').next().unwrap_or(type_url) {
        "istio.workload.Address" => "ADDRESSES".into(),
        "istio.security.Authorization" => "AUTHORIZATIONS".into(),
        "weft.route.v1.RouteConfig" => "ROUTES".into(),
        "weft.route.v1.DestinationPolicy" => "DESTINATIONS".into(),
        "weft.telemetry.v1.AccessLogPolicy" => "ACCESSLOGS".into(),
        "weft.telemetry.v1.TracingPolicy" => "TRACING".into(),
        "weft.telemetry.v1.MetricsPolicy" => "METRICS".into(),
        other => other.rsplit('.').next().unwrap_or(other).to_uppercase(),
    }
}

/// Parses `/debug/syncz`.
pub fn parse(body: &[u8]) -> Result<Syncz, serde_json::Error> {
    serde_json::from_slice(body)
}

/// What is wrong with the config source (if anything), the table, then
/// one line per NACK, oldest stream first.
pub fn render(syncz: &Syncz, control: &str, now_unix: u64) -> String {
    let problems = syncz.source.problems();
    if syncz.agents.is_empty() {
        return format!("{problems}no agent is connected to the control plane at {control}\n");
    }
    problems + &render_streams(&syncz.agents, now_unix)
}

fn render_streams(streams: &[Stream], now_unix: u64) -> String {
    // The served types in the control plane's order, then any other.
    let mut types: Vec<&str> = weft_control::xds::SERVED_TYPES.to_vec();
    for stream in streams {
        for t in stream.types.keys() {
            if !types.contains(&t.as_str()) {
                types.push(t);
            }
        }
    }
    let mut headers = vec!["NODE".to_string(), "PEER".into(), "CONNECTED".into()];
    headers.extend(types.iter().map(|t| column(t)));
    let mut table = Table::new(headers);
    let mut nacks = Vec::new();
    for s in streams {
        let mut row = vec![
            if s.node_id.is_empty() || s.node_id == s.node {
                s.node.clone()
            } else {
                format!("{} ({})", s.node, s.node_id)
            },
            s.peer.clone().unwrap_or_else(|| "-".into()),
            age(now_unix, s.connected_at_unix),
        ];
        for t in &types {
            row.push(match s.types.get(*t) {
                Some(status) => status.cell(),
                None => "-".into(),
            });
            if let Some(status) = s.types.get(*t)
                && let Some(nack) = &status.last_nack
            {
                nacks.push(format!(
                    "{} connection {} {}: {} of {} NACKed, the last {} ago (nonce {}, code {}): {}",
                    s.node,
                    s.connection,
                    column(t),
                    status.nacks,
                    status.responses_sent,
                    age(now_unix, nack.at_unix),
                    nack.nonce,
                    nack.code,
                    nack.message
                ));
            }
        }
        table.row(row);
    }
    let mut out = table.render();
    if !nacks.is_empty() {
        out.push_str("\nrejected responses (NACKs):\n");
        for line in nacks {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sent: &str, acked: &str) -> TypeStatus {
        TypeStatus {
            resources: 3,
            responses_sent: 2,
            last_sent_version: "0123456789abcdef".into(),
            last_sent_nonce: sent.into(),
            last_acked_version: "0123456789abcdef".into(),
            last_acked_nonce: acked.into(),
            nacks: 0,
            last_nack: None,
        }
    }

    #[test]
    fn sync_states() {
        assert_eq!(status("1-2", "1-2").sync(), Sync::Synced);
        assert_eq!(status("1-3", "1-2").sync(), Sync::Stale);
        let mut nacked = status("1-3", "1-2");
        nacked.last_nack = Some(Nack {
            nonce: "1-3".into(),
            code: 3,
            message: "bad".into(),
            at_unix: 0,
        });
        assert_eq!(nacked.sync(), Sync::Nacked);
        let mut fresh = status("", "");
        fresh.responses_sent = 0;
        assert_eq!(fresh.sync(), Sync::NotSent);
        assert_eq!(status("1-2", "1-2").cell(), "SYNCED (3) 01234567");
    }

    #[test]
    fn every_served_type_has_a_column() {
        let columns: Vec<String> = weft_control::xds::SERVED_TYPES
            .iter()
            .map(|t| column(t))
            .collect();
        assert_eq!(
            columns,
            [
                "ADDRESSES",
                "AUTHORIZATIONS",
                "DESTINATIONS",
                "ROUTES",
                "ACCESSLOGS",
                "TRACING",
                "METRICS"
            ]
        );
        assert_eq!(
            column("type.googleapis.com/foo.v1.SomethingNew"),
            "SOMETHINGNEW"
        );
    }
}
