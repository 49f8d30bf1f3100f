//! `weftctl profile` on a 2-node simulated cluster with weft's real
//! binaries: the node's agent samples a pod's stacks with its
//! `perf_event` eBPF program, symbolizes them, and weftctl writes the
//! flame graph and the top functions.
//!
//! - a pod running `weft-sim-burn cpu` (a named, never-inlined hot loop)
//!   on node-2, profiled from the control plane's namespace (the pod's
//!   agent is found through the control plane): `spin_hot_loop` leads the
//!   table, the SVG is well-formed and names it, and nothing of the other
//!   pod is in it (the cgroup filter);
//! - a pod outside the mesh running `weft-sim-burn syscalls` (getppid(2)
//!   in a loop) on node-1: most samples carry kernel frames;
//! - `--agent`: only the agent's own threads; `--node`: everything;
//! - bad input (an unknown pod, a pod on no node, a pod asked of the wrong
//!   agent, a duration of 0 or 10 days, 1 MHz) is refused with the reason
//!   and loads nothing; the admin endpoint is not served on the metrics
//!   port; a client that goes away mid-profile detaches the program.
//!
//! The agents serve their admin API on the node's address here
//! (`--admin-addr 0.0.0.0:15000`) so that weftctl, in the control plane's
//! namespace, reaches them as an operator with a port-forward would.
//! Needs root, a kernel with perf events and BPF, and the binaries
//! (`cargo build -p weft-agent -p weft-control -p weft-sim -p weftctl --bins`).

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use common::*;
use weft_sim::{Cluster, Netns, PodSpec, Process, wait_for};

/// `weftctl --timeout 5s <args>` in `netns`, with the control plane's
/// address: exit code, stdout, stderr.
fn weftctl(cluster: &Cluster, netns: &Netns, args: &[&str]) -> Result<(i32, String, String)> {
    let binary = cluster.bin_dir().join("weftctl");
    ensure!(
        binary.is_file(),
        "{} is missing: build it first (cargo build -p weftctl)",
        binary.display()
    );
    let control = cluster.control().debug_addr().to_string();
    let out = netns
        .run(|| {
            Command::new(&binary)
                .args(["--timeout", "5s"])
                .args(args)
                .args(["--control", &control])
                .output()
        })?
        .context("running weftctl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `weftctl profile <args>` that must succeed: its table.
fn profile(cluster: &Cluster, netns: &Netns, args: &[&str]) -> Result<String> {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = weftctl(cluster, netns, &all)?;
    ensure!(
        code == 0,
        "weftctl {} failed (exit {code}): {stderr}\n{stdout}\n{}",
        all.join(" "),
        cluster.logs_tail(40)
    );
    Ok(stdout)
}

/// `weftctl profile <args>` that must fail: its error.
fn refused(cluster: &Cluster, netns: &Netns, args: &[&str]) -> Result<String> {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = weftctl(cluster, netns, &all)?;
    ensure!(code != 0, "weftctl {} succeeded: {stdout}", all.join(" "));
    Ok(stderr)
}

/// The table's first `n` rows: (SPACE, FUNCTION).
fn top_rows(table: &str, n: usize) -> Vec<(String, String)> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("SELF "))
        .skip(1)
        .take_while(|l| !l.starts_with("note:") && !l.starts_with("flame graph:"))
        .take(n)
        .map(|l| {
            let cells = cells(l);
            (cells[3].to_string(), cells[4].to_string())
        })
        .collect()
}

/// A table row's five cells (a function name may hold spaces).
fn cells(line: &str) -> Vec<&str> {
    let mut cells = Vec::new();
    let mut rest = line.trim_start();
    for _ in 0..4 {
        let end = rest.find(' ').unwrap_or(rest.len());
        cells.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    cells.push(rest);
    cells
}

/// The table row of `function`: (SELF%, SPACE).
fn row<'a>(table: &'a str, function: &str) -> Option<(f64, &'a str)> {
    table.lines().find_map(|l| {
        let cells = cells(l);
        (cells[4] == function).then(|| {
            let percent = cells[1].trim_end_matches('%').parse().unwrap_or(0.0);
            (percent, cells[3])
        })
    })
}

/// Folded lines as (frames, count).
fn read_folded(path: &Path) -> Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').context("a folded line has a count")?;
            Ok((stack.to_string(), n.parse()?))
        })
        .collect()
}

