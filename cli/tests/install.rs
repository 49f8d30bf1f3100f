//! `weftctl install` and `weftctl uninstall`: the real binary against
//! weft-apiserver (the Kubernetes API stand-in, over HTTPS with a
//! kubeconfig). The test plays the controllers and kubelets: it writes the
//! Deployments' and DaemonSets' `status` while install waits.
//!
//! The objects checked are whatever `manifest::render` produces, so the
//! tests follow the manifests as they change.

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};
use weft_apiserver::{ApiServer, Options};
use weftctl::manifest::{Values, default_image, render};

/// Bound of every wait for something the binary does.
const WAIT: Duration = Duration::from_secs(30);

/// One object of the rendered manifests.
#[derive(Debug, Clone)]
struct Rendered {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    body: Value,
}

impl Rendered {
    /// `daemonset/weft-agent (istio-system)`, as weftctl prints it.
    fn line(&self) -> String {
        let label = format!("{}/{}", self.kind.to_lowercase(), self.name);
        match &self.namespace {
            Some(ns) => format!("{label} ({ns})"),
            None => label,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.kind.to_lowercase(), self.name)
    }

    fn live(&self, api: &ApiServer) -> Option<Value> {
        api.get(
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }
}

fn rendered(values: &Values) -> Vec<Rendered> {
    let yaml = render(values).unwrap();
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&yaml) {
        let body: Value = serde::Deserialize::deserialize(document).unwrap();
        if body.is_null() {
            continue;
        }
        let text = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        objects.push(Rendered {
            api_version: text("/apiVersion").unwrap(),
            kind: text("/kind").unwrap(),
            name: text("/metadata/name").unwrap(),
            namespace: text("/metadata/namespace"),
            body: body.clone(),
        });
    }
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    assert!(kinds.contains(&"Deployment"), "{kinds:?}");
    assert!(kinds.contains(&"DaemonSet"), "{kinds:?}");
    objects
}

fn of_kind<'a>(objects: &'a [Rendered], kind: &'a str) -> impl Iterator<Item = &'a Rendered> {
    objects.iter().filter(move |o| o.kind == kind)
}

struct Cluster {
    api: ApiServer,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// A cluster without Istio: the manifests' Istio CRDs get created.
async fn cluster() -> Cluster {
    cluster_with(Options {
        istio_crds: false,
        ..Options::default()
    })
    .await
}

async fn cluster_with(options: Options) -> Cluster {
    let api = ApiServer::start(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, ApiServer::ADMIN_TOKEN)
        .unwrap();
    Cluster {
        api,
        kubeconfig,
        _dir: dir,
    }
}

fn weftctl(cluster: &Cluster, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weftctl"));
    command
        .args(args)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true);
    command
}

async fn run(cluster: &Cluster, args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, weftctl(cluster, args).output())
        .await
        .expect("weftctl finishes")
        .expect("weftctl runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "weftctl succeeded:\n{}", stdout(out));
    stderr(out)
}

/// A weftctl run in the background whose stdout lines are read as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

