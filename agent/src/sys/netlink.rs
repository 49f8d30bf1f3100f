//! Routing set-up inside a pod's network namespace, over rtnetlink.
//!
//! Delivery to an app keeps the client's real source IP: the proxy's
//! delivery socket is transparent, bound to the client's address and marked
//! `DELIVERY_MARK`. The app's replies go to that (non-local) client address,
//! so the pod needs
//!
//! ```text
//! sysctl net.ipv4.tcp_fwmark_accept=1     # the app's socket inherits the SYN's mark
//! sysctl net.ipv4.fwmark_reflect=1        # so does the kernel's own reply (a reset)
//! ip rule add fwmark 0x539 lookup 133
//! ip route add local 0.0.0.0/0 dev lo table 133
//! ```
//!
//! which hands the replies back to the local stack, i.e. to the proxy.
//! Without `fwmark_reflect`, the reset a port nobody listens on answers
//! with has no mark: it is routed out of the pod towards the client's
//! address and lost, and the delivery's connect waits out its timeout
//! instead of being refused at once.

use std::net::Ipv4Addr;

use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        route::{RouteScope, RouteType},
        rule::RuleAction,
    },
};
use weft_ebpf_common::{DELIVERY_MARK, DELIVERY_ROUTE_TABLE};

use super::netns::{Netns, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot open a netlink socket in {netns}: {source}")]
    Socket {
        netns: String,
        source: std::io::Error,
    },
    #[error("cannot set {key} in {netns}: {source}")]
    Sysctl {
        netns: String,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cannot add {what} in {netns}: {source}")]
    Request {
        netns: String,
        what: &'static str,
        source: rtnetlink::Error,
    },
}

const EEXIST: i32 = -libc::EEXIST;

/// Installs the delivery routing of the module docs in `netns`. Idempotent:
/// a restarted agent runs it again on pods it already set up.
pub async fn setup_delivery_routing(netns: &Netns) -> Result<(), NetlinkError> {
    let name = netns.path().display().to_string();
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", "1"))?
        .map_err(|source| NetlinkError::Sysctl {
            netns: name.clone(),
            key: "net.ipv4.tcp_fwmark_accept",
            source,
        })?;
    // Without it delivery still works; a closed port is only refused
    // late (after the delivery's timeout).
    if let Err(err) = netns.run(|| std::fs::write("/proc/sys/net/ipv4/fwmark_reflect", "1"))? {
        tracing::warn!(netns = %name, error = %err, "cannot set net.ipv4.fwmark_reflect: a connection to a port the app does not listen on will wait out the delivery timeout instead of being refused at once");
    }

    let (connection, handle, _) =
        netns
            .run(rtnetlink::new_connection)?
            .map_err(|source| NetlinkError::Socket {
                netns: name.clone(),
                source,
            })?;
    let connection = tokio::spawn(connection);

    let rule = handle
        .rule()
        .add()
        .v4()
        .fw_mark(DELIVERY_MARK)
        .table_id(DELIVERY_ROUTE_TABLE)
        .action(RuleAction::ToTable)
        .execute()
        .await;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(DELIVERY_ROUTE_TABLE)
        .output_interface(1) // lo is always ifindex 1 in a namespace
        .build();
    let route = handle.route().add(route).execute().await;
    connection.abort();

    for (what, result) in [
        ("the delivery rule (fwmark 0x539 lookup 133)", rule),
        (
            "the delivery route (local 0.0.0.0/0 dev lo table 133)",
            route,
        ),
    ] {
        match result {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == EEXIST => {}
            Err(source) => {
                return Err(NetlinkError::Request {
                    netns: name.clone(),
                    what,
                    source,
                });
            }
        }
    }
    Ok(())
}