/// The SVG is a well-formed XML document with an `<svg>` root that names
/// `function`.
fn check_svg(path: &Path, function: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut root = None;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) if root.is_none() => {
                root = Some(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(err) => bail!(
                "{} is not well-formed XML at byte {}: {err}",
                path.display(),
                reader.buffer_position()
            ),
        }
    }
    ensure!(
        root.as_deref() == Some("svg"),
        "the root element is {root:?}, not svg"
    );
    ensure!(
        text.contains(function),
        "{} does not name {function}",
        path.display()
    );
    Ok(())
}

/// What the agent holds open of a profile: perf event attachments (BPF
/// links of type perf_event, or bare perf event fds on kernels without
/// such links) and perf_event BPF programs.
fn agent_perf_fds(pid: u32) -> Result<(usize, usize)> {
    let mut attachments = 0;
    let mut programs = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let info = || {
            std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default()
        };
        let field = |info: &str, key: &str, value: &str| {
            info.lines().any(|l| l.split_whitespace().eq([key, value]))
        };
        match target.to_string_lossy().as_ref() {
            "anon_inode:[perf_event]" => attachments += 1,
            // The kernel names the type `perf` (`BPF_LINK_TYPE(…, perf)`).
            "anon_inode:bpf_link"
                if field(&info(), "link_type:", "perf")
                    || field(&info(), "link_type:", "perf_event") =>
            {
                attachments += 1
            }
            // BPF_PROG_TYPE_PERF_EVENT
            "anon_inode:bpf-prog" if field(&info(), "prog_type:", "7") => programs += 1,
            _ => {}
        }
    }
    Ok((attachments, programs))
}

/// `POST path` to `addr` from `netns`: the status line's code.
fn post_status(netns: &Netns, addr: SocketAddr, path: &str) -> Result<u16> {
    let response = netns.run(|| -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })??;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {response}"))
}

fn burn(cluster: &Cluster, node: &str, ns: &str, name: &str, mode: &str) -> Result<Process> {
    let pod = cluster.add_pod(PodSpec::new(node, ns, name).service_account(name))?;
    let binary = cluster.bin_dir().join("weft-sim-burn");
    ensure!(
        binary.is_file(),
        "{} is missing: build it first (cargo build -p weft-sim --bins)",
        binary.display()
    );
    let mut cmd = Command::new(binary);
    cmd.arg(mode);
    pod.spawn(cmd)
}

