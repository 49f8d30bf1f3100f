//! The harness's mesh mode, against stand-ins for weft's binaries
//! (`weft-sim-fake`): the documented command lines, readiness waits,
//! bootstrap tokens, CNI calls, failure paths, agent restarts and teardown.
//! These test the harness, not weft. Needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weft_sim::{Cluster, PodSpec, cgroup2_root, leftovers};

/// A directory with `weft-control`, `weft-agent`, `weft-cni` linked to the
/// fake and `weft-sim-app` to the real app; removed on drop.
struct FakeBins(PathBuf);

impl FakeBins {
    fn new(tag: &str) -> Result<FakeBins> {
        let dir =
            std::env::temp_dir().join(format!("weft-sim-fakebin-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let fake = env!("CARGO_BIN_EXE_weft-sim-fake");
        for name in ["weft-control", "weft-agent", "weft-cni"] {
            std::os::unix::fs::symlink(fake, dir.join(name))?;
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weft-sim-app"), dir.join("weft-sim-app"))?;
        Ok(FakeBins(dir))
    }
}

impl Drop for FakeBins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fake_cluster(tag: &str, nodes: u8) -> Result<(Cluster, FakeBins)> {
    let bins = FakeBins::new(tag)?;
    let cluster = Cluster::builder()
        .nodes(nodes)
        .bin_dir(&bins.0)
        .ready_timeout(Duration::from_secs(20))
        .build()?;
    Ok((cluster, bins))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn control_and_agents_start_with_the_documented_flags() -> Result<()> {
    let (cluster, _bins) = fake_cluster("flags", 2)?;
    let control_args = read(&cluster.control().state_dir().join("args"))?;
    let config = cluster.config_dir().display().to_string();
    for expected in [
        "serve",
        &format!("--config-dir {config}"),
        "--xds-addr 0.0.0.0:15012",
        "--debug-addr 0.0.0.0:15014",
        "--trust-domain cluster.local",
    ] {
        ensure!(
            control_args.contains(expected),
            "control args lack {expected:?}: {control_args}"
        );
    }
    ensure!(cluster.control().trust_bundle().is_file());
    ensure!(cluster.control().pid().is_some());

    for node in cluster.nodes() {
        let args = read(&node.agent_state_dir().join("args"))?;
        for expected in [
            format!("--node-name {}", node.name()),
            format!("--control-addr {}", cluster.control().xds_addr()),
            format!(
                "--ca-root-file {}",
                cluster.control().trust_bundle().display()
            ),
            format!("--token-file {}", node.token_file().display()),
            format!("--cni-socket {}", node.cni_socket().display()),
            format!("--bpffs-dir {}", node.bpffs_dir().display()),
            format!("--cgroup {}", node.cgroup_dir().display()),
        ] {
            ensure!(
                args.contains(&expected),
                "agent args lack {expected:?}: {args}"
            );
        }
        ensure!(read(&node.token_file())?.trim() == format!("token-for-{}", node.name()));
        ensure!(node.agent_pid().is_some());
        let node_yaml = read(
            &cluster
                .config_dir()
                .join(format!("node-{}.yaml", node.name())),
        )?;
        ensure!(node_yaml.contains(&node.ip().to_string()), "{node_yaml}");
    }
    Ok(())
}

#[test]
fn pods_join_and_leave_through_the_cni_plugin() -> Result<()> {
    let (cluster, _bins) = fake_cluster("cni", 1)?;
    cluster.add_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])?;
    let pod = cluster.add_pod(
        PodSpec::new("node-1", "demo", "web")
            .label("app", "web")
            .port("http", 8080),
    )?;
    let node = cluster.node("node-1")?;
    let pods_log = node.agent_state_dir().join("pods");
    ensure!(read(&pods_log)? == "ADD demo/web\n");
    let ns_yaml = read(&cluster.config_dir().join("namespace-demo.yaml"))?;
    ensure!(
        ns_yaml.contains("istio.io/dataplane-mode: ambient"),
        "{ns_yaml}"
    );
    ensure!(
        cluster
            .config_dir()
            .join("serviceaccount-demo-default.yaml")
            .is_file()
    );

    let vip = cluster.add_service(
        "demo",
        "web",
        &[("app", "web")],
        &[weft_sim::ServicePort::tcp("http", 80, 8080)],
    )?;
    let svc_yaml = read(&cluster.config_dir().join("service-demo-web.yaml"))?;
    ensure!(
        svc_yaml.contains(&format!("clusterIP: {vip}")),
        "{svc_yaml}"
    );
    ensure!(
        cluster.add_service("demo", "web", &[("app", "web")], &[])? == vip,
        "VIP kept on rewrite"
    );

    cluster.delete_pod(&pod)?;
    ensure!(read(&pods_log)? == "ADD demo/web\nDEL demo/web\n");
    ensure!(!pod.netns().path().exists() && !pod.cgroup_dir().exists());
    Ok(())
}

#[test]
fn a_refusing_cni_plugin_fails_the_pod_and_undoes_it() -> Result<()> {
    let (cluster, _bins) = fake_cluster("deny", 1)?;
    let err = cluster
        .add_pod(PodSpec::new("node-1", "demo", "deny-me"))
        .expect_err("the plugin refuses deny-* pods");
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("\"code\":999") && msg.contains("deny list"),
        "CNI error JSON missing: {msg}"
    );
    ensure!(
        msg.contains("agent refused demo/deny-me"),
        "plugin stderr missing: {msg}"
    );
    ensure!(cluster.pod("demo", "deny-me").is_none());
    ensure!(!cluster.config_dir().join("pod-demo-deny-me.yaml").exists());
    let netns = weft_sim::Netns::list()?;
    ensure!(
        !netns.iter().any(|n| n.contains("deny-me")),
        "pod netns left: {netns:?}"
    );
    let node = cluster.node("node-1")?;
    ensure!(!node.cgroup_dir().join("demo_deny-me").exists());
    let links = node.netns().ip(&["-o", "link"])?;
    ensure!(
        links.lines().count() == 2,
        "only lo and eth0 should remain on the node:\n{links}"
    );
    // The next pod is fine.
    cluster.add_pod(PodSpec::new("node-1", "demo", "allowed"))?;
    Ok(())
}

#[test]
fn agents_restart_hard_and_gracefully_and_failures_show_the_log() -> Result<()> {
    let (cluster, _bins) = fake_cluster("restart", 1)?;
    let node = cluster.node("node-1")?;
    let first = node.agent_pid().context("agent running")?;
    node.restart_agent()?;
    let second = node.agent_pid().context("agent running after restart")?;
    ensure!(first != second);
    node.restart_agent_graceful(Duration::from_secs(5))?;
    ensure!(node.agent_pid().context("agent running")? != second);

    // An agent that exits at start fails the wait at once, quoting its log.
    std::fs::write(node.token_file(), "stolen")?;
    let start = std::time::Instant::now();
    let err = format!("{:#}", node.restart_agent().expect_err("bad token"));
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "waited for a dead agent"
    );
    ensure!(err.contains("the agent exited"), "{err}");
    ensure!(
        err.contains("not this node's token"),
        "agent log missing: {err}"
    );
    Ok(())
}

#[test]
fn teardown_removes_the_agents_bpffs_dirs() -> Result<()> {
    let (cluster, bins) = fake_cluster("teardown", 2)?;
    let run = cluster.run_id().clone();
    let dirs: Vec<PathBuf> = cluster
        .nodes()
        .iter()
        .map(|n| n.bpffs_dir().to_path_buf())
        .collect();
    for d in &dirs {
        ensure!(
            d.join("links").is_dir(),
            "fake agent should have made {}",
            d.display()
        );
    }
    drop(cluster);
    drop(bins);
    let left = leftovers(&run, &cgroup2_root()?);
    ensure!(left.is_empty(), "{left:#?}");
    for d in &dirs {
        ensure!(!d.exists(), "{} left", d.display());
    }
    Ok(())
}
