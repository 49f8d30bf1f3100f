//! Watches through kube-runtime's `watcher` + reflector, and raw watch
//! streams: events, relist after compaction, recovery after dropped
//! watches and a server restart, bookmarks, timeouts and selectors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, eventually, server};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use weft_apiserver::ApiServer;

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })
}

/// A reflector over default/pods, and a log of the watcher's events.
struct Reflector {
    store: Store<Pod>,
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reflector {
    async fn start(server: &ApiServer) -> Reflector {
        let pods: Api<Pod> = Api::namespaced(client(server).await, "default");
        let (store, writer) = reflector::store();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stream = reflector::reflector(
            writer,
            watcher(pods, watcher::Config::default()).default_backoff(),
        );
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
                let line = match event {
                    Ok(watcher::Event::Init) => "init".to_string(),
                    Ok(watcher::Event::InitApply(p)) => format!("init-apply {}", name(&p)),
                    Ok(watcher::Event::InitDone) => "init-done".to_string(),
                    Ok(watcher::Event::Apply(p)) => format!("apply {}", name(&p)),
                    Ok(watcher::Event::Delete(p)) => format!("delete {}", name(&p)),
                    Err(error) => format!("error {error}"),
                };
                task_log.lock().unwrap().push(line);
            }
        });
        let reflector = Reflector { store, log, task };
        reflector.wait_init_done(1).await;
        reflector
    }

    fn count(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    async fn wait_init_done(&self, n: usize) {
        eventually(&format!("the watcher's InitDone #{n}"), || {
            self.count("init-done") >= n
        })
        .await;
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    }

    fn label(&self, name: &str) -> Option<String> {
        self.store
            .state()
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.metadata.labels.as_ref()?.get("v").cloned())
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn reflector_sees_added_modified_deleted() {
    let server = server().await;
    server.apply(pod("before", json!({"v": "0"})));
    let reflector = Reflector::start(&server).await;
    assert_eq!(reflector.names(), ["before"]);
    assert_eq!(reflector.count("init-apply before"), 1);

    let pods: Api<Pod> = Api::namespaced(client(&server).await, "default");
    let created = serde_json::from_value(pod("a", json!({"v": "1"}))).unwrap();
    pods.create(&PostParams::default(), &created).await.unwrap();
    eventually("ADDED a", || reflector.label("a").as_deref() == Some("1")).await;
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
    )
    .await
    .unwrap();
    eventually("MODIFIED a", || {
        reflector.label("a").as_deref() == Some("2")
    })
    .await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("DELETED a", || reflector.names() == ["before"]).await;
    assert_eq!(reflector.count("delete a"), 1);
    assert_eq!(
        reflector.count("init-done"),
        1,
        "no relist without a reason: {:?}",
        reflector.log.lock().unwrap()
    );
    assert_eq!(reflector.count("error"), 0);
}

#[tokio::test]
async fn compaction_makes_the_watcher_relist_and_converge() {
    let server = server().await;
    server.apply(pod("keep", json!({"v": "1"})));
    server.apply(pod("gone", json!({"v": "1"})));
    let reflector = Reflector::start(&server).await;
    let lists_before = server.request_count("list");

    server.compact();
    reflector.wait_init_done(2).await;
    let inits = reflector
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| *l == "init")
        .count();
    assert_eq!(inits, 2, "Init twice: {:?}", reflector.log.lock().unwrap());
    assert!(
        server.request_count("list") > lists_before,
        "the watcher listed again"
    );
    assert!(
        reflector
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("too old resource version")),
        "the 410 Expired surfaced as a watcher error"
    );

    // The store converges on changes made after the relist.
    server.delete("v1", "Pod", Some("default"), "gone");
    server.apply(pod("new", json!({"v": "1"})));
    eventually("store converges after relist", || {
        reflector.names() == ["keep", "new"]
    })
    .await;
}

#[tokio::test]
async fn watcher_recovers_after_drop_watches() {
    let server = server().await;
    let reflector = Reflector::start(&server).await;
    let watches_before = server.request_count("watch");
    server.drop_watches();
    server.apply(pod("after-drop", json!({"v": "1"})));
    eventually("pod created after the drop arrives", || {
        reflector.names() == ["after-drop"]
    })
    .await;
    assert!(
        server.request_count("watch") > watches_before,
        "the watcher re-watched"
    );
    assert_eq!(
        reflector.count("init-done"),
        1,
        "a dropped watch resumes without relisting"
    );
}

