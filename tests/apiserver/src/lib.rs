//! A Kubernetes API server stand-in for weft's tests.
//!
//! No kube-apiserver (nor envtest, kwok, k3s) can run where weft is tested,
//! so this crate serves the part of the Kubernetes API that weft uses,
//! over HTTPS on 127.0.0.1, with the real wire protocol: discovery, LIST
//! with paging and selectors, WATCH with resourceVersions, bookmarks and
//! the in-stream 410 that makes kube-runtime relist, writes with
//! optimistic concurrency, PATCH (merge, JSON, server-side apply without
//! field ownership), the `/status` subresource, CRD registration and
//! TokenReview. See README.md for what it cannot check.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_apiserver::{ApiServer, Options};
//! let server = ApiServer::start(Options::default()).await?;
//! server.write_kubeconfig("/tmp/kubeconfig".as_ref(), ApiServer::ADMIN_TOKEN)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod auth;
mod http;
mod kubeconfig;
mod meta;
mod patch;
mod registry;
mod selector;
mod server;
mod shared;
mod status;
mod store;
mod tls;

pub use auth::TokenInfo;
pub use registry::Resource;
pub use server::{ApiServer, Options};
pub use store::HISTORY_LIMIT;
