//! The monitoring/debug HTTP server (15014):
//!
//! | path | what |
//! | --- | --- |
//! | `/ready` | 200 once the config source is synced and the servers are up, else 503 |
//! | `/metrics` | Prometheus metrics (istiod's names, see [`crate::metrics`]): OpenMetrics text when `Accept` asks for it, else the classic text format |
//! | `/debug/syncz` | JSON: `source` (synced or not, per watched resource), `leader` (Kubernetes mode: this replica leads, and the lease's holder) and `agents` (each connected agent's stream: sent/acked nonces, last NACK) |
//! | `/debug/config_errors` | JSON: rejected config files (file, line, column, message) |
//! | `/debug/config` | JSON: the effective control plane config |
//! | `/debug/resources` | JSON: type URL → resource name → version of the current model |
//! | `/debug/analysis` | JSON: analysis findings of the current config |
//! | `/debug/objects` | JSON: the objects held, in the fields `weftctl diagnose` reads (`debug/objects.rs`) |

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use weft_proto::serving;

mod objects;

use crate::{
    config::Config,
    model::Model,
    source::{Snapshot, k8s::SourceStatus},
    xds::SyncRegistry,
};

/// What the debug server reads.
pub struct DebugState {
    /// The source synced and the first model built.
    pub ready: Arc<AtomicBool>,
    /// The CA loaded and the xDS server serving.
    pub ca_ready: Arc<AtomicBool>,
    pub config: Config,
    /// Whether the config source has read everything once, per resource.
    pub source: watch::Receiver<SourceStatus>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub model: watch::Receiver<Arc<Model>>,
    pub syncz: Arc<SyncRegistry>,
    pub findings: Arc<std::sync::Mutex<Vec<crate::analysis::Finding>>>,
    /// Kubernetes mode: this replica's view of the leader election.
    pub leadership: Option<watch::Receiver<crate::leader::Leadership>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl DebugState {
    /// The CA loaded, the source synced: agents are served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.ca_ready.load(Ordering::Acquire)
    }
}

/// Answers built at once, on tokio's blocking pool.
const BUILDS: usize = 2;

static BUILDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BUILDS);

/// Serves until `shutdown`. Every answer but `/ready` is built on tokio's
/// blocking pool, at most [`BUILDS`] at once: at 100,000 pods a
/// `/debug/resources` or `/debug/objects` takes long enough that, on a
/// worker, it would hold up the xDS pushes. A misbehaving client's cost is
/// bounded as on the agent's ports ([`weft_proto::serving`]).
pub async fn serve(listener: TcpListener, state: Arc<DebugState>, shutdown: CancellationToken) {
    let admission = Arc::new(serving::Admission::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "debug server accept failed");
                    continue;
                }
            },
        };
        let Some(held) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, per_peer = serving::PER_PEER, limit = serving::CONNECTIONS,
                "debug server: too many connections; closing the new one");
            continue;
        };
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _held = held;
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(state, req).await) }
            });
            // A slow reader's answer goes on as it reads (see `serving`).
            if let Err(err) = serving::limit_unsent(&stream) {
                tracing::debug!(%peer, error = %err, "operator endpoint: TCP_NOTSENT_LOWAT not set");
            }
            let stream = serving::StallLimit::new(stream, serving::WRITE_STALL);
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(serving::HEADER_READ)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "debug connection failed");
                    }
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

/// The answer to `req`: `/ready` at once, the rest off the worker.
async fn answer<B>(state: Arc<DebugState>, req: http::Request<B>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if path == "/ready" {
        return route(&state, &method, &path);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(building) = BUILDING.acquire().await else {
        unreachable!("the builds' semaphore is never closed");
    };
    // Held by the build itself: a client that goes away does not end it.
    let built = tokio::task::spawn_blocking(move || {
        let _building = building;
        if method == Method::GET && path == "/metrics" {
            metrics(&state, accept.as_deref())
        } else {
            route(&state, &method, &path)
        }
    });
    match built.await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(error = %err, "building a debug answer failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the answer failed\n",
            )
        }
    }
}

fn route(state: &DebugState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/ready" if state.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" if !state.ca_ready.load(Ordering::Acquire) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the CA is not loaded yet (Kubernetes mode: reading its Secret; see the log)\n",
        ),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the config source is not synced yet (see /debug/syncz)\n",
        ),
        "/debug/syncz" => json(&Syncz {
            source: state.source.borrow().clone(),
            leader: state.leadership.as_ref().map(|l| l.borrow().clone()),
            agents: state.syncz.list(),
        }),
        "/debug/config_errors" => json(&state.snapshot.borrow().errors),
        "/debug/config" => json(&state.config),
        "/debug/resources" => {
            let model = state.model.borrow();
            let versions: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, &str>> =
                crate::xds::SERVED_TYPES
                    .iter()
                    .filter_map(|t| Some((*t, model.of_type(t)?)))
                    .map(|(t, resources)| {
                        (
                            t,
                            resources
                                .values()
                                .map(|r| (r.name.as_str(), r.version.as_str()))
                                .collect(),
                        )
                    })
                    .collect();
            json(&versions)
        }
        "/debug/objects" => json(&objects::objects(&state.snapshot.borrow())),
        "/debug/analysis" => {
            let findings = state
                .findings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            json(&findings)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /metrics, /debug/syncz, /debug/config_errors, /debug/config, /debug/resources, /debug/analysis, /debug/objects\n",
        ),
    }
}

/// `/debug/syncz`: is the source synced, and is every agent.
#[derive(Serialize)]
struct Syncz {
    source: SourceStatus,
    /// Kubernetes mode: whether this replica leads, and who does.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<crate::leader::Leadership>,
    agents: Vec<crate::xds::StreamStatus>,
}

/// `/metrics`, in the format `accept` asks for.
fn metrics(state: &DebugState, accept: Option<&str>) -> Response<Full<Bytes>> {
    let snapshot = state.snapshot.borrow().clone();
    let (content_type, body) = state.metrics.render(accept, &snapshot);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).expect("serializable");
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
