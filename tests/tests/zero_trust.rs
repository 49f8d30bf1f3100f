//! Zero trust at L4 on the simulated cluster: PeerAuthentication modes and
//! AuthorizationPolicy, enforced by the destination's node agent, for mesh
//! clients (HBONE) and plaintext clients alike. Needs root and the built
//! binaries (`cargo xtask test` builds them).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weft_sim::{Cluster, Pod, PodSpec, Process, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// The cast: a server in `secure` (ports 8080 and 9090), a mesh client in
/// `secure`, a mesh client in `other`, a plaintext client in `legacy`.
struct Cast {
    server: Pod,
    client: Pod,
    intruder: Pod,
    outsider: Pod,
    apps: Vec<Process>,
}

fn cast(cluster: &Cluster) -> Result<Cast> {
    cluster.add_namespace("secure", &[AMBIENT])?;
    cluster.add_namespace("other", &[AMBIENT])?;
    cluster.add_namespace("legacy", &[])?;
    let server = cluster.add_pod(
        PodSpec::new("node-2", "secure", "server")
            .label("app", "server")
            .service_account("server")
            .port("http", 8080)
            .port("admin", 9090),
    )?;
    let client =
        cluster.add_pod(PodSpec::new("node-1", "secure", "client").service_account("client"))?;
    let intruder =
        cluster.add_pod(PodSpec::new("node-1", "other", "intruder").service_account("intruder"))?;
    let outsider = cluster.add_pod(PodSpec::new("node-1", "legacy", "outsider"))?;
    let apps = vec![
        server.spawn_app(&["http-server", "--port", "8080"])?,
        server.spawn_app(&["http-server", "--port", "9090"])?,
    ];
    let cast = Cast {
        server,
        client,
        intruder,
        outsider,
        apps,
    };
    // Everyone reaches everything before any policy.
    let url = cast.url(8080);
    for pod in [&cast.client, &cast.intruder, &cast.outsider] {
        wait_for(
            &format!("{} to reach the server", pod.name()),
            TIMEOUT,
            || Ok(matches!(attempt(pod, &url)?, Outcome::Allowed).then_some(())),
        )?;
    }
    Ok(cast)
}

impl Cast {
    fn url(&self, port: u16) -> String {
        format!("http://{}/", self.server.addr(port))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// Refused with a reset: prompt, not a hang.
    Reset,
    Other(String),
}

fn attempt(from: &Pod, url: &str) -> Result<Outcome> {
    let out = from.run_app(&["http-get", url, "--timeout", "3"], TIMEOUT)?;
    Ok(if out.success() {
        Outcome::Allowed
    } else if out.stderr.contains("reset") || out.stderr.contains("Connection reset") {
        Outcome::Reset
    } else {
        Outcome::Other(format!("{}{}", out.stdout, out.stderr))
    })
}

/// Waits until every `(pod, port, allowed)` holds (policies propagate
/// asynchronously); denials must be resets.
fn expect(cast: &Cast, what: &str, cases: &[(&Pod, u16, bool)]) -> Result<()> {
    let mut last = Vec::new();
    let converged = wait_for(what, TIMEOUT, || {
        last.clear();
        let mut ok = true;
        for (pod, port, allowed) in cases {
            let outcome = attempt(pod, &cast.url(*port))?;
            let good = if *allowed {
                outcome == Outcome::Allowed
            } else {
                outcome == Outcome::Reset
            };
            ok &= good;
            last.push(format!(
                "{} -> :{port}: {outcome:?} (want {})",
                pod.name(),
                if *allowed { "allowed" } else { "reset" }
            ));
        }
        Ok(ok.then_some(()))
    });
    converged.with_context(|| format!("last attempt:\n{}", last.join("\n")))
}

fn peer_authentication(cluster: &Cluster, namespace: &str, name: &str, spec: &str) -> Result<()> {
    cluster.write_config_file(
        &format!("pa-{namespace}-{name}.yaml"),
        &format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
        ),
    )?;
    Ok(())
}

fn authorization_policy(
    cluster: &Cluster,
    name: &str,
    annotations: &str,
    spec: &str,
) -> Result<()> {
    cluster.write_config_file(
        "authz.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: secure\n{annotations}spec:\n{spec}"
        ),
    )?;
    Ok(())
}

