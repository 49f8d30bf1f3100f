//! The agent's lifecycle, in process: `App::start` opens its listeners and
//! loads its eBPF programs, `Running::stop` winds it down, and then nothing
//! of the agent runs any more: no task is left on the runtime, its ports
//! and CNI socket refuse connections, a kept-alive admin connection was
//! closed, and a second agent starts on the same addresses and pins.
//!
//! No control plane runs: the agent keeps trying to reach one (the
//! address is a closed port), as it does on a node whose control plane is
//! down. Needs root, bpffs and cgroup v2; fails (never skips) without
//! them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_agent::{
    App, Config,
    log_sink::{LogLevel, Logging},
    sys::mounts,
};

/// A cgroup, a bpffs directory and a state directory, removed on drop.
struct Sandbox {
    cgroup: PathBuf,
    bpffs: PathBuf,
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (eBPF programs, bpffs pins, cgroups)"
        );
        let id = format!("weft-t-lifecycle-{}", std::process::id());
        let cgroup = mounts::cgroup2_root()
            .expect("this test needs cgroup v2 mounted")
            .join(&id);
        std::fs::create_dir_all(&cgroup).expect("create the test's cgroup");
        let bpffs = PathBuf::from("/sys/fs/bpf").join(&id);
        let dir = tempfile::tempdir().expect("temporary directory");
        Self { cgroup, bpffs, dir }
    }

    /// The agent's flags: every address on loopback, ports picked now.
    fn config(&self) -> Config {
        let bundle = self.dir.path().join("trust-bundle.pem");
        let token = self.dir.path().join("token");
        if !bundle.exists() {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["weft-control".into()])
                .expect("params")
                .self_signed(&key)
                .expect("self-signed root");
            std::fs::write(&bundle, cert.pem()).expect("write the bundle");
            std::fs::write(&token, "test-token").expect("write the token");
        }
        let path = |p: &Path| p.display().to_string();
        Config::parse_from([
            "weft-agent".to_string(),
            "--node-name=lifecycle".into(),
            // Nothing listens there: the agent keeps retrying.
            format!("--control-addr=127.0.0.1:{}", closed_port()),
            format!("--ca-root-file={}", path(&bundle)),
            format!("--token-file={}", path(&token)),
            format!("--cni-socket={}", path(&self.dir.path().join("cni.sock"))),
            format!("--state-dir={}", path(&self.dir.path().join("state"))),
            format!("--bpffs-dir={}", path(&self.bpffs)),
            format!("--cgroup={}", path(&self.cgroup)),
            format!("--admin-addr=127.0.0.1:{}", closed_port()),
            format!("--readiness-addr=127.0.0.1:{}", closed_port()),
            format!("--metrics-addr=127.0.0.1:{}", closed_port()),
            "--drain-timeout=2s".into(),
        ])
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// A loopback port nothing listens on (the moment it is picked).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn logging() -> Logging {
    Logging::new(LogLevel::new("info", |_| Ok(())), None)
}

/// Sends one GET on `stream` and returns the status code of its answer.
async fn get(stream: &mut tokio::net::TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The head and a short body arrive together; read until the blank line.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "the agent closed the connection before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"))
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Tasks alive on this runtime, once they settle (up to 5 s).
async fn settled_tasks() -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..100 {
        if metrics.num_alive_tasks() == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metrics.num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_leaves_no_task_no_listener_and_can_start_again() {
    let sandbox = Sandbox::new();
    for round in 1..=2 {
        let config = sandbox.config();
        let (readiness, admin, cni) = (
            config.readiness_addr,
            config.admin_addr,
            config.cni_socket.clone(),
        );
        let running = App::start(config, logging())
            .await
            .unwrap_or_else(|err| panic!("round {round}: the agent did not start: {err}"));

        // Serving: not ready (no control plane, so no workload data), and
        // says so; the admin API answers on a connection kept alive.
        let mut probe = tokio::net::TcpStream::connect(readiness)
            .await
            .expect("readiness listener");
        assert_eq!(
            get(&mut probe, "/healthz/ready").await,
            503,
            "round {round}"
        );
        let mut kept = tokio::net::TcpStream::connect(admin)
            .await
            .expect("admin listener");
        assert_eq!(get(&mut kept, "/config_dump").await, 200, "round {round}");
        tokio::net::UnixStream::connect(&cni)
            .await
            .expect("the CNI socket accepts");
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert!(alive > 0, "round {round}: the running agent has tasks");

        tokio::time::timeout(Duration::from_secs(30), running.stop())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the agent did not stop within 30 s"));

        // Nothing of it runs any more.
        assert_eq!(
            settled_tasks().await,
            0,
            "round {round}: tasks of the agent outlived its stop"
        );
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest))
            .await
            .expect("the kept-alive admin connection was closed by the stop");
        assert!(
            closed.is_ok() || rest.is_empty(),
            "round {round}: {closed:?}"
        );
        assert!(
            refused(readiness).await,
            "round {round}: readiness still open"
        );
        assert!(refused(admin).await, "round {round}: admin still open");
        assert!(
            tokio::net::UnixStream::connect(&cni).await.is_err(),
            "round {round}: the CNI socket still accepts"
        );
    }
}
