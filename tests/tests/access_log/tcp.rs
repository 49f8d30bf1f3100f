//! The access log's lines of TCP connections: one per connection on
//! each side, and one at the destination for each connection its policy
//! refuses, wherever the client is.

use super::*;

/// Checks the TCP lines of connections from `web` to db's opaque port (at
/// `db`, its Service VIP), then of connections db's policy refuses from
/// another node, the same node and outside the mesh. Leaves
/// `deny-front-db` applied; returns the URL of db's port.
pub fn lines_of_connections(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    db_pod: &Backend,
    db: std::net::Ipv4Addr,
) -> Result<String> {
    // TCP: one line per connection on each side.
    let db_base = format!("http://{db}:9090");
    converge("db's TCP port answers", || {
        Ok(get(web, &db_base, "/tcp-warm")? == 200)
    })?;
    let tcp_client = "outbound|9090||db.shop.svc.cluster.local";
    let before = (
        lines(cluster, "node-1", tcp_client)?.len(),
        lines(cluster, "node-2", "inbound|9090||")?.len(),
    );
    for i in 0..3 {
        ensure!(get(web, &db_base, &format!("/tcp-{i}"))? == 200);
    }
    wait_for("three TCP lines on each side", TIMEOUT, || {
        let after = (
            lines(cluster, "node-1", tcp_client)?.len(),
            lines(cluster, "node-2", "inbound|9090||")?.len(),
        );
        ensure!(
            after.0 <= before.0 + 3 && after.1 <= before.1 + 3,
            "{after:?}"
        );
        Ok((after == (before.0 + 3, before.1 + 3)).then_some(()))
    })?;
    let tcp = lines(cluster, "node-1", tcp_client)?
        .pop()
        .context("a TCP line")?;
    let f = text_fields(&tcp);
    ensure!(f[1] == "- - -" && f[2] == "0" && f[3] == "-", "{tcp}");
    ensure!(
        f[17].starts_with(&format!("{}:", web.ip())),
        "upstream local (the HBONE connection's): {tcp}"
    );
    let served = lines(cluster, "node-2", "inbound|9090||")?
        .pop()
        .context("a server TCP line")?;
    ensure!(
        text_fields(&served)[17].starts_with(&format!("{}:", web.ip())),
        "upstream local (the app connection's, from the client's address): {served}"
    );
    ensure!(
        f[7].parse::<u64>()? > 0 && f[8].parse::<u64>()? > 0,
        "bytes received and sent: {tcp}"
    );
    // Connections the destination's policy refuses: the server side
    // still writes a line for each, as Envoy's network RBAC filter
    // leaves one, naming the rule in `%CONNECTION_TERMINATION_DETAILS%`
    // (its index in the policy: rule 0 can never match and is
    // dropped), from a client on another node (HBONE), on the same
    // node, and outside the mesh (plaintext, to the pod's address).
    cluster.add_namespace("legacy", &[])?;
    let outsider = common::client(cluster, "node-1", "legacy", "outsider")?;
    let neighbour = common::client(cluster, "node-2", "front", "neighbour")?;
    apply(
        cluster,
        "deny-front-db",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-front-db\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: db\n  action: DENY\n  rules:\n  - from:\n    - source: {{ipBlocks: [\"10.0.0.0/8\"], remoteIpBlocks: [\"192.0.2.0/24\"]}}\n  - from:\n    - source:\n        namespaces: [front]\n  - from:\n    - source:\n        ipBlocks: [\"{}/32\"]\n",
            outsider.ip()
        ),
    )?;
    let db_direct = format!("http://{}", db_pod.pod.addr(9090));
    for (who, from, base, rule) in [
        ("another node", web, &db_base, 1),
        ("the same node", &neighbour, &db_base, 1),
        ("outside the mesh", &outsider, &db_direct, 2),
    ] {
        let refused = wait_for(
            &format!("node-2's line of a refused connection from {who}"),
            TIMEOUT,
            || {
                // Refused: the app's connection is reset, so no status.
                let _ = get(from, base, "/tcp-refused");
                Ok(lines(cluster, "node-2", "inbound|9090||")?
                    .into_iter()
                    .rfind(|l| {
                        let f = text_fields(l);
                        f[5].starts_with("rbac_access_denied_matched_policy[")
                            && f[19].starts_with(&format!("{}:", from.ip()))
                    }))
            },
        )?;
        let f = text_fields(&refused);
        ensure!(
            f[1] == "- - -"
                && f[2..4] == ["0", "-"]
                && f[5]
                    == format!(
                        "rbac_access_denied_matched_policy[ns[shop]-policy[deny-front-db]-rule[{rule}]]"
                    )
                && f[7..9] == ["0", "0"]
                && f[15] == "-",
            "from {who}, the refused connection's line (rule {rule}, no bytes, no upstream host): {refused}"
        );
    }
    // The same-node client's own line: refused as a client on another
    // node sees it (UF, HBONE's 401), the rule the server's to name.
    let own = lines(cluster, "node-2", tcp_client)?
        .into_iter()
        .rfind(|l| text_fields(l)[3] == "UF")
        .context("the same-node client's line")?;
    ensure!(text_fields(&own)[5] == "-", "{own}");
    Ok(db_base)
}
