//! HTTP endpoints for operators: readiness (`0.0.0.0:15021`), metrics
//! (`0.0.0.0:15020/stats/prometheus`) and the admin API
//! (`127.0.0.1:15000`: `/config`, `/config_dump`, `/stats`, `/logging` to
//! read or change the log level, `/logs` for the recent log lines, `/tcp`
//! for per-workload TCP health,
//! `POST /profile` for a CPU profile). What bounds their cost when a
//! client misbehaves (a scraper that stops reading, connections that send
//! nothing) is in [`weft_proto::serving`]; large answers are built at most
//! [`BUILDS`] at once.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use weft_proto::serving;

use crate::{Config, inpod::Enroller, state::WorkloadStore};

/// What "ready" is made of. The agent is ready when redirection is
/// attached, the workload data is synced, previous pods are restored, the
/// CNI socket accepts pods and (with `--cni-install`) weft-cni is chained
/// into the node's CNI config.
#[derive(Debug, Default)]
pub struct Readiness {
    pub redirection: AtomicBool,
    pub workloads_synced: AtomicBool,
    pub pods_restored: AtomicBool,
    pub cni_listening: AtomicBool,
    pub cni_chained: AtomicBool,
}

impl Readiness {
    /// The parts not ready yet.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (&self.redirection, "eBPF redirection"),
            (
                &self.workloads_synced,
                "workload data from the control plane",
            ),
            (&self.pods_restored, "pods of the previous run"),
            (&self.cni_listening, "CNI socket"),
            (&self.cni_chained, "weft-cni in the node's CNI config"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Acquire))
        .map(|(_, name)| name)
        .collect()
    }
}

/// What the admin endpoints read.
pub struct AdminState {
    pub config: Config,
    pub readiness: Arc<Readiness>,
    pub store: Arc<WorkloadStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub secrets: tokio::sync::OnceCell<Arc<crate::identity::SecretManager>>,
    pub enroller: tokio::sync::OnceCell<Arc<Enroller>>,
    /// Routes and destination policies (L7), once the xDS client has them.
    pub l7: tokio::sync::OnceCell<Arc<crate::l7::L7Config>>,
    /// The xDS stream is up.
    pub xds_connected: tokio::sync::OnceCell<Arc<AtomicBool>>,
    /// The eBPF programs and maps, once loaded.
    pub redirector: tokio::sync::OnceCell<Arc<crate::redirect::Redirector>>,
    /// What the span exporter did.
    pub spans: tokio::sync::OnceCell<Arc<crate::trace::export::Stats>>,
    /// The log filter and the recent lines.
    pub logging: crate::log_sink::Logging,
    /// On-demand CPU profiles (`POST /profile`).
    pub profiler: crate::profile::Profiler,
    /// Per-workload TCP health, once the programs are loaded.
    pub tcp_health: tokio::sync::OnceCell<Arc<crate::tcp_health::TcpHealth>>,
}

impl AdminState {
    /// The agent's state for a scrape.
    fn health(&self) -> crate::metrics::Health {
        let (workloads, services) = self.store.counts();
        crate::metrics::Health {
            xds_connected: self
                .xds_connected
                .get()
                .is_some_and(|c| c.load(Ordering::Relaxed)),
            workloads: workloads as u64,
            services: services as u64,
            pods_enrolled: self.enroller.get().and_then(|e| e.enrolled_count()),
            certificates: self.secrets.get().map(|s| s.expiries()).unwrap_or_default(),
            // The background count's cache: no map is walked here.
            maps: self
                .redirector
                .get()
                .map(|r| r.map_occupancy())
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.map.to_string(), m.entries, m.capacity))
                .collect(),
            spans: self.spans.get().map_or([0; 3], |s| s.snapshot()),
            programs: self.program_stats(),
            tcp: None,
            waits: self.pods_waits(),
        }
    }

    /// The enrolled pods with their labels, for their wait histograms;
    /// none when those are off.
    fn pods_waits(
        &self,
    ) -> Vec<(
        crate::metrics::waits::PodLabels,
        Arc<crate::proxy::PodContext>,
    )> {
        let Some(enroller) = self.enroller.get().filter(|_| self.metrics.waits_on()) else {
            return Vec::new();
        };
        enroller
            .local_pods()
            .into_iter()
            .map(|pod| {
                let w = &pod.workload;
                let labels = crate::metrics::waits::PodLabels {
                    pod: w.name.clone(),
                    namespace: w.namespace.clone(),
                    workload: workload_name(w).workload,
                };
                (labels, pod)
            })
            .collect()
    }

    /// Every loaded program's run statistics, by name.
    fn program_stats(&self) -> Vec<crate::redirect::ProgramStats> {
        let Some(redirector) = self.redirector.get() else {
            return Vec::new();
        };
        let mut stats = redirector.program_stats();
        // Counted only while the redirector holds the kernel's statistics on.
        if !stats.is_empty()
            && let Some(tcp) = self.tcp_health.get()
        {
            stats.extend(tcp.program_stats());
            stats.sort_by(|a, b| a.program.cmp(&b.program));
        }
        stats
    }

    /// Reads the kernel's TCP health counters: a few `bpf()` calls per
    /// entry, so call it off the async workers. `None` when it is off.
    fn tcp_totals(&self) -> Option<Vec<(crate::tcp_health::Pair, crate::tcp_health::Totals)>> {
        let tcp = self.tcp_health.get()?;
        if !tcp.active() {
            return None;
        }
        let names = Names {
            store: self.store.clone(),
            enroller: self.enroller.get().cloned(),
        };
        Some(tcp.refresh(&names))
    }
}

