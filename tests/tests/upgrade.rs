//! Zero-drop upgrade: a new agent takes the node over from the running
//! one (its listening sockets, handed over a unix socket) while traffic
//! flows, and the old one carries the connections it holds to their end.
//!
//! Needs root and the built binaries, like every cluster test.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{AMBIENT, TIMEOUT, backend, client};
use weft_sim::{Cluster, PodSpec, Process, ServicePort, wait_for};

/// Longer than the test: the old agents keep the held connections until
/// the test closes them.
const DRAIN: &str = "120s";

/// Waits for `process` to exit and checks that it succeeded, returning
/// its last line (the client's summary).
fn summary(process: &mut Process, what: &str) -> Result<String> {
    let status = process.wait_exit(TIMEOUT)?;
    let log = process.log();
    ensure!(status.success(), "{what} failed ({status}):\n{log}");
    Ok(log.lines().last().unwrap_or_default().to_string())
}

#[test]
fn an_agent_upgrade_under_load_fails_no_request_and_resets_no_connection() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--drain-timeout", DRAIN])
        .build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("up", &[AMBIENT])?;
        let echo = cluster.add_pod(
            PodSpec::new("node-2", "up", "echo")
                .service_account("echo")
                .port("tcp-echo", 7000),
        )?;
        let _echo_app = echo.spawn_app(&["tcp-echo", "--port", "7000"])?;
        let _web = backend(cluster, "node-2", "up", "web", &[("app", "web")], 8080, &[])?;
        let vip = cluster.add_service(
            "up",
            "web",
            &[("app", "web")],
            &[ServicePort::http("http", 80, 8080)],
        )?;
        let caller = client(cluster, "node-1", "up", "caller")?;
        let target = echo.addr(7000).to_string();
        let url = format!("http://{vip}/upgrade");
        wait_for(
            "the echo server and the web service to answer",
            TIMEOUT,
            || {
                let tcp = caller.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
                let http = caller.run_app(&["http-get", &url], TIMEOUT)?;
                Ok((tcp.success() && tcp.stdout.contains("hello") && http.success()).then_some(()))
            },
        )?;

        // Load through both nodes: 100 long-lived connections, a new
        // connection every 20 ms, and HTTP requests on keep-alive
        // connections (L7 on both agents).
        let done = cluster.dir().join("upgrade-done");
        let done = done.to_string_lossy();
        let mut held = caller.spawn_app(&[
            "tcp-hold",
            &target,
            "--connections",
            "100",
            "--interval-ms",
            "200",
            "--until-file",
            &done,
        ])?;
        let mut churn = caller.spawn_app(&["tcp-churn", &target, "--until-file", &done])?;
        let mut http = caller.spawn_app(&["http-keepalive", &url, "--until-file", &done])?;
        wait_for("the 100 connections to be open", TIMEOUT, || {
            ensure!(held.is_running(), "tcp-hold exited:\n{}", held.log());
            Ok(held.log().contains("holding 100").then_some(()))
        })?;
        std::thread::sleep(Duration::from_secs(1));

        // The client's node first, then the server's.
        for node in cluster.nodes() {
            node.upgrade_agent()?;
            std::thread::sleep(Duration::from_secs(2));
        }
        // New connections now go through the new agents only.
        std::thread::sleep(Duration::from_secs(2));
        std::fs::write(&*done, "")?;

        let held = summary(&mut held, "the 100 long-lived connections")?;
        ensure!(
            held.ends_with(" 0 connections failed"),
            "long-lived connections: {held}"
        );
        let churn = summary(&mut churn, "the new connections")?;
        ensure!(churn.contains(", 0 failed"), "new connections: {churn}");
        let http = summary(&mut http, "the HTTP requests")?;
        ensure!(http.contains(", 0 failed"), "HTTP requests: {http}");
        println!("through the upgrade: {held}; {churn}; {http}");

        // The held connections closed: the old agents have nothing left
        // and exit well before their drain deadline.
        for node in cluster.nodes() {
            let logs = node.wait_retired_agents(TIMEOUT)?;
            ensure!(
                logs.len() == 1,
                "{}: {} retired agents",
                node.name(),
                logs.len()
            );
            ensure!(
                logs[0].contains("handed this node over"),
                "{}: the old agent did not hand over:\n{}",
                node.name(),
                logs[0]
            );
        }
        // The new agents serve on: a request after the old ones are gone.
        let out = caller.run_app(&["tcp-send", &target, "after"], TIMEOUT)?;
        ensure!(out.success() && out.stdout.contains("after"), "{out:?}");
        Ok(())
    })
}