impl Running {
    fn start(cluster: &Cluster, args: &[&str]) -> Running {
        let mut child = weftctl(cluster, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weftctl runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Running {
            child,
            lines,
            reader,
            stderr,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a line starting with `prefix`; fails if weftctl exits first.
    async fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader drain what is left before deciding.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(line) = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.starts_with(prefix))
                {
                    return line.clone();
                }
                panic!(
                    "weftctl exited ({status}) without printing `{prefix}`:\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line `{prefix}` after {WAIT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Exit status, stdout lines, stderr.
    async fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("weftctl finishes")
            .unwrap();
        self.reader.await.unwrap();
        let stderr = self.stderr.await.unwrap();
        let lines = self.lines.lock().unwrap().clone();
        (status, lines, stderr)
    }
}

/// Writes `status` into the stored object, as its controller would.
fn write_status(api: &ApiServer, object: &Rendered, status: impl FnOnce(&Value) -> Value) {
    let mut live = object.live(api).expect("the object is applied");
    live["status"] = status(&live);
    api.apply(live);
}

fn generation(live: &Value) -> Value {
    live["metadata"]["generation"].clone()
}

/// A Deployment whose every replica runs the applied spec.
fn deployment_rolled_out(live: &Value) -> Value {
    let replicas = live["spec"]["replicas"].as_i64().unwrap_or(1);
    json!({
        "observedGeneration": generation(live),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    })
}

/// A DaemonSet on 3 nodes, all updated, `available` of them available.
fn daemonset_on_three_nodes(available: i64) -> impl FnOnce(&Value) -> Value {
    move |live| {
        json!({
            "observedGeneration": generation(live),
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberReady": available,
            "numberAvailable": available,
            "numberMisscheduled": 0,
        })
    }
}

#[tokio::test]
async fn install_applies_everything_and_waits_for_the_rollout() {
    let cluster = cluster().await;
    let objects = rendered(&Values::default());
    let mut install = Running::start(&cluster, &["install"]);

    // Nothing has a status yet: install waits for every workload.
    for workload in of_kind(&objects, "Deployment").chain(of_kind(&objects, "DaemonSet")) {
        install
            .line_starting(&format!("waiting for {}: ", workload.label()))
            .await;
    }
    assert!(install.still_running(), "{}", install.output());
    let printed = install.output();
    for object in &objects {
        assert!(
            object.live(&cluster.api).is_some(),
            "{} was not applied",
            object.line()
        );
        assert!(
            printed.contains(&format!("{}: created\n", object.line())),
            "no `created` line for {}:\n{printed}",
            object.line()
        );
    }

    // The agents come up one node at a time; the control plane at once.
    for daemonset in of_kind(&objects, "DaemonSet") {
        write_status(&cluster.api, daemonset, daemonset_on_three_nodes(1));
        install
            .line_starting(&format!(
                "waiting for {}: 1 of 3 updated pods available...",
                daemonset.label()
            ))
            .await;
    }
    assert!(install.still_running(), "{}", install.output());
    for deployment in of_kind(&objects, "Deployment") {
        write_status(&cluster.api, deployment, deployment_rolled_out);
    }
    for daemonset in of_kind(&objects, "DaemonSet") {
        write_status(&cluster.api, daemonset, daemonset_on_three_nodes(3));
    }

    let (status, lines, stderr) = install.finish().await;
    let text = lines.join("\n");
    assert!(status.success(), "{status}: {stderr}\n{text}");
    for workload in of_kind(&objects, "Deployment").chain(of_kind(&objects, "DaemonSet")) {
        let rolled_out = format!("{}: rolled out", workload.line());
        assert!(lines.contains(&rolled_out), "no `{rolled_out}`:\n{text}");
        // Progress is printed when it changes, not on every poll.
        let progress = format!("waiting for {}: ", workload.label());
        let mut seen: Vec<&String> = lines.iter().filter(|l| l.starts_with(&progress)).collect();
        let before = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), before, "repeated progress lines:\n{text}");
    }
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "weft is installed in namespace istio-system: {} objects ({} created)",
            objects.len(),
            objects.len()
        )),
        "{text}"
    );
    // Not a terminal: plain lines.
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");

    // Again: nothing changes, and the rollouts are already done.
    let again = succeeded(&run(&cluster, &["install"]).await);
    for object in &objects {
        // A CRD that exists is never written again, ours included.
        let expected = match object.kind.as_str() {
            "CustomResourceDefinition" => "exists, kept",
            _ => "unchanged",
        };
        assert!(
            again.contains(&format!("{}: {expected}\n", object.line())),
            "{} is not unchanged:\n{again}",
            object.line()
        );
    }
    assert!(!again.contains("waiting for"), "{again}");
    assert!(again.contains("weft is installed"), "{again}");

    // A new image changes the workloads and nothing else.
    let image = "registry.example:5000/weft:9.9.9";
    let changed = succeeded(&run(&cluster, &["install", "--image", image, "--no-wait"]).await);
    for object in &objects {
        let uses_image = object.body.to_string().contains(&default_image());
        let expected = if uses_image {
            "configured"
        } else if object.kind == "CustomResourceDefinition" {
            "exists, kept"
        } else {
            "unchanged"
        };
        assert!(
            changed.contains(&format!("{}: {expected}\n", object.line())),
            "{} is not {expected}:\n{changed}",
            object.line()
        );
        if uses_image {
            let live = object.live(&cluster.api).unwrap().to_string();
            assert!(live.contains(image), "{live}");
        }
    }
    assert!(changed.contains("(--no-wait)"), "{changed}");
}