#[test]
fn peer_authentication_modes_for_mesh_and_plaintext_clients() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let cast = cast(cluster)?;
        let (c, o) = (&cast.client, &cast.outsider);

        peer_authentication(cluster, "secure", "default", "  mtls:\n    mode: STRICT\n")?;
        expect(&cast, "namespace STRICT: plaintext refused", &[(c, 8080, true), (o, 8080, false)])?;
        // The plaintext client's bytes never reached the app: it logs
        // every request it gets, and none came from the outsider since.
        let seen_before = cast.apps[0].log().lines().count();
        let marker = "STRICT-PLAINTEXT-3e1f";
        let out = o.run_app(&["http-get", &cast.url(8080), "--body-marker", marker, "--timeout", "3"], TIMEOUT)?;
        ensure!(!out.success(), "plaintext got through STRICT");
        attempt(c, &cast.url(8080))?; // a request that does arrive, after it
        let log = cast.apps[0].log();
        let since: Vec<&str> = log.lines().skip(seen_before).collect();
        ensure!(
            since.iter().any(|l| l.contains(&c.ip().to_string())),
            "the app's log does not show the mesh client's request:\n{log}"
        );
        ensure!(
            !since.iter().any(|l| l.contains(&o.ip().to_string())),
            "the app saw the plaintext client in STRICT mode:\n{log}"
        );

        peer_authentication(cluster, "secure", "default", "  mtls:\n    mode: PERMISSIVE\n")?;
        expect(&cast, "namespace PERMISSIVE: both accepted", &[(c, 8080, true), (o, 8080, true)])?;

        peer_authentication(cluster, "secure", "default", "  mtls:\n    mode: DISABLE\n")?;
        expect(&cast, "namespace DISABLE: both accepted", &[(c, 8080, true), (o, 8080, true)])?;

        // UNSET inherits the mesh-wide (root namespace) mode.
        peer_authentication(cluster, "secure", "default", "  mtls:\n    mode: UNSET\n")?;
        peer_authentication(cluster, "istio-system", "default", "  mtls:\n    mode: STRICT\n")?;
        expect(&cast, "mesh-wide STRICT inherited", &[(c, 8080, true), (o, 8080, false)])?;

        // A workload policy overrides, and port-level mTLS overrides that.
        peer_authentication(
            cluster,
            "secure",
            "server",
            "  selector:\n    matchLabels:\n      app: server\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    9090:\n      mode: PERMISSIVE\n",
        )?;
        expect(
            &cast,
            "workload STRICT with port 9090 PERMISSIVE",
            &[(c, 8080, true), (c, 9090, true), (o, 8080, false), (o, 9090, true)],
        )?;
        peer_authentication(
            cluster,
            "secure",
            "server",
            "  selector:\n    matchLabels:\n      app: server\n  mtls:\n    mode: PERMISSIVE\n",
        )?;
        expect(&cast, "workload PERMISSIVE over mesh STRICT", &[(o, 8080, true), (o, 9090, true)])?;
        Ok(())
    })
}

