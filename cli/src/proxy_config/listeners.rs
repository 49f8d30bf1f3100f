//! `listeners`: the agent's own ports, then the proxy's listeners in each
//! enrolled pod (`weft_agent::admin`'s `listeners`: addresses as bound).

use serde::Deserialize;

use crate::table::Table;

#[derive(Debug, Deserialize)]
pub(super) struct Listener {
    name: String,
    address: String,
    /// `ns/name`; absent for the agent's own.
    #[serde(default)]
    pod: Option<String>,
}

/// The port of `ip:port` or `[ip]:port`; "-" for a socket path.
fn port(address: &str) -> String {
    address
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or("-".to_string(), |(_, p)| p.to_string())
}

pub(super) fn table(list: Vec<Listener>) -> Table {
    let mut t = Table::new(["POD", "LISTENER", "ADDRESS", "PORT"]);
    for l in list {
        let port = port(&l.address);
        t.row([
            l.pod.unwrap_or_else(|| "(agent)".into()),
            l.name,
            l.address,
            port,
        ]);
    }
    t
}