#[tokio::test]
async fn watcher_recovers_after_stop_and_restart() {
    let server = server().await;
    let reflector = Reflector::start(&server).await;
    let url = server.url();
    server.stop().await;
    server.apply(pod("while-down", json!({"v": "1"})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await.unwrap();
    assert_eq!(server.url(), url, "same port after restart");
    eventually("pod created while the server was down arrives", || {
        reflector.names() == ["while-down"]
    })
    .await;
    server.apply(pod("after-restart", json!({"v": "1"})));
    eventually("live events after restart", || {
        reflector.names() == ["after-restart", "while-down"]
    })
    .await;
}

/// Opens a raw watch at `query` and returns its lines as JSON values.
async fn raw_watch(server: &ApiServer, query: &str) -> impl futures::Stream<Item = Value> + use<> {
    let request = http::Request::get(format!(
        "/api/v1/namespaces/default/pods?watch=true&{query}"
    ))
    .body(Vec::new())
    .unwrap();
    let reader = client(server).await.request_stream(request).await.unwrap();
    reader
        .lines()
        .map_ok(|line| serde_json::from_str::<Value>(&line).unwrap())
        .map(|line| line.unwrap())
}

async fn next(stream: &mut (impl futures::Stream<Item = Value> + Unpin)) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10 s")
}

#[tokio::test]
async fn raw_watch_bookmarks_replay_and_timeout() {
    let server = server().await;
    let first = server.apply(pod("one", json!({"v": "1"})));
    let rv_one: u64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    server.apply(pod("two", json!({"v": "1"})));
    server.delete("v1", "Pod", Some("default"), "one");
    let current = server.resource_version();

    // From rv_one: replay two ADDED, one DELETED (with a new rv), then bookmarks at the current rv.
    let mut events = Box::pin(
        raw_watch(
            &server,
            &format!("resourceVersion={rv_one}&allowWatchBookmarks=true&timeoutSeconds=2"),
        )
        .await,
    );
    let added = next(&mut events).await.unwrap();
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("two"))
    );
    assert_eq!(added["object"]["kind"], "Pod");
    let deleted = next(&mut events).await.unwrap();
    assert_eq!(
        (
            deleted["type"].as_str(),
            deleted["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("one"))
    );
    assert_eq!(
        deleted["object"]["metadata"]["resourceVersion"],
        current.to_string()
    );
    let bookmark = next(&mut events).await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        current.to_string()
    );
    // timeoutSeconds=2 ends the stream cleanly after more bookmarks.
    while let Some(event) = next(&mut events).await {
        assert_eq!(event["type"], "BOOKMARK");
    }
}

#[tokio::test]
async fn raw_watch_from_compacted_rv_gets_in_stream_410() {
    let server = server().await;
    let old = server.apply(pod("p", json!({})));
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    server.apply(pod("q", json!({})));
    server.compact();
    let mut events = Box::pin(
        raw_watch(
            &server,
            &format!("resourceVersion={}", old_rv.parse::<u64>().unwrap() - 1),
        )
        .await,
    );
    let error = next(&mut events).await.unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version")
    );
    assert!(
        next(&mut events).await.is_none(),
        "the stream ends after the 410"
    );
}

#[tokio::test]
async fn raw_watch_without_rv_starts_with_synthetic_added_and_honours_selectors() {
    let server = server().await;
    server.apply(pod("web-1", json!({"app": "web"})));
    server.apply(pod("db-1", json!({"app": "db"})));
    let mut events = Box::pin(raw_watch(&server, "labelSelector=app%3Dweb").await);
    let added = next(&mut events).await.unwrap();
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("web-1"))
    );
    // Leaving the selector is DELETED; entering it is ADDED.
    server.apply(pod("web-1", json!({"app": "other"})));
    server.apply(pod("db-1", json!({"app": "web"})));
    let left = next(&mut events).await.unwrap();
    assert_eq!(
        (
            left["type"].as_str(),
            left["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("web-1"))
    );
    let entered = next(&mut events).await.unwrap();
    assert_eq!(
        (
            entered["type"].as_str(),
            entered["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("db-1"))
    );
}

#[tokio::test]
async fn raw_watch_reads_past_a_filtered_backlog() {
    let server = server().await;
    let start = server.resource_version();
    // More than one replay batch of events that the selector filters out.
    for i in 0..2500 {
        server.apply(pod(&format!("other-{i}"), json!({"app": "other"})));
    }
    server.apply(pod("wanted", json!({"app": "web"})));
    let mut events = Box::pin(
        raw_watch(
            &server,
            &format!("resourceVersion={start}&labelSelector=app%3Dweb"),
        )
        .await,
    );
    let added = next(&mut events).await.unwrap();
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("wanted"))
    );
}
