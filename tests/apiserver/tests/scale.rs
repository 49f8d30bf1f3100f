//! The store at the scale of weft's benchmark: many pods listed in pages
//! and watched by a reflector. Correctness only; the times are printed,
//! never asserted (speed is the benchmarks' business).

mod common;

use std::time::Instant;

use common::{client, eventually, server};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

const PODS: usize = 20_000;

fn pod(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("pod-{i:06}"), "namespace": format!("ns-{}", i % 10), "labels": {"app": format!("app-{}", i % 100)}},
        "spec": {"nodeName": format!("node-{}", i % 50), "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_pods_list_and_watch() {
    let server = server().await;
    let started = Instant::now();
    for i in 0..PODS {
        server.apply(pod(i));
    }
    let stored = started.elapsed();

    let pods: Api<Pod> = Api::all(client(&server).await);
    let started = Instant::now();
    let mut params = ListParams::default().limit(500);
    let mut total = 0;
    loop {
        let page = pods.list(&params).await.unwrap();
        total += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let listed = started.elapsed();
    assert_eq!(total, PODS);

    let started = Instant::now();
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(pods.clone(), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    eventually("the reflector holds every pod", || {
        store.state().len() == PODS
    })
    .await;
    let reflected = started.elapsed();

    // Creates through the API while the reflector watches.
    let started = Instant::now();
    let namespaced: Api<Pod> = Api::namespaced(client(&server).await, "ns-0");
    for i in PODS..PODS + 1000 {
        let mut object = pod(i);
        object["metadata"]["namespace"] = json!("ns-0");
        namespaced
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap();
    }
    eventually("the reflector sees the API creates", || {
        store.state().len() == PODS + 1000
    })
    .await;
    let created = started.elapsed();
    task.abort();

    eprintln!(
        "{PODS} pods: stored {stored:?}, listed in pages {listed:?}, reflected {reflected:?}; 1000 API creates watched {created:?}"
    );
}