#[test]
fn profiles_a_pod_the_agent_and_the_node_and_refuses_bad_input() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--admin-addr", "0.0.0.0:15000"])
        .build()?;
    cluster.with_logs(|cluster| {
        // One pod in the mesh, one outside it: profiling needs no
        // enrolment, only the pod's processes.
        cluster.add_namespace("work", &[AMBIENT])?;
        cluster.add_namespace("plain", &[])?;
        let _cpu = burn(cluster, "node-2", "work", "burn-cpu", "cpu")?;
        let _sys = burn(cluster, "node-1", "plain", "burn-sys", "syscalls")?;
        let control = cluster.control().netns();
        let node1 = cluster.node("node-1")?;
        let agent1 = node1.agent_pid().context("node-1's agent is not running")?;
        let dir = tempfile_dir(cluster)?;
        // The pods' workloads reach the control plane asynchronously.
        // (A duration of 0 reaches the pod's agent, which refuses it
        // before loading anything.)
        for pod in ["work/burn-cpu", "plain/burn-sys"] {
            wait_for(&format!("{pod} in the control plane's objects"), TIMEOUT, || {
                let (code, _, stderr) = weftctl(cluster, control, &["profile", pod, "--duration", "0"])?;
                Ok((code != 0 && stderr.contains("duration 0s is out of range")).then_some(()))
            })?;
        }

        // A CPU-bound pod on node-2, asked from the control plane's
        // namespace: node-2's agent samples it.
        let svg = dir.join("cpu.svg");
        let folded = dir.join("cpu.folded");
        let table = profile(cluster, control, &[
            "work/burn-cpu", "--duration", "3s", "--frequency", "99",
            "-o", svg.to_str().unwrap(), "--folded", folded.to_str().unwrap(), "--top", "10",
        ])?;
        println!("weftctl profile work/burn-cpu:\n{table}");
        ensure!(table.starts_with("pod work/burn-cpu (cgroup "), "{table}");
        ensure!(table.contains(" on node-2: "), "{table}");
        let top: Vec<String> = top_rows(&table, 3).into_iter().map(|(_, f)| f).collect();
        let hot = top.iter().find(|f| f.ends_with("spin_hot_loop")).with_context(|| format!("spin_hot_loop is not among the top 3 {top:?}:\n{table}"))?;
        let (share, space) = row(&table, hot).context("no row")?;
        ensure!(share >= 50.0 && space == "user", "spin_hot_loop has {share}% self in {space}:\n{table}");
        check_svg(&svg, "spin_hot_loop")?;
        let stacks = read_folded(&folded)?;
        ensure!(
            stacks.iter().all(|(s, _)| !s.contains("getppid_loop")),
            "the other pod's function is in this pod's profile: the cgroup filter let it through"
        );
        // The profile says what it cost: the kernel ran the sampling
        // program about once per sample, and the agent symbolized.
        let cost = table
            .lines()
            .find(|l| l.starts_with("cost: "))
            .with_context(|| format!("a cost line:\n{table}"))?;
        let runs: u64 = cost
            .split(" in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("the sampling program's runs in {cost:?}"))?;
        ensure!(
            cost.contains("% of one CPU over 3.0s") && runs > 0,
            "the profile's cost names the program's runs and a share of one CPU: {cost:?}"
        );

        // A kernel-heavy pod on node-1: getppid(2) in a loop.
        let folded = dir.join("sys.folded");
        let table = profile(cluster, control, &[
            "plain/burn-sys", "--duration", "3s", "-o", dir.join("sys.svg").to_str().unwrap(),
            "--folded", folded.to_str().unwrap(), "--top", "10",
        ])?;
        println!("weftctl profile plain/burn-sys:\n{table}");
        ensure!(table.contains(" on node-1: "), "{table}");
        let stacks = read_folded(&folded)?;
        let total: u64 = stacks.iter().map(|(_, n)| n).sum();
        let in_kernel: u64 = stacks.iter().filter(|(s, _)| s.contains("_[k]")).map(|(_, n)| n).sum();
        ensure!(total > 0 && in_kernel * 100 >= total * 30, "{in_kernel} of {total} samples have kernel frames:\n{table}");
        ensure!(
            stacks.iter().any(|(s, _)| s.contains("do_syscall_64_[k]") || s.contains("getppid_[k]")),
            "no system call frame in the kernel stacks:\n{table}"
        );
        ensure!(
            top_rows(&table, 5).iter().any(|(space, _)| space == "kernel"),
            "no kernel function in the top 5:\n{table}"
        );
        ensure!(stacks.iter().all(|(s, _)| !s.contains("spin_hot_loop")), "the cpu pod is in the syscall pod's profile");

        // The agent itself, asked on its node at 127.0.0.1:15000, while
        // something makes it work.
        let busy = std::sync::atomic::AtomicBool::new(true);
        let folded = dir.join("agent.folded");
        let table = std::thread::scope(|scope| {
            scope.spawn(|| {
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = node1.admin_json("/config_dump");
                }
            });
            let table = profile(cluster, node1.netns(), &[
                "--agent", "--duration", "4s", "-o", dir.join("agent.svg").to_str().unwrap(),
                "--folded", folded.to_str().unwrap(),
            ]);
            busy.store(false, std::sync::atomic::Ordering::Relaxed);
            table
        })?;
        println!("weftctl profile --agent:\n{table}");
        ensure!(table.starts_with(&format!("the agent (pid {agent1}) on node-1: ")), "{table}");
        let stacks = read_folded(&folded)?;
        ensure!(!stacks.is_empty(), "no samples of a busy agent:\n{table}");
        // The agent has no frame pointers, so a sample often holds just
        // its leaf: a function of weft or of a crate only the agent links.
        let agent_code = ["weft_agent::", "hyper::", "h2::", "tokio::", "rustls::", "aya::"];
        ensure!(
            stacks
                .iter()
                .any(|(s, _)| agent_code.iter().any(|c| s.contains(c))),
            "no function of the agent's code in its profile:\n{table}"
        );
        ensure!(
            stacks.iter().all(|(s, _)| !s.contains("getppid_loop") && !s.contains("spin_hot_loop")),
            "a pod's function is in the agent's profile: the process filter let it through"
        );

        // The whole node. The simulated nodes share one kernel and its
        // CPUs, so both pods show up. burn-sys is found by getppid (libc's
        // and the kernel's, in nearly all of its samples): its loop
        // function is in 1% of them (no frame pointers), so a 1 s profile
        // often holds none.
        let folded = dir.join("node.folded");
        profile(cluster, node1.netns(), &[
            "--node", "--duration", "1s", "-o", dir.join("node.svg").to_str().unwrap(),
            "--folded", folded.to_str().unwrap(),
        ])?;
        let stacks = read_folded(&folded)?;
        ensure!(
            stacks.iter().any(|(s, _)| s.contains("getppid")) && stacks.iter().any(|(s, _)| s.contains("spin_hot_loop")),
            "a node profile misses a busy pod"
        );
        ensure!(agent_perf_fds(agent1)? == (0, 0), "profiles ended but the agent still holds perf events or programs");

        // Bad input: refused with the thing and the reason, nothing loaded.
        let err = refused(cluster, control, &["work/nope", "--duration", "1s"])?;
        ensure!(err.contains("POD `work/nope` is not a pod the control plane knows"), "{err}");
        cluster.write_config_file(
            "pending.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pending\n  namespace: work\nspec:\n  containers:\n  - name: app\n",
        )?;
        wait_for("the unscheduled pod to be refused", TIMEOUT, || {
            let (code, _, err) = weftctl(cluster, control, &["profile", "work/pending", "--duration", "1s"])?;
            Ok((code != 0 && err.contains("pod work/pending is not scheduled on any node")).then_some(()))
        })?;
        let node1_admin = format!("node-2={}:15000", node1.ip());
        let err = refused(cluster, control, &["work/burn-cpu", "--duration", "1s", "--admin", &node1_admin])?;
        ensure!(err.contains("pod work/burn-cpu runs on node node-2, not on this node (node-1)"), "{err}");
        for (args, reason) in [
            (&["plain/burn-sys", "--duration", "0"][..], "duration 0s is out of range: a profile runs from 1s to 5m"),
            (&["plain/burn-sys", "--duration", "10d"][..], "duration 10d is out of range: a profile runs from 1s to 5m"),
            (&["plain/burn-sys", "--frequency", "1000000"][..], "frequency 1000000 Hz is out of range: from 1 to 1000 Hz per CPU"),
            (&["--agent", "--on", "node-1", "--frequency", "0"][..], "frequency 0 Hz is out of range"),
        ] {
            let err = refused(cluster, control, args)?;
            ensure!(err.contains(reason) && err.contains("HTTP 400"), "{args:?}: {err}");
            ensure!(agent_perf_fds(agent1)? == (0, 0), "{args:?} was refused but loaded something");
        }
        // Only the admin listener serves it.
        let metrics = SocketAddr::from((node1.ip(), 15020));
        let status = post_status(node1.netns(), metrics, "/profile?target=agent&duration_ms=1000")?;
        ensure!(status == 404, "the metrics port answered POST /profile with {status}");

        // A client that goes away mid-profile: the program is detached.
        let binary = cluster.bin_dir().join("weftctl");
        let mut cmd = Command::new(binary);
        cmd.args(["profile", "--agent", "--duration", "60s", "-o", dir.join("gone.svg").to_str().unwrap()]);
        let mut client = node1.spawn(cmd)?;
        wait_for("the agent to attach its profiling program", TIMEOUT, || {
            let (events, programs) = agent_perf_fds(agent1)?;
            Ok((events > 0 && programs == 1).then_some(()))
        })?;
        client.kill();
        wait_for("the agent to detach after the client went away", TIMEOUT, || {
            Ok((agent_perf_fds(agent1)? == (0, 0)).then_some(()))
        })?;
        // The agent's log lines reach its file through its log thread.
        wait_for("the agent to log the cancelled profile", TIMEOUT, || {
            Ok(node1.agent_log().contains("profile cancelled: the client went away").then_some(()))
        })?;
        Ok(())
    })
}

/// A directory for the test's files, with the cluster's logs: removed
/// with them, kept with them under `WEFT_SIM_KEEP_LOGS` (README's flame
/// graphs come from there).
fn tempfile_dir(cluster: &Cluster) -> Result<std::path::PathBuf> {
    let dir = cluster.log_dir().join("profiles");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
