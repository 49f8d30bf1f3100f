//! A cluster leaves nothing behind: not when dropped, not when the test
//! body panics, and leftovers of a run whose process died are removed at the
//! next start. Needs root.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use weft_sim::{Cluster, PodSpec, RunId, cgroup2_root, leftovers};

fn build(nodes: u8) -> Result<Cluster> {
    Cluster::builder().nodes(nodes).mesh(false).build()
}

/// What a run created, recorded while it was alive.
#[derive(Debug)]
struct Footprint {
    run: RunId,
    netns_files: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    bpffs: Vec<PathBuf>,
    dir: PathBuf,
    pids: Vec<u32>,
}

/// A 2-node cluster, 3 pods with a process each, and a node process.
/// Returns the cluster, the process handles, and what they created.
fn busy_cluster() -> Result<(Cluster, Vec<weft_sim::Process>, Footprint)> {
    let cluster = build(2)?;
    let mut procs = Vec::new();
    let mut netns_files = vec![cluster.fabric().path()];
    let mut cgroups = vec![cluster.run_cgroup().to_path_buf()];
    for (node, name) in [("node-1", "a"), ("node-1", "b"), ("node-2", "c")] {
        let pod = cluster.add_pod(PodSpec::new(node, "demo", name))?;
        procs.push(pod.spawn_app(&["tcp-echo", "--port", "9000"])?);
        netns_files.push(pod.netns().path());
        cgroups.push(pod.cgroup_dir().to_path_buf());
    }
    let mut bpffs = Vec::new();
    for node in cluster.nodes() {
        netns_files.push(node.netns().path());
        cgroups.push(node.cgroup_dir().to_path_buf());
        // What an agent would pin (no agent runs without the mesh).
        std::fs::create_dir_all(node.bpffs_dir().join("links"))?;
        bpffs.push(node.bpffs_dir().to_path_buf());
    }
    let mut sleeper = Command::new("sleep");
    sleeper.arg("600");
    procs.push(cluster.node("node-2")?.spawn(sleeper)?);
    let pids = procs.iter().map(|p| p.pid()).collect();
    let footprint = Footprint {
        run: cluster.run_id().clone(),
        dir: cluster.dir().to_path_buf(),
        netns_files,
        cgroups,
        bpffs,
        pids,
    };
    for p in &footprint.netns_files {
        ensure!(
            p.exists(),
            "{} should exist while the cluster lives",
            p.display()
        );
    }
    for p in &footprint.cgroups {
        ensure!(
            p.is_dir(),
            "{} should exist while the cluster lives",
            p.display()
        );
    }
    for pid in &footprint.pids {
        ensure!(
            alive(*pid),
            "process {pid} should run while the cluster lives"
        );
    }
    Ok((cluster, procs, footprint))
}

/// A process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn host_links() -> Result<BTreeSet<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect())
}

fn assert_gone(fp: &Footprint) -> Result<()> {
    let left = leftovers(&fp.run, &cgroup2_root()?);
    ensure!(left.is_empty(), "run {} left behind: {left:#?}", fp.run);
    let paths = fp.netns_files.iter().chain(&fp.cgroups).chain(&fp.bpffs);
    for p in paths.chain([&fp.dir]) {
        ensure!(!p.exists(), "{} still exists", p.display());
    }
    for pid in &fp.pids {
        ensure!(!alive(*pid), "process {pid} still runs");
    }
    Ok(())
}

#[test]
fn drop_removes_everything() -> Result<()> {
    let links_before = host_links()?;
    let (cluster, procs, fp) = busy_cluster()?;
    drop(cluster);
    // The processes were killed with the cluster, before their handles drop.
    assert_gone(&fp)?;
    drop(procs);
    assert_gone(&fp)?;
    ensure!(host_links()? == links_before, "host links changed");
    Ok(())
}

#[test]
fn panic_with_a_live_cluster_removes_everything() -> Result<()> {
    let links_before = host_links()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        let (_cluster, _procs, fp) = busy_cluster().expect("building the cluster");
        tx.send(fp).expect("sending the footprint");
        panic!("deliberate panic inside a test body");
    });
    let outcome = body.join();
    ensure!(outcome.is_err(), "the test body should have panicked");
    let fp = rx.recv().context("the body never built its cluster")?;
    assert_gone(&fp)?;
    ensure!(host_links()? == links_before, "host links changed");

    // And with catch_unwind on the same thread.
    let caught = std::panic::catch_unwind(|| {
        let (_cluster, _procs, fp) = busy_cluster().expect("building the cluster");
        std::panic::panic_any(fp);
    });
    let fp = *caught
        .expect_err("the body should have panicked")
        .downcast::<Footprint>()
        .map_err(|_| anyhow::anyhow!("unexpected panic payload"))?;
    assert_gone(&fp)
}

#[test]
fn leftovers_of_a_dead_run_are_removed_at_the_next_start() -> Result<()> {
    // Fake the remains of a run whose process died without cleaning up: a
    // netns, a cgroup tree with a process still in it, a bpffs dir and a
    // run directory. The run is named after a live stand-in process until
    // it is complete, so that no concurrent sweep (from any test process)
    // sees it half-made; then the stand-in dies.
    let mut owner = Command::new("sleep").arg("600").spawn()?;
    let dead = RunId::from_prefix(&format!("w{}n7", owner.id())).context("run id")?;
    let cg_root = cgroup2_root()?;
    let netns = dead.netns("node-1");
    let status = Command::new("ip").args(["netns", "add", &netns]).status()?;
    ensure!(status.success(), "ip netns add {netns}");
    let pod_cg = dead.cgroup_dir(&cg_root).join("node-1").join("demo_a");
    std::fs::create_dir_all(&pod_cg)?;
    let mut orphan = Command::new("sleep").arg("600").spawn()?;
    std::fs::write(pod_cg.join("cgroup.procs"), orphan.id().to_string())?;
    let bpffs = dead.bpffs_dir("node-1");
    std::fs::create_dir_all(&bpffs)?;
    std::fs::create_dir_all(dead.temp_dir().join("config"))?;
    let before = leftovers(&dead, &cg_root);
    ensure!(before.len() == 5, "{before:#?}");
    owner.kill()?;
    owner.wait()?;
    ensure!(!dead.owner_alive());

    // Building any cluster cleans up dead runs first.
    let cluster = build(1)?;
    let left = leftovers(&dead, &cg_root);
    ensure!(
        left.is_empty(),
        "the dead run's leftovers survived: {left:#?}"
    );
    // The orphan was killed (it is our child: reap it).
    let status = orphan.wait()?;
    ensure!(
        !status.success(),
        "orphan should have been killed, exited {status}"
    );

    // A live run (this one) is left alone by a second sweep.
    let removed = weft_sim::cleanup_stale(&cg_root)?;
    ensure!(
        !removed.contains(cluster.run_id()),
        "a live run was removed"
    );
    ensure!(cluster.run_cgroup().is_dir());
    Ok(())
}
