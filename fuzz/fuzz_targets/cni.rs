//! The CNI side of the agent: the request line `weft-cni` sends on the
//! agent's socket (`cni::read_request`), the `prevResult` the plugin reads
//! the pod's IPs from (`cni::prev_result_ips`), and the node's primary CNI
//! config that `--cni-install` chains weft-cni into and out of
//! (`cni_install::netconf`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_agent::{
    cni,
    cni_install::{
        json::Json,
        netconf::{self, Edit, Format, PluginEntry},
    },
};

fuzz_target!(|data: &[u8]| {
    // The agent's socket: one request line.
    if let Ok(text) = std::str::from_utf8(data) {
        let line = text.split('\n').next().unwrap_or_default();
        match cni::read_request(line) {
            Ok(event) => {
                // What the agent accepts, the plugin can send.
                let sent = serde_json::to_string(&event).expect("a PodEvent serialises");
                assert_eq!(cni::read_request(&sent).expect("re-reads"), event);
            }
            Err(reply) => assert!(!reply.ok && reply.error.is_some()),
        }
    }

    // The plugin: the network configuration on stdin.
    if let Ok(config) = serde_json::from_slice::<serde_json::Value>(data)
        && let Some(prev) = config.get("prevResult")
    {
        let _ = cni::prev_result_ips(prev);
    }

    // --cni-install: the primary CNI's config file, in both formats.
    let Ok(doc) = serde_json::from_slice::<Json>(data) else {
        return;
    };
    let written = doc.to_pretty();
    let reread: Json = serde_json::from_slice(&written).expect("what we write re-reads");
    assert_eq!(
        reread, doc,
        "a config keeps its keys and values through a rewrite"
    );
    let entry = PluginEntry {
        agent_socket: "/var/run/weft/cni.sock".into(),
        timeout_seconds: 60,
    };
    for format in [Format::List, Format::Single] {
        let chained = match netconf::chain(doc.clone(), format, &entry) {
            Ok(Edit::Rewrite(json) | Edit::Convert(json)) => json,
            Ok(Edit::None) => {
                assert!(netconf::is_chained(&doc));
                continue;
            }
            Err(reason) => {
                assert!(!reason.is_empty());
                continue;
            }
        };
        assert!(netconf::is_chained(&chained));
        // Chaining is idempotent: the watcher re-checks the file forever.
        assert_eq!(
            netconf::chain(chained.clone(), Format::List, &entry),
            Ok(Edit::None)
        );
        let mut unchained = chained;
        assert!(netconf::unchain(&mut unchained) >= 1);
        assert!(!netconf::is_chained(&unchained));
    }
});