/// Names the ends of the kernel's TCP health entries.
struct Names {
    store: Arc<WorkloadStore>,
    enroller: Option<Arc<Enroller>>,
}

fn workload_name(workload: &crate::state::Workload) -> crate::tcp_health::WorkloadName {
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    crate::tcp_health::WorkloadName {
        workload: or_unknown(&workload.names.workload),
        namespace: or_unknown(&workload.namespace),
    }
}

impl crate::tcp_health::Resolve for Names {
    fn local(&self, netns_cookie: u64) -> Option<crate::tcp_health::WorkloadName> {
        let workload = self.enroller.as_ref()?.workload_of_netns(netns_cookie)?;
        Some(workload_name(&workload))
    }

    fn remote(&self, ip: std::net::IpAddr) -> Option<crate::tcp_health::WorkloadName> {
        self.store.workload_by_ip(ip).map(|w| workload_name(&w))
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// `/healthz/ready` only (any address).
    Readiness,
    /// `/stats/prometheus` (any address; what Prometheus scrapes).
    Metrics,
    /// Everything, the admin API included (localhost only).
    Admin,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts")
}

/// Large answers (scrapes, config dumps) built at once.
pub const BUILDS: usize = 2;

static BUILDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BUILDS);

/// An answer built on tokio's blocking pool rather than on the proxy's
/// worker thread, which would stop relaying for as long: a scrape walks
/// every series of every family (milliseconds with a few hundred series),
/// a config dump every workload of the mesh (tens of megabytes at 100,000
/// pods). There the kernel shares the CPU between the two instead.
///
/// At most [`BUILDS`] are built at once; the next waits for one.
async fn off_the_worker(
    content_type: &'static str,
    build: impl FnOnce() -> Vec<u8> + Send + 'static,
) -> Response<Full<Bytes>> {
    let Ok(building) = BUILDING.acquire().await else {
        unreachable!("the builds' semaphore is never closed");
    };
    // Held by the build itself: a client that goes away does not end it.
    let build = move || {
        let _building = building;
        build()
    };
    match tokio::task::spawn_blocking(build).await {
        Ok(body) => reply(StatusCode::OK, content_type, body),
        Err(err) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("building the answer failed: {err}\n"),
        ),
    }
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec_pretty(value).expect("JSON value serialises"),
    )
}

async fn route(
    state: Arc<AdminState>,
    endpoints: Endpoints,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let admin = endpoints == Endpoints::Admin;
    let metrics = admin || endpoints == Endpoints::Metrics;
    let response = match (admin, request.uri().path()) {
        (_, "/stats/prometheus") if metrics => {
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let openmetrics = weft_proto::exposition::wants_openmetrics(accept);
            let content_type = if openmetrics {
                weft_proto::exposition::OPENMETRICS
            } else {
                weft_proto::exposition::PROMETHEUS_TEXT
            };
            let scrape = state.clone();
            off_the_worker(content_type, move || {
                let mut health = scrape.health();
                health.tcp = scrape.tcp_totals();
                scrape.metrics.encode(health, openmetrics).into_bytes()
            })
            .await
        }
        (_, "/healthz/ready") => {
            let missing = state.readiness.missing();
            if missing.is_empty() {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: waiting for {}\n", missing.join(", ")),
                )
            }
        }
        (true, "/stats") => json(&state.metrics.to_json()),
        (true, "/tcp") => {
            let agent = state.clone();
            let totals = tokio::task::spawn_blocking(move || agent.tcp_totals()).await;
            match totals.ok().flatten() {
                Some(totals) => json(&crate::tcp_health::to_json(&totals)),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "per-workload TCP health is off on this agent (--tcp-health=false, or its program could not be attached: see the agent's log)\n",
                ),
            }
        }
        (true, "/config") => json(&serde_json::to_value(&state.config).expect("config serialises")),
        (true, "/config_dump") => {
            let pods = match state.enroller.get() {
                Some(enroller) => enroller.dump().await,
                None => serde_json::Value::Null,
            };
            let listeners = listeners(&state).await;
            let agent = state.clone();
            off_the_worker("application/json", move || {
                let dump = serde_json::json!({
                    "workloadState": agent.store.dump(),
                    "pods": pods,
                    "certificates": agent.secrets.get().map(|s| s.dump()).unwrap_or_default(),
                    "l7": agent.l7.get().map(|l7| l7.dump()).unwrap_or_default(),
                    "clusters": agent.enroller.get().map(|e| e.dump_clusters()),
                    "listeners": listeners,
                });
                serde_json::to_vec_pretty(&dump).expect("JSON value serialises")
            })
            .await
        }
        (true, "/logging") => logging(&state.logging, &request),
        // Admin listener only, like every endpoint that exposes the
        // agent's or the pods' insides: it shows their stacks.
        (true, "/profile") => profile(&state.profiler, &request).await,
        (true, "/logs") => match state.logging.recent() {
            Some(lines) => reply(StatusCode::OK, "text/plain; charset=utf-8", lines),
            None => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "this agent keeps no log lines in memory\n",
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(response)
}