#[tokio::test]
async fn a_rollout_that_does_not_finish_times_out_naming_the_daemonset() {
    let cluster = cluster().await;
    let objects = rendered(&Values::default());
    let out = run(&cluster, &["install", "--timeout", "2s"]).await;
    let error = failed(&out);
    assert!(
        error.contains("timed out after 2s waiting for the rollout of"),
        "{error}"
    );
    for daemonset in of_kind(&objects, "DaemonSet") {
        assert!(
            error.contains(&format!(
                "{} (generation 1 not yet seen by its controller)",
                daemonset.label()
            )),
            "{error}"
        );
    }
    assert_eq!(error.lines().count(), 1, "{error}");
    // Everything was applied all the same.
    for object in &objects {
        assert!(object.live(&cluster.api).is_some(), "{}", object.line());
    }
}

/// Whether uninstall may delete this Namespace: the manifests mark it.
fn namespace_is_marked(namespace: &Rendered) -> bool {
    namespace.body["metadata"]["labels"]
        .as_object()
        .is_some_and(|labels| labels.keys().any(|k| k != "kubernetes.io/metadata.name"))
}

#[tokio::test]
async fn uninstall_deletes_what_install_applied() {
    let cluster = cluster().await;
    let objects = rendered(&Values::default());
    succeeded(&run(&cluster, &["install", "--no-wait"]).await);

    let out = succeeded(&run(&cluster, &["uninstall"]).await);
    for object in &objects {
        if object.kind == "CustomResourceDefinition" {
            // Istio's kinds stay: the users' configuration lives in them.
            assert!(out.contains(&format!("{}: kept (", object.line())), "{out}");
            assert!(object.live(&cluster.api).is_some(), "{}", object.line());
            continue;
        }
        if object.kind == "Namespace" && !namespace_is_marked(object) {
            assert!(out.contains(&format!("{}: kept (", object.line())), "{out}");
            assert!(object.live(&cluster.api).is_some(), "{}", object.line());
            continue;
        }
        assert!(
            out.contains(&format!("{}: deleted\n", object.line())),
            "no `deleted` line for {}:\n{out}",
            object.line()
        );
        assert!(
            object.live(&cluster.api).is_none(),
            "{} is left",
            object.line()
        );
    }
    // Reverse order: the workloads go before the ServiceAccounts they run as.
    let position = |kind: &str| {
        let object = of_kind(&objects, kind).next().unwrap();
        out.find(&format!("{}: deleted", object.line())).unwrap()
    };
    assert!(position("DaemonSet") < position("ServiceAccount"), "{out}");
    for daemonset in of_kind(&objects, "DaemonSet") {
        assert!(
            out.contains(&format!("{}: no pods left", daemonset.line())),
            "{out}"
        );
    }
    assert!(
        out.contains("weft is uninstalled from namespace istio-system"),
        "{out}"
    );

    // Again: everything is already gone, which is not an error.
    let again = succeeded(&run(&cluster, &["uninstall"]).await);
    for object in objects
        .iter()
        .filter(|o| o.kind != "Namespace" && o.kind != "CustomResourceDefinition")
    {
        assert!(
            again.contains(&format!("{}: not found\n", object.line())),
            "{again}"
        );
    }
}

