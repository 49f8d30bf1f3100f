//! Calling `weft-cni` the way a container runtime calls a chained CNI
//! plugin: environment variables, the network config with the primary
//! plugin's `prevResult` on stdin, the result (or error JSON) on stdout.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;

use crate::process::{Placement, run};

/// The gateway every pod routes through, answered by its node-side veth.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The CNI spec version the harness speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// `ADD` or `DEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// A pod sandbox was created.
    Add,
    /// A pod sandbox is going away.
    Del,
}

impl CniCommand {
    fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

/// One plugin invocation.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    /// The `weft-cni` binary.
    pub plugin: &'a Path,
    /// `CNI_PATH`.
    pub bin_dir: &'a Path,
    /// `ADD` or `DEL`.
    pub command: CniCommand,
    /// `CNI_CONTAINERID` (the sandbox id).
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: &'a str,
    /// `K8S_POD_NAME`.
    pub pod_name: &'a str,
    /// `K8S_POD_UID`.
    pub pod_uid: &'a str,
    /// The address the primary plugin gave eth0.
    pub ip: Ipv4Addr,
    /// The agent's CNI socket (`agent_socket` in the network config).
    pub agent_socket: &'a Path,
}

// === impl CniCall ===

impl CniCall<'_> {
    /// `CNI_ARGS`, as kubelet's runtimes set it.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod_namespace, self.pod_name, self.container_id, self.pod_uid
        )
    }

    /// The network config on stdin, with `prevResult` from the primary plugin.
    pub fn network_config(&self) -> String {
        let netns = self.netns.display().to_string();
        json!({
            "cniVersion": CNI_VERSION,
            "name": "weft-sim",
            "type": "weft-cni",
            "agent_socket": self.agent_socket.display().to_string(),
            "log_level": "info",
            "prevResult": {
                "cniVersion": CNI_VERSION,
                "interfaces": [{ "name": "eth0", "sandbox": netns }],
                "ips": [{
                    "address": format!("{}/32", self.ip),
                    "interface": 0,
                    "gateway": POD_GATEWAY.to_string(),
                }],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        })
        .to_string()
    }

    /// Runs the plugin; returns its stdout (the CNI result) on success, and
    /// on failure an error quoting its stdout (the CNI error JSON) and stderr.
    pub fn invoke(&self, timeout: Duration) -> Result<String> {
        let mut cmd = Command::new(self.plugin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", self.command.as_str())
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.bin_dir)
            .env("CNI_ARGS", self.cni_args());
        if let Some(v) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", v);
        }
        let config = self.network_config();
        let what = format!(
            "CNI {} of pod {}/{} by {}",
            self.command.as_str(),
            self.pod_namespace,
            self.pod_name,
            self.plugin.display()
        );
        let done = run(cmd, &Placement::default(), Some(config.as_bytes()), timeout)
            .map_err(|e| e.context(what.clone()))?;
        if !done.success() {
            bail!(
                "{what} failed ({}); the pod did not start.\n--- plugin stdout (CNI error) ---\n{}\n\
                 --- plugin stderr ---\n{}\n--- network config sent ---\n{config}",
                done.status,
                done.stdout.trim_end(),
                done.stderr.trim_end()
            );
        }
        Ok(done.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_args_match_what_runtimes_send() {
        let call = CniCall {
            plugin: Path::new("/bin/weft-cni"),
            bin_dir: Path::new("/bin"),
            command: CniCommand::Add,
            container_id: "c0ffee",
            netns: Path::new("/var/run/netns/w1n0-pod-demo-web"),
            pod_namespace: "demo",
            pod_name: "web",
            pod_uid: "u-1",
            ip: Ipv4Addr::new(10, 1, 1, 2),
            agent_socket: Path::new("/tmp/x/node-1/cni.sock"),
        };
        assert_eq!(
            call.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u-1"
        );
        let v: serde_json::Value = serde_json::from_str(&call.network_config()).unwrap();
        assert_eq!(v["type"], "weft-cni");
        assert_eq!(v["agent_socket"], "/tmp/x/node-1/cni.sock");
        assert_eq!(v["prevResult"]["ips"][0]["address"], "10.1.1.2/32");
        assert_eq!(v["prevResult"]["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(
            v["prevResult"]["interfaces"][0]["sandbox"],
            "/var/run/netns/w1n0-pod-demo-web"
        );
    }

    #[test]
    fn failing_plugin_error_quotes_its_output() {
        let dir = std::env::temp_dir().join(format!("weft-sim-cni-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("fake-cni");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"agent said no\"}'\n\
             echo \"cmd=$CNI_COMMAND\" >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let call = CniCall {
            plugin: &plugin,
            bin_dir: &dir,
            command: CniCommand::Add,
            container_id: "c",
            netns: Path::new("/nonexistent"),
            pod_namespace: "demo",
            pod_name: "web",
            pod_uid: "u",
            ip: Ipv4Addr::new(10, 1, 1, 2),
            agent_socket: Path::new("/nonexistent.sock"),
        };
        let err = format!("{:#}", call.invoke(Duration::from_secs(10)).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("agent said no"), "{err}");
        assert!(err.contains("cmd=ADD"), "{err}");
    }
}
