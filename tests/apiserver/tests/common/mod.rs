//! Shared test plumbing: a server, a kube-rs client through a kubeconfig
//! written by `write_kubeconfig`, and a bounded wait.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use weft_apiserver::{ApiServer, Options};

/// A server with default options (Istio CRDs on) and bookmarks every 200 ms.
pub async fn server() -> ApiServer {
    ApiServer::start(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await
    .expect("starting the stand-in API server")
}

fn kubeconfig_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "weft-apiserver-test-{}-{n}.kubeconfig",
        std::process::id()
    ))
}

/// A kube-rs client configured the way weft-control is: from a kubeconfig file.
pub async fn client_with_token(server: &ApiServer, token: &str) -> kube::Client {
    let path = kubeconfig_path();
    server
        .write_kubeconfig(&path, token)
        .expect("writing the kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("kube-rs reads the kubeconfig");
    std::fs::remove_file(&path).ok();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube-rs accepts the kubeconfig");
    kube::Client::try_from(config).expect("building the kube client")
}

/// A client with the admin token.
pub async fn client(server: &ApiServer) -> kube::Client {
    client_with_token(server, ApiServer::ADMIN_TOKEN).await
}

/// Polls `condition` every 20 ms for up to 15 s; panics naming `what` on timeout.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The HTTP status code of a kube-rs API error, or a panic describing what came back.
pub fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected a kube::Error::Api, got {other:?}"),
    }
}