#[tokio::test]
async fn uninstall_waits_for_weft_cni_to_be_removed_while_agents_run() {
    let cluster = cluster().await;
    let objects = rendered(&Values::default());
    succeeded(&run(&cluster, &["install", "--no-wait"]).await);
    let daemonset = of_kind(&objects, "DaemonSet").next().unwrap();
    let namespace = daemonset.namespace.clone().unwrap();
    let labels = daemonset.body["spec"]["selector"]["matchLabels"].clone();
    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-on-node-1", "namespace": namespace, "labels": labels},
    }));

    // An agent pod runs: nothing is deleted, and the error says what to do.
    let error = failed(&run(&cluster, &["uninstall"]).await);
    assert!(error.contains("agent-on-node-1"), "{error}");
    assert!(error.contains("weft-agent cni-uninstall"), "{error}");
    assert!(error.contains("--cni-removed"), "{error}");
    for object in &objects {
        assert!(
            object.live(&cluster.api).is_some(),
            "{} was deleted",
            object.line()
        );
    }

    // Told weft-cni is gone: it deletes, then waits for the pod to go.
    let mut uninstall = Running::start(&cluster, &["uninstall", "--cni-removed"]);
    uninstall
        .line_starting(&format!(
            "waiting for 1 pod(s) of {} to terminate: agent-on-node-1...",
            daemonset.label()
        ))
        .await;
    assert!(daemonset.live(&cluster.api).is_none());
    assert!(uninstall.still_running(), "{}", uninstall.output());
    assert!(
        cluster
            .api
            .delete("v1", "Pod", Some(&namespace), "agent-on-node-1")
    );
    let (status, lines, stderr) = uninstall.finish().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        lines.contains(&format!("{}: no pods left", daemonset.line())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_bad_token_is_a_401_naming_the_request() {
    let cluster = cluster().await;
    cluster
        .api
        .write_kubeconfig(&cluster.kubeconfig, "not-a-known-token")
        .unwrap();
    for command in ["install", "uninstall"] {
        let error = failed(&run(&cluster, &[command]).await);
        assert!(error.contains("(401 Unauthorized)"), "{error}");
        assert!(error.contains(&cluster.api.url()), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
    assert!(
        cluster
            .api
            .get("v1", "Namespace", None, "istio-system")
            .is_none(),
        "something was applied"
    );
}

#[tokio::test]
async fn a_kind_the_cluster_lacks_stops_install_before_anything_is_applied() {
    let cluster = cluster().await;
    let objects = rendered(&Values::default());
    cluster.api.remove_resource("apps", "daemonsets");
    let error = failed(&run(&cluster, &["install"]).await);
    let daemonset = of_kind(&objects, "DaemonSet").next().unwrap();
    assert!(
        error.contains(&format!(
            "{}: the API server does not serve kind DaemonSet in apps/v1",
            daemonset.label()
        )),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
    for object in objects.iter().filter(|o| o.kind != "DaemonSet") {
        assert!(
            object.live(&cluster.api).is_none(),
            "{} was applied",
            object.line()
        );
    }
}

#[tokio::test]
async fn an_unreachable_api_server_is_named() {
    let cluster = cluster().await;
    cluster.api.stop().await;
    let error = failed(&run(&cluster, &["install", "--timeout", "5s"]).await);
    assert!(
        error.contains(&format!(
            "cannot reach the API server at {}",
            cluster.api.url()
        )),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[tokio::test]
async fn another_namespace_is_installed_into_and_kube_system_is_never_deleted() {
    let cluster = cluster().await;
    let values = Values {
        namespace: "kube-system".into(),
        ..Values::default()
    };
    let objects = rendered(&values);
    let out = succeeded(
        &run(
            &cluster,
            &["install", "--namespace", "kube-system", "--no-wait"],
        )
        .await,
    );
    for object in objects.iter().filter(|o| o.kind != "Namespace") {
        assert!(object.live(&cluster.api).is_some(), "{}", object.line());
        if let Some(namespace) = &object.namespace {
            assert_eq!(namespace, "kube-system", "{}", object.line());
        }
    }
    // It existed before: applying it changes nothing.
    assert!(out.contains("namespace/kube-system: unchanged\n"), "{out}");

    let out = succeeded(&run(&cluster, &["uninstall", "--namespace", "kube-system"]).await);
    assert!(
        out.contains("namespace/kube-system: kept (every cluster has it)\n"),
        "{out}"
    );
    assert!(
        cluster
            .api
            .get("v1", "Namespace", None, "kube-system")
            .is_some()
    );
    for object in objects
        .iter()
        .filter(|o| o.kind != "Namespace" && o.kind != "CustomResourceDefinition")
    {
        assert!(
            object.live(&cluster.api).is_none(),
            "{} is left",
            object.line()
        );
    }
}

#[tokio::test]
async fn istios_own_crds_are_kept_as_they_are() {
    // A cluster with Istio: its CRDs exist (without weft's label).
    let cluster = cluster_with(Options::default()).await;
    let objects = rendered(&Values::default());
    let crds: Vec<&Rendered> = of_kind(&objects, "CustomResourceDefinition").collect();
    assert!(!crds.is_empty());
    let before: Vec<Value> = crds.iter().map(|c| c.live(&cluster.api).unwrap()).collect();

    let out = succeeded(&run(&cluster, &["install", "--no-wait"]).await);
    for (crd, before) in crds.iter().zip(&before) {
        assert!(
            out.contains(&format!("{}: exists, kept\n", crd.line())),
            "{out}"
        );
        let after = crd.live(&cluster.api).unwrap();
        assert_eq!(
            after["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"],
            "{} was written",
            crd.line()
        );
        assert!(after["metadata"]["labels"]["app.kubernetes.io/part-of"].is_null());
    }
}