#[test]
fn authorization_policies_allow_deny_and_dry_run() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let cast = cast(cluster)?;
        let (c, i, o) = (&cast.client, &cast.intruder, &cast.outsider);
        let selector = "  selector:\n    matchLabels:\n      app: server\n";

        authorization_policy(
            cluster,
            "allow-client",
            "",
            &format!("{selector}  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/secure/sa/client\"]\n"),
        )?;
        expect(&cast, "ALLOW by principal", &[(c, 8080, true), (i, 8080, false), (o, 8080, false)])?;

        authorization_policy(
            cluster,
            "deny-other",
            "",
            &format!("{selector}  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"other\"]\n"),
        )?;
        expect(&cast, "DENY by namespace", &[(c, 8080, true), (i, 8080, false), (o, 8080, true)])?;

        authorization_policy(
            cluster,
            "allow-outsider-ip",
            "",
            &format!(
                "{selector}  action: ALLOW\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{}/32\"]\n",
                o.ip()
            ),
        )?;
        expect(&cast, "ALLOW by ipBlocks", &[(c, 8080, false), (i, 8080, false), (o, 8080, true)])?;

        authorization_policy(
            cluster,
            "allow-8080",
            "",
            &format!("{selector}  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        ports: [\"8080\"]\n"),
        )?;
        expect(&cast, "ALLOW by port", &[(c, 8080, true), (c, 9090, false), (o, 9090, false)])?;

        authorization_policy(cluster, "allow-nothing", "", &format!("{selector}  action: ALLOW\n"))?;
        expect(&cast, "an empty ALLOW denies all", &[(c, 8080, false), (i, 8080, false), (o, 8080, false)])?;

        // DENY wins over ALLOW: two policies in one file.
        cluster.write_config_file(
            "authz.yaml",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-all\n  namespace: secure\nspec:\n{selector}  action: ALLOW\n  rules:\n  - {{}}\n---\n\
                 apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-client\n  namespace: secure\nspec:\n{selector}  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/secure/sa/client\"]\n"
            ),
        )?;
        expect(&cast, "DENY overrides ALLOW", &[(c, 8080, false), (i, 8080, true), (o, 8080, true)])?;

        // The denial is logged with the policy and both identities, and counted.
        // `expect` may have seen the client refused by the previous policies
        // (an empty ALLOW) just before these arrived: try again until a
        // denial by this policy is in the log.
        let node = cluster.node("node-2")?;
        let denied_by_policy = |log: &str| {
            log.lines().any(|l| l.contains("connection denied")
                && l.contains("secure/deny-client")
                && l.contains("spiffe://cluster.local/ns/secure/sa/client")
                && l.contains("spiffe://cluster.local/ns/secure/sa/server"))
        };
        wait_for("a denial log line naming the policy and both identities", TIMEOUT, || {
            if denied_by_policy(&node.agent_log_tail(400)) {
                return Ok(Some(()));
            }
            ensure!(attempt(c, &cast.url(8080))? == Outcome::Reset, "the client was let through");
            Ok(None)
        })
        .with_context(|| node.agent_log_tail(400))?;
        let stats = node.admin_json("/stats")?;
        let denied = &stats["connections_denied"];
        ensure!(denied["policy_deny"].as_u64().unwrap_or(0) > 0, "policy_deny not counted: {stats}");
        ensure!(denied["no_allow_match"].as_u64().unwrap_or(0) > 0, "no_allow_match not counted: {stats}");

        // remoteIpBlocks: at L4 the remote IP is the source IP, sent in the
        // field every Workload API client enforces.
        authorization_policy(
            cluster,
            "deny-outsider-remote-ip",
            "",
            &format!(
                "{selector}  action: DENY\n  rules:\n  - from:\n    - source:\n        remoteIpBlocks: [\"{}/32\"]\n",
                o.ip()
            ),
        )?;
        expect(&cast, "DENY by remoteIpBlocks", &[(c, 8080, true), (i, 8080, true), (o, 8080, false)])?;

        // Dry run: evaluated and logged, never enforced.
        authorization_policy(
            cluster,
            "deny-all-dry",
            "  annotations:\n    istio.io/dry-run: \"true\"\n",
            &format!("{selector}  action: DENY\n  rules:\n  - {{}}\n"),
        )?;
        expect(&cast, "a dry-run DENY is not enforced", &[(c, 8080, true), (i, 8080, true), (o, 8080, true)])?;
        wait_for("the dry-run verdict in the log", TIMEOUT, || {
            Ok(node
                .agent_log_tail(400)
                .lines()
                .any(|l| l.contains("dry-run policy evaluated") && l.contains("secure/deny-all-dry"))
                .then_some(()))
        })?;

        // AUDIT: logged as an audit, never enforced (on the wire a dry-run
        // DENY that other clients log too).
        authorization_policy(
            cluster,
            "audit-all",
            "",
            &format!("{selector}  action: AUDIT\n  rules:\n  - {{}}\n"),
        )?;
        expect(&cast, "an AUDIT policy is not enforced", &[(c, 8080, true), (i, 8080, true), (o, 8080, true)])?;
        wait_for("the audit in the log", TIMEOUT, || {
            let audited = node
                .agent_log_tail(400)
                .lines()
                .any(|l| l.contains("audit: connection matched") && l.contains("secure/audit-all"));
            if audited {
                return Ok(Some(()));
            }
            ensure!(attempt(c, &cast.url(8080))? == Outcome::Allowed, "an AUDIT policy refused the client");
            Ok(None)
        })?;
        Ok(())
    })
}

/// A long-lived connection from `from` to `to`: a line echoed every 100 ms
/// for a minute, so it is still open when the policies change.
fn hold(from: &Pod, to: std::net::SocketAddr) -> Result<Process> {
    from.spawn_app(&[
        "tcp-ping",
        &to.to_string(),
        "--count",
        "600",
        "--interval-ms",
        "100",
        "--timeout",
        "5",
    ])
}