/// The agent's own listeners, then the proxy's in each enrolled pod.
async fn listeners(state: &AdminState) -> serde_json::Value {
    let c = &state.config;
    let mut list = vec![
        serde_json::json!({"name": "admin", "address": c.admin_addr.to_string()}),
        serde_json::json!({"name": "metrics", "address": c.metrics_addr.to_string()}),
        serde_json::json!({"name": "readiness", "address": c.readiness_addr.to_string()}),
        serde_json::json!({"name": "CNI", "address": c.cni_socket.display().to_string()}),
    ];
    if let Some(enroller) = state.enroller.get()
        && let serde_json::Value::Array(pods) = enroller.dump_listeners().await
    {
        list.extend(pods);
    }
    serde_json::Value::Array(list)
}

/// `GET /logging`: the log level; `POST /logging?level=debug`: changes it
/// (Envoy's admin verb). A bad level is a 400 naming it.
fn logging(
    logging: &crate::log_sink::Logging,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let level = || json(&serde_json::json!({ "level": logging.level().current() }));
    match *request.method() {
        http::Method::GET => level(),
        http::Method::POST => {
            let wanted = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.strip_prefix("level="))
                .map(percent_decode);
            let Some(wanted) = wanted else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "POST /logging needs ?level=<level>, e.g. ?level=debug\n",
                );
            };
            let before = logging.level().current();
            match logging.level().set(&wanted) {
                Ok(()) => {
                    tracing::info!(from = %before, to = %wanted, "log level changed");
                    level()
                }
                Err(err) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n")),
            }
        }
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "/logging takes GET (read) or POST ?level= (change)\n",
        ),
    }
}

/// `POST /profile?pod=NS/NAME|target=agent|target=node&duration_ms=&frequency=`:
/// samples for the duration, then answers the folded stacks as JSON. A bad
/// request is refused before anything is loaded.
async fn profile(
    profiler: &crate::profile::Profiler,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != http::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "/profile takes POST ?pod=NS/NAME (or target=agent, target=node)&duration_ms=&frequency=\n",
        );
    }
    let result = match crate::profile::Request::parse(request.uri().query().unwrap_or("")) {
        Ok(wanted) => profiler.run(wanted).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(profile) => json(&serde_json::to_value(&profile).expect("profile serialises")),
        Err(err) => {
            tracing::info!(error = %err, "profile refused");
            reply(
                err.status(),
                "text/plain; charset=utf-8",
                format!("{err}\n"),
            )
        }
    }
}

/// `%XX` escapes decoded (a level's `:`, `,` and `=` may come escaped).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves HTTP/1.1 on `listener` until `stop` fires (a newer agent took
/// the node over), with the `endpoints` of that listener.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    endpoints: Endpoints,
    stop: tokio_util::sync::CancellationToken,
) {
    let admission = Arc::new(serving::Admission::default());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Some(held) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, endpoints = ?endpoints, per_peer = serving::PER_PEER, limit = serving::CONNECTIONS,
                "operator endpoint: too many connections; closing the new one");
            continue;
        };
        let (state, stop) = (state.clone(), stop.clone());
        // Ends with the listener's server: a request in flight is
        // answered, a kept-alive connection then closed.
        tokio::spawn(async move {
            let _held = held;
            let service = service_fn(move |request| route(state.clone(), endpoints, request));
            // A slow reader's answer goes on as it reads (see `serving`).
            if let Err(err) = serving::limit_unsent(&stream) {
                tracing::debug!(%peer, error = %err, "operator endpoint: TCP_NOTSENT_LOWAT not set");
            }
            let stream = serving::StallLimit::new(stream, serving::WRITE_STALL);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(serving::HEADER_READ)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    // A stalled answer, a header timeout, a client gone.
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "operator connection closed");
                    }
                    return;
                }
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
}

/// Binds an admin listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// The proxy's worker thread only waits: the answer is built elsewhere.
    #[tokio::test]
    async fn large_answers_are_built_off_the_worker() {
        let worker = std::thread::current().id();
        let response = off_the_worker("text/plain", move || {
            let builder = std::thread::current().id();
            format!("{}", builder != worker).into_bytes()
        })
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"true", "built on the worker's own thread");
    }
}
