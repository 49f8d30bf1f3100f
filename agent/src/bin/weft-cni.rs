//! `weft-cni`: weft's chained CNI plugin.
//!
//! The container runtime runs it after the primary CNI plugin, with the
//! pod's details in `CNI_*` variables and the network configuration
//! (including `prevResult`) on stdin. It tells the node's weft agent about
//! the pod and waits until the agent has set it up: if the agent refuses or
//! can't be reached, the pod does not start (fail closed). On success it
//! passes `prevResult` through unchanged, as a chained plugin must.
//!
//! Network configuration keys of its own: `agent_socket` (default
//! `/var/run/weft/cni.sock`) and `timeout_seconds` (default 60).

use std::{
    collections::HashMap, io::Read, net::IpAddr, path::PathBuf, process::ExitCode, time::Duration,
};

use serde_json::{Value, json};
use weft_agent::cni::{self, Command, PodEvent};

const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes (spec: "Error result codes").
const ERR_INVALID_ENV: u32 = 4;
const ERR_INVALID_CONFIG: u32 = 7;
const ERR_TRY_AGAIN: u32 = 11;
const ERR_AGENT_REFUSED: u32 = 100;

struct CniError {
    code: u32,
    msg: String,
    details: String,
}

fn fail(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

fn main() -> ExitCode {
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let config: Value = serde_json::from_str(&stdin).unwrap_or(Value::Null);
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    match run(&config, &stdin) {
        Ok(Some(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            println!(
                "{}",
                json!({"cniVersion": version, "code": err.code, "msg": err.msg, "details": err.details})
            );
            eprintln!("weft-cni: {}: {}", err.msg, err.details);
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Result<String, CniError> {
    std::env::var(name).map_err(|_| {
        fail(
            ERR_INVALID_ENV,
            format!("{name} is not set"),
            "weft-cni must be run by a container runtime",
        )
    })
}

/// `CNI_ARGS`: `K1=V1;K2=V2`.
fn cni_args() -> HashMap<String, String> {
    std::env::var("CNI_ARGS")
        .unwrap_or_default()
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(config: &Value, raw: &str) -> Result<Option<String>, CniError> {
    let command = env("CNI_COMMAND")?;
    if command == "VERSION" {
        return Ok(Some(
            json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}).to_string(),
        ));
    }
    if config.is_null() {
        return Err(fail(
            ERR_INVALID_CONFIG,
            "the network configuration on stdin is not JSON",
            raw.chars().take(200).collect::<String>(),
        ));
    }
    let command = match command.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        other => {
            return Err(fail(
                ERR_INVALID_ENV,
                format!("unknown CNI_COMMAND {other}"),
                "expected ADD, DEL, CHECK or VERSION",
            ));
        }
    };
    let socket = PathBuf::from(
        config
            .get("agent_socket")
            .and_then(Value::as_str)
            .unwrap_or("/var/run/weft/cni.sock"),
    );
    let timeout = Duration::from_secs(
        config
            .get("timeout_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(60),
    );
    let args = cni_args();
    let arg = |key: &str| args.get(key).cloned().unwrap_or_default();
    let prev_result = config.get("prevResult").cloned();
    let ips: Vec<IpAddr> = prev_result
        .as_ref()
        .map(cni::prev_result_ips)
        .unwrap_or_default();

    let event = PodEvent {
        command,
        container_id: env("CNI_CONTAINERID")?,
        netns: if command == Command::Del {
            std::env::var("CNI_NETNS").unwrap_or_default()
        } else {
            env("CNI_NETNS")?
        },
        pod_namespace: arg("K8S_POD_NAMESPACE"),
        pod_name: arg("K8S_POD_NAME"),
        pod_uid: arg("K8S_POD_UID"),
        ips,
        netns_inode: None,
    };
    if command != Command::Del && (event.pod_namespace.is_empty() || event.pod_name.is_empty()) {
        return Err(fail(
            ERR_INVALID_ENV,
            "CNI_ARGS lacks K8S_POD_NAMESPACE or K8S_POD_NAME",
            arg("K8S_POD_NAME"),
        ));
    }
    if command == Command::Add && prev_result.is_none() {
        return Err(fail(
            ERR_INVALID_CONFIG,
            "no prevResult: weft-cni is a chained plugin and must follow the primary CNI plugin",
            "",
        ));
    }

    match cni::call(&socket, &event, timeout) {
        Ok(reply) if reply.ok => {}
        Ok(reply) => {
            return Err(fail(
                ERR_AGENT_REFUSED,
                format!(
                    "weft agent refused pod {}/{}",
                    event.pod_namespace, event.pod_name
                ),
                reply.error.unwrap_or_default(),
            ));
        }
        // A pod being deleted must not be stuck because the agent is down;
        // the agent reconciles its state when it comes back.
        Err(err) if command == Command::Del => {
            eprintln!(
                "weft-cni: DEL of {}/{}: {err} (ignored)",
                event.pod_namespace, event.pod_name
            );
        }
        Err(err) => {
            return Err(fail(
                ERR_TRY_AGAIN,
                "cannot set up the pod in the mesh",
                err.to_string(),
            ));
        }
    }
    match command {
        Command::Add => Ok(prev_result.map(|r| r.to_string())),
        Command::Del | Command::Check => Ok(None),
    }
}
