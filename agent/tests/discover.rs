//! Finding a running pod's network namespace on the node, against real
//! namespaces, processes and cgroups: the way the agent enrols pods that
//! ran before weft was installed. Needs root and cgroup v2; fails (never
//! skips) without them.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use weft_agent::{
    inpod::discover::{self, NetnsFinder},
    sys::{Netns, mounts},
};

/// A cgroup standing for a node's pods, and the "pods" (processes in their
/// own network namespaces) started in it; all removed on drop.
struct Node {
    cgroup: PathBuf,
    pods: Vec<Child>,
    named: Vec<String>,
}

impl Node {
    fn new(tag: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (network namespaces, cgroups)"
        );
        Netns::init_home();
        let cgroup = mounts::cgroup2_root()
            .expect("this test needs cgroup v2 mounted")
            .join(format!("weft-t-discover-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("create the test's cgroup");
        Self {
            cgroup,
            pods: Vec::new(),
            named: Vec::new(),
        }
    }

    /// A process in a fresh network namespace holding `ip` (on a dummy
    /// veth), placed in the node's cgroup. With `named`, the namespace is
    /// also bind-mounted as `ip netns add` (and container runtimes) do.
    fn pod(&mut self, ip: &str, named: Option<&str>) -> u32 {
        let setup = format!(
            "ip link set lo up && ip link add d0 type veth peer name d1 && ip addr add {ip}/32 dev d0 \
             && ip link set d0 up && echo ready && exec sleep 120"
        );
        let mut command = match named {
            Some(name) => {
                let status = Command::new("ip")
                    .args(["netns", "add", name])
                    .status()
                    .expect("`ip` (iproute2) is installed");
                assert!(status.success(), "ip netns add {name}");
                self.named.push(name.to_string());
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name, "sh", "-c", &setup]);
                c
            }
            None => {
                let mut c = Command::new("unshare");
                c.args(["--net", "sh", "-c", &setup]);
                c
            }
        };
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a process in a new network namespace");
        let pid = child.id();
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string())
            .expect("move the process into the test's cgroup");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the pod's readiness");
        assert_eq!(line.trim(), "ready", "the pod's namespace was not set up");
        self.pods.push(child);
        pid
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in &mut self.pods {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.named {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_pod_without_a_bind_mount_is_found_through_its_process() {
    let mut node = Node::new("proc");
    let pid = node.pod("192.0.2.77", None);
    node.pod("192.0.2.78", None);

    let scan = NetnsFinder::new(&node.cgroup)
        .without_bind_mounts()
        .scan(&HashSet::new());
    assert_eq!(scan.len(), 2, "both pods' namespaces, nothing else");
    let found = scan
        .find(&[ip("192.0.2.77")])
        .expect("the pod holding 192.0.2.77");
    assert_eq!(found.path, Path::new(&format!("/proc/{pid}/ns/net")));
    assert_eq!(discover::inode(&found.path), Some(found.inode));
    assert!(scan.find(&[ip("192.0.2.99")]).is_none());

    // Namespaces of pods already known are not entered again.
    let known = HashSet::from([found.inode]);
    let rescan = NetnsFinder::new(&node.cgroup)
        .without_bind_mounts()
        .scan(&known);
    assert_eq!(rescan.len(), 1);
    assert!(rescan.find(&[ip("192.0.2.77")]).is_none());
}

#[test]
fn a_runtime_bind_mount_is_preferred_to_the_process_path() {
    let mut node = Node::new("bind");
    let name = format!("weft-t-discover-{}", std::process::id());
    node.pod("192.0.2.80", Some(&name));

    let scan = NetnsFinder::new(&node.cgroup).scan(&HashSet::new());
    let found = scan.find(&[ip("192.0.2.80")]).expect("the named pod");
    assert!(
        found.path.ends_with(&name) && found.path.starts_with("/"),
        "expected the bind mount …/netns/{name}, got {}",
        found.path.display()
    );
    assert!(!found.path.starts_with("/proc"), "{}", found.path.display());
}

#[test]
fn two_namespaces_with_the_pod_ip_are_not_guessed_between() {
    let mut node = Node::new("twice");
    node.pod("192.0.2.90", None);
    node.pod("192.0.2.90", None);

    let scan = NetnsFinder::new(&node.cgroup)
        .without_bind_mounts()
        .scan(&HashSet::new());
    assert_eq!(scan.len(), 2);
    assert!(scan.find(&[ip("192.0.2.90")]).is_none());
}

#[test]
fn processes_outside_the_cgroup_are_not_looked_at() {
    let mut node = Node::new("outside");
    node.pod("192.0.2.95", None);
    let empty = Node::new("empty");

    let scan = NetnsFinder::new(&empty.cgroup).scan(&HashSet::new());
    assert!(scan.is_empty(), "found {} namespaces", scan.len());
}
