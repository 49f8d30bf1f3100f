//! The agent's reading of the control plane: a delta xDS response's bytes
//! through `xds::decode` (each resource's protobuf decoded and converted:
//! workloads and services, L4 policies, routes, destination policies,
//! access-log and tracing policies), then applied to fresh stores and
//! looked up as the proxy does.
//!
//! Input: a first byte below 6 picks a resource type and the rest is one
//! resource's body (so mutations reach the conversions quickly); any other
//! first byte means the rest is a whole `DeltaDiscoveryResponse`.
#![no_main]

use std::{net::SocketAddr, sync::Arc};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_agent::{
    l7::L7Config,
    state::WorkloadStore,
    trace,
    xds::{self, Decoded},
};
use weft_proto::discovery::{DeltaDiscoveryResponse, Resource};

const TYPES: [&str; 7] = weft_proto::TYPE_URLS;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let response = match TYPES.get(usize::from(first)) {
        Some(type_url) => DeltaDiscoveryResponse {
            type_url: type_url.to_string(),
            nonce: "1".into(),
            resources: vec![Resource {
                name: "fuzz".into(),
                version: "1".into(),
                resource: Some(prost_types::Any {
                    type_url: type_url.to_string(),
                    value: rest.to_vec(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        None => match DeltaDiscoveryResponse::decode(rest) {
            Ok(response) => response,
            Err(_) => return,
        },
    };
    let Ok(decoded) = xds::decode(&response) else {
        return;
    };
    let removed = &response.removed_resources;
    let store = Arc::new(WorkloadStore::default());
    match decoded {
        Decoded::Addresses(upserts) => {
            store.apply(upserts, removed);
            // The outbound proxy's lookups: a service's VIP and port.
            for service in store.services() {
                let _ = store.endpoints(&service.key());
                for vip in &service.vips {
                    for port in service.ports.keys() {
                        let _ = store.resolve(SocketAddr::new(*vip, *port));
                    }
                }
            }
            let _ = store.dump();
        }
        Decoded::Policies(upserts) => store.apply_policies(upserts, removed),
        Decoded::Routes(upserts) => {
            let names: Vec<String> = upserts.iter().map(|(name, _, _)| name.clone()).collect();
            let l7 = L7Config::default();
            l7.apply_routes(upserts, removed);
            for name in names {
                let _ = l7.routes(&name);
            }
        }
        Decoded::Destinations(upserts) => L7Config::default().apply_policies(upserts, removed),
        // Compiling is the agent's whole reading of an access-log policy;
        // applying it would change the process-wide log.
        Decoded::AccessLogs(_) => {}
        Decoded::Tracing(upserts) => trace::policy::Policies::default().apply(upserts, removed),
        Decoded::Metrics(upserts) => {
            weft_agent::metrics::traffic::overrides::Policies::default().apply(upserts, removed)
        }
    }
});
