//! Kubernetes mode: the API server stand-in (`weft-apiserver`, its own
//! process, so its CPU and memory are not counted as the control
//! plane's), the loader (a child process too: the objects it holds would
//! otherwise count in the control plane's peak RSS) and one-pod changes
//! through the API.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use weft_control::yaml;

use crate::{
    Sizes,
    config::{changed_pod, pod_ip},
};

/// Requests the loader keeps in flight.
const LOAD_CONCURRENCY: usize = 64;

/// The API server stand-in, killed when dropped.
pub struct StandIn {
    child: tokio::process::Child,
    pub kubeconfig: PathBuf,
    pub url: String,
}

impl StandIn {
    /// Starts `weft-apiserver` (next to this executable) on a free port,
    /// writing its kubeconfig into `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<StandIn> {
        let exe = std::env::current_exe()?;
        let binary = exe.with_file_name("weft-apiserver");
        if !binary.exists() {
            bail!(
                "--kubernetes needs the API server stand-in at {}, which is missing: build it with \
                 `cargo build --release -p weft-apiserver` (`cargo xtask bench control-plane \
                 --kubernetes` does)",
                binary.display()
            );
        }
        let kubeconfig = dir.join("kubeconfig");
        let mut child = tokio::process::Command::new(&binary)
            .args(["--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let url = line.trim().to_string();
        if !matches!(read, Ok(Ok(n)) if n > 0) || !url.starts_with("https://") {
            let status = child.try_wait()?;
            bail!(
                "{} did not print its URL within 30 s (printed {url:?}; exit status {status:?})",
                binary.display()
            );
        }
        Ok(StandIn {
            child,
            kubeconfig,
            url,
        })
    }

    /// User + system CPU seconds the stand-in has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.id().map_or(0.0, |pid| {
            crate::cpu_seconds_of(&format!("/proc/{pid}/stat"))
        })
    }

    /// Fails if the stand-in has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the API server stand-in exited: {status}");
        }
        Ok(())
    }
}

/// A client from the stand-in's kubeconfig.
pub async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// What the loader reports on its stdout (one JSON line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub objects: usize,
    /// Reading and parsing the YAML files (not timed as API load).
    pub parse_seconds: f64,
    /// From the first create to the last response.
    pub seconds: f64,
}

/// Runs the loader in a child process: every object of `config_dir`
/// created through the API.
pub async fn load(kubeconfig: &Path, config_dir: &Path) -> anyhow::Result<Loaded> {
    let spec = format!("{}|{}", kubeconfig.display(), config_dir.display());
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--load-into", &spec])
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot start the loader process")?;
    if !output.status.success() {
        bail!("the loader process failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the loader printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The loader (child process): parses every YAML file under the config
/// directory into JSON objects and creates them, namespaces first,
/// [`LOAD_CONCURRENCY`] requests at a time.
pub async fn run_loader(spec: &str) -> anyhow::Result<()> {
    let Some((kubeconfig, dir)) = spec.split_once('|') else {
        bail!("bad --load-into");
    };
    let t = Instant::now();
    let mut objects = Vec::new();
    read_objects(Path::new(dir), &mut objects)?;
    let parse_seconds = t.elapsed().as_secs_f64();
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        objects.into_iter().partition(|o| o["kind"] == "Namespace");
    let count = namespaces.len() + rest.len();
    let client = client(Path::new(kubeconfig)).await?;
    let t = Instant::now();
    for batch in [namespaces, rest] {
        futures::stream::iter(batch)
            .map(|object| create(&client, object))
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect::<()>()
            .await?;
    }
    let loaded = Loaded {
        objects: count,
        parse_seconds,
        seconds: t.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&loaded)?);
    Ok(())
}

/// Every document of every `.yaml` file under `dir`, as JSON.
fn read_objects(dir: &Path, objects: &mut Vec<serde_json::Value>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            read_objects(&path, objects)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let documents = yaml::parse(&text, yaml::Limits::default())
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), e.mark.line))?;
        for document in documents {
            let value: serde_json::Value =
                yaml::de::from_node(&document.root, yaml::path::FieldPath::root())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            objects.push(value);
        }
    }
    Ok(())
}

/// Creates one object (POST to its collection).
async fn create(client: &Client, object: serde_json::Value) -> anyhow::Result<()> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("{kind} {}/{name}", namespace.as_deref().unwrap_or(""));
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let object: DynamicObject =
        serde_json::from_value(object).with_context(|| format!("{what} is not an object"))?;
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {what}"))?;
    Ok(())
}

/// The one-pod change of directory mode, through the API: the first pod
/// of `file` gets the IP that rewriting its file would give it (a merge
/// patch of the `/status` subresource, as the kubelet reports a pod IP).
pub async fn change_pod(
    client: &Client,
    sizes: &Sizes,
    file: usize,
    generation: usize,
) -> anyhow::Result<()> {
    let (name, namespace) = changed_pod(sizes, file);
    let pods: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod")),
    );
    let ip = pod_ip(sizes, file * crate::config::PODS_PER_FILE, generation);
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"podIP": ip}})),
    )
    .await
    .with_context(|| format!("patching the status of pod {namespace}/{name}"))?;
    Ok(())
}

/// A plain HTTP GET on the control plane's debug server: status and body.
pub async fn debug_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: not an HTTP response: {response:.80}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Lists per watched resource so far (`/debug/syncz`'s source section):
/// more than one means a relist (a 410 or a failed watch).
pub async fn lists(addr: std::net::SocketAddr) -> anyhow::Result<Vec<(String, u64)>> {
    let (status, body) = debug_get(addr, "/debug/syncz").await?;
    if status != 200 {
        bail!("/debug/syncz answered {status}");
    }
    let syncz: serde_json::Value = serde_json::from_str(&body)?;
    Ok(syncz["source"]["resources"]
        .as_array()
        .map(|resources| {
            resources
                .iter()
                .map(|r| {
                    (
                        r["resource"].as_str().unwrap_or_default().to_string(),
                        r["lists"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}
