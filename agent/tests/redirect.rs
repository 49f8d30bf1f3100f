//! The eBPF redirection, against the real kernel: a process in an enrolled
//! network namespace connects somewhere; the connection lands on the
//! proxy's outbound listener and the agent recovers the original
//! destination. Needs root, bpffs and cgroup v2; fails (never skips)
//! without them.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use weft_agent::{
    redirect::{Redirector, loader::RedirectConfig},
    sys::{Netns, mounts, sockopt},
};

/// A named netns and a cgroup, removed on drop.
struct Sandbox {
    netns: String,
    cgroup: PathBuf,
    bpffs: PathBuf,
}

impl Sandbox {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (eBPF, netns, cgroups)"
        );
        let id = format!("weft-t-{tag}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &id])
            .status()
            .expect("`ip` (iproute2) is installed");
        assert!(status.success(), "ip netns add {id}");
        let _ = Command::new("ip")
            .args(["-n", &id, "link", "set", "lo", "up"])
            .status();
        let cgroup = mounts::cgroup2_root().expect("cgroup2 mounted").join(&id);
        std::fs::create_dir_all(cgroup.join("pod")).expect("create cgroup");
        let bpffs = PathBuf::from("/sys/fs/bpf").join(&id);
        Self {
            netns: id,
            cgroup,
            bpffs,
        }
    }

    fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns)
    }

    /// Runs `script` with bash inside the netns and the pod cgroup.
    fn spawn(&self, script: &str) -> std::process::Child {
        let netns = std::fs::File::open(self.netns_path()).expect("open netns");
        let procs = self.cgroup.join("pod/cgroup.procs");
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only setns and a write between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                std::fs::write(&procs, "0")?;
                Ok(())
            });
        }
        cmd.spawn().expect("spawn bash")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir(self.cgroup.join("pod"));
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn listener_in(netns: &Netns, addr: SocketAddr) -> TcpListener {
    let listener = netns
        .run(|| sockopt::listener(addr, false))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(false).unwrap();
    listener
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolled_connect_is_captured_with_its_original_destination() {
    Netns::init_home();
    let sandbox = Sandbox::new("capture");
    let redirector = Redirector::load(&RedirectConfig {
        bpffs_dir: sandbox.bpffs.clone(),
        cgroup: Some(sandbox.cgroup.clone()),
        capture_times: true,
    })
    .expect("load eBPF redirection");
    let netns = Netns::open(sandbox.netns_path()).unwrap();
    let cookie = netns.cookie().unwrap();
    let outbound = listener_in(&netns, "127.0.0.1:15001".parse().unwrap());

    // Not enrolled yet: the connect goes where it was sent (nowhere: the
    // namespace has no route), so it fails.
    let out = sandbox
        .spawn("exec 3<>/dev/tcp/192.0.2.10/8080 && echo connected")
        .wait_with_output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unenrolled pod must not be captured: {out:?}"
    );

    redirector.enrol(cookie).unwrap();
    let child = sandbox.spawn("exec 3<>/dev/tcp/192.0.2.10/8080; echo -n ping >&3; head -c 4 <&3");
    let (mut stream, peer) = outbound.accept().unwrap();
    let accepted_ns = weft_agent::sys::monotonic_ns();
    let capture = redirector
        .take_capture(cookie, peer.port(), accepted_ns)
        .expect("the connection's capture recorded");
    assert_eq!(
        capture.original_dst,
        "192.0.2.10:8080".parse().unwrap(),
        "original destination recorded"
    );
    // Stamped when the SYN left, on the agent's monotonic clock.
    let syn_sent_ns = capture.syn_sent_ns.expect("the SYN's time recorded");
    assert!(
        syn_sent_ns <= accepted_ns && accepted_ns - syn_sent_ns < 10_000_000_000,
        "SYN sent at {syn_sent_ns} ns, accepted at {accepted_ns} ns"
    );
    assert!(
        redirector
            .take_capture(cookie, peer.port(), accepted_ns)
            .is_none(),
        "the records are consumed"
    );
    let mut ping = [0u8; 4];
    stream.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"ping");
    stream.write_all(b"pong").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong", "{out:?}");

    // The proxy's own sockets (marked) are never captured: this one goes to
    // its real, unroutable destination and fails.
    let marked = netns
        .run(|| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_mark(weft_ebpf_common::OUTBOUND_MARK).unwrap();
            let addr: SocketAddr = "192.0.2.10:8080".parse().unwrap();
            socket.connect_timeout(&addr.into(), Duration::from_millis(300))
        })
        .unwrap();
    assert!(
        marked.is_err(),
        "a marked socket must not be captured: {marked:?}"
    );

    // Loopback is never captured either.
    let local = listener_in(&netns, "127.0.0.1:9000".parse().unwrap());
    let child = sandbox.spawn("exec 3<>/dev/tcp/127.0.0.1/9000 && echo -n hi >&3");
    let (mut stream, _) = local.accept().unwrap();
    let mut hi = [0u8; 2];
    stream.read_exact(&mut hi).unwrap();
    assert_eq!(&hi, b"hi");
    child.wait_with_output().unwrap();

    redirector.unenrol(cookie).unwrap();
    let out = sandbox
        .spawn("exec 3<>/dev/tcp/192.0.2.10/8080 && echo connected")
        .wait_with_output()
        .unwrap();
    assert!(
        !out.status.success(),
        "after unenrol the pod is not captured: {out:?}"
    );
}