/// Waits until the ping of `what` has echoed a line (its connection is up).
fn held(what: &str, ping: &Process) -> Result<()> {
    wait_for(
        &format!("{what}'s connection to carry a ping"),
        TIMEOUT,
        || Ok(ping.log().contains("ping 0 ok").then_some(())),
    )
    .with_context(|| ping.log_tail(20))
}

/// Waits until the connection of `what` has been closed under it.
fn closed(what: &str, ping: &mut Process) -> Result<()> {
    wait_for(
        &format!("{what}'s open connection to be closed"),
        TIMEOUT,
        || Ok(ping.try_status().map(|status| status.success())),
    )
    .and_then(|succeeded| {
        ensure!(
            !succeeded,
            "{what}'s pings all came back: the connection was never closed"
        );
        Ok(())
    })
    .with_context(|| ping.log_tail(20))
}

#[test]
fn a_policy_change_closes_the_open_connections_it_denies() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("secure", &[AMBIENT])?;
        cluster.add_namespace("legacy", &[])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "secure", "server")
                .label("app", "server")
                .service_account("server")
                .port("tcp-echo", 7000),
        )?;
        // Over HBONE from node-1, from a pod of the same node, in plaintext.
        let client =
            cluster.add_pod(PodSpec::new("node-1", "secure", "client").service_account("client"))?;
        let neighbour = cluster
            .add_pod(PodSpec::new("node-2", "secure", "neighbour").service_account("neighbour"))?;
        let outsider = cluster.add_pod(PodSpec::new("node-1", "legacy", "outsider"))?;
        let _echo = server.spawn_app(&["tcp-echo", "--port", "7000"])?;
        let target = server.addr(7000);
        wait_for("the echo server to answer", TIMEOUT, || {
            let out = client.run_app(&["tcp-send", &target.to_string(), "hello"], TIMEOUT)?;
            Ok((out.success() && out.stdout.contains("hello")).then_some(()))
        })?;
        let mut from_client = hold(&client, target)?;
        let mut from_neighbour = hold(&neighbour, target)?;
        let mut from_outsider = hold(&outsider, target)?;
        held("the client", &from_client)?;
        held("the neighbour", &from_neighbour)?;
        held("the outsider", &from_outsider)?;
        let node = cluster.node("node-2")?;
        let revoked_before = node.admin_json("/stats")?["connections_denied"]["policy_revoked"]
            .as_u64()
            .unwrap_or(0);

        // A DENY for the client's identity closes its open connection,
        // and only that one.
        authorization_policy(
            cluster,
            "deny-client",
            "",
            "  selector:\n    matchLabels:\n      app: server\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/secure/sa/client\"]\n",
        )?;
        closed("the client", &mut from_client)?;
        ensure!(from_neighbour.is_running(), "the neighbour's connection was closed too:\n{}", from_neighbour.log_tail(10));
        ensure!(from_outsider.is_running(), "the outsider's connection was closed too:\n{}", from_outsider.log_tail(10));
        wait_for("the closing in node-2's log, with the policy", TIMEOUT, || {
            Ok(node
                .agent_log_tail(400)
                .lines()
                .any(|l| {
                    l.contains("closing an open connection")
                        && l.contains("secure/deny-client")
                        && l.contains("spiffe://cluster.local/ns/secure/sa/client")
                })
                .then_some(()))
        })
        .with_context(|| node.agent_log_tail(100))?;

        // STRICT mutual TLS closes the plaintext one; the mesh's stays.
        peer_authentication(cluster, "secure", "strict", "  mtls:\n    mode: STRICT\n")?;
        closed("the outsider", &mut from_outsider)?;
        ensure!(from_neighbour.is_running(), "the neighbour's connection was closed by STRICT:\n{}", from_neighbour.log_tail(10));

        let revoked = node.admin_json("/stats")?["connections_denied"]["policy_revoked"]
            .as_u64()
            .unwrap_or(0);
        ensure!(revoked >= revoked_before + 2, "policy_revoked counted {revoked} (was {revoked_before}), want 2 more");
        // The neighbour's pings kept coming back throughout.
        let before = from_neighbour.log().lines().filter(|l| l.ends_with(" ok")).count();
        wait_for("the neighbour's pings to go on", TIMEOUT, || {
            ensure!(from_neighbour.is_running(), "the neighbour's connection ended:\n{}", from_neighbour.log_tail(10));
            let now = from_neighbour.log().lines().filter(|l| l.ends_with(" ok")).count();
            Ok((now > before + 5).then_some(()))
        })?;
        Ok(())
    })
}
