//! `load`: many requests from concurrent workers on keep-alive
//! connections, one JSON summary.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::conn::{self, Answer, ClientArgs, Conn, RequestSpec, Target};

/// How many failed requests are described on stderr.
const ERRORS_SHOWN: u64 = 5;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Number of requests in all.
    #[arg(long)]
    pub count: u64,
    /// Number of concurrent workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Number of connections the workers share (`--h2 true` only);
    /// default: one per worker.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: Option<u32>,
    /// Requests per second, overall; default: as fast as they come back.
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_rate(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{arg:?} is not a rate above 0")),
    }
}

/// The line printed at the end.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub status: BTreeMap<String, u64>,
    pub served_by: BTreeMap<String, u64>,
    pub connections: u64,
    pub duration_ms: u64,
}

// === impl Summary ===

impl Summary {
    fn count(&mut self, answer: &Answer) {
        if answer.status.is_success() {
            self.ok += 1;
        }
        *self
            .status
            .entry(answer.status.as_u16().to_string())
            .or_default() += 1;
        let served_by = answer
            .headers
            .get("x-served-by")
            .map_or("-".into(), |v| String::from_utf8_lossy(v.as_bytes()));
        *self.served_by.entry(served_by.into_owned()).or_default() += 1;
    }
}

/// What the workers share.
struct Load {
    spec: RequestSpec,
    addr: String,
    count: u64,
    rate: Option<f64>,
    timeout: Duration,
    start: Instant,
    workers: u64,
    connections: AtomicU64,
    /// HTTP/2 connections the workers share; empty: one per worker.
    shared: Vec<tokio::sync::Mutex<Option<Conn>>>,
    summary: Mutex<Summary>,
}

pub async fn run(args: LoadArgs) -> Result<ExitCode> {
    let summary = measure(args).await?;
    crate::emit_json(&summary)?;
    Ok(if summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Sends the requests; what came back.
pub async fn measure(args: LoadArgs) -> Result<Summary> {
    let target = Target::parse(&args.url)?;
    let h2 = args.client.h2;
    let workers = args.concurrency;
    let shared = match args.connections {
        Some(k) if k > workers => bail!("--connections {k} is more than --concurrency {workers}"),
        Some(k) if !h2 && k != workers => bail!(
            "--connections needs --h2 true: an HTTP/1.1 connection carries one request at a \
             time, so each worker has its own"
        ),
        Some(k) if h2 => (0..k).map(|_| tokio::sync::Mutex::new(None)).collect(),
        _ => Vec::new(),
    };
    let load = Arc::new(Load {
        spec: RequestSpec::new(Method::GET, &target, &args.client.headers, Bytes::new(), h2)?,
        addr: target.addr,
        count: args.count,
        rate: args.rate,
        timeout: args.client.timeout,
        start: Instant::now(),
        workers: u64::from(workers),
        connections: AtomicU64::new(0),
        shared,
        summary: Mutex::new(Summary::default()),
    });
    let mut tasks = JoinSet::new();
    for worker in 0..workers as usize {
        tasks.spawn(load.clone().work(worker));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| anyhow!("a load worker failed: {e}"))?;
    }
    let mut summary = std::mem::take(&mut *load.summary.lock().expect("not poisoned"));
    summary.sent = load.count;
    summary.connections = load.connections.load(Ordering::Relaxed);
    summary.duration_ms = load.start.elapsed().as_millis() as u64;
    if summary.errors > ERRORS_SHOWN {
        eprintln!(
            "load: {} more failed requests",
            summary.errors - ERRORS_SHOWN
        );
    }
    Ok(summary)
}

// === impl Load ===

impl Load {
    /// Requests `worker`, `worker + C`, `worker + 2C`…: every worker gets
    /// its share, however fast the others are.
    async fn work(self: Arc<Self>, worker: usize) {
        let mut conn: Option<Conn> = None;
        for i in (worker as u64..self.count).step_by(self.workers as usize) {
            if let Some(rate) = self.rate {
                let due = self.start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let result = tokio::time::timeout(self.timeout, self.one(&mut conn, worker))
                .await
                .unwrap_or_else(|_| Err(anyhow!("no response within {:?}", self.timeout)));
            let mut summary = self.summary.lock().expect("not poisoned");
            match result {
                Ok(answer) => summary.count(&answer),
                Err(e) => {
                    conn = None;
                    summary.errors += 1;
                    if summary.errors <= ERRORS_SHOWN {
                        eprintln!("load: request {i}: {e:#}");
                    }
                }
            }
        }
    }

    /// One request, on the worker's connection (made if needed).
    async fn one(&self, conn: &mut Option<Conn>, worker: usize) -> Result<Answer> {
        let c = match conn.take().filter(|c| !c.is_closed()) {
            Some(c) => conn.insert(c),
            None => conn.insert(self.connection(worker).await?),
        };
        let answer = conn::exchange(c, self.spec.build(), 0).await?;
        if answer.close {
            *conn = None;
        }
        Ok(answer)
    }

    /// A connection for `worker`: its own, or a handle on its shared one.
    async fn connection(&self, worker: usize) -> Result<Conn> {
        if self.shared.is_empty() {
            return self.connect().await;
        }
        let mut slot = self.shared[worker % self.shared.len()].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.share().expect("shared connections are HTTP/2"));
        }
        let c = self.connect().await?;
        *slot = c.share();
        Ok(c)
    }

    async fn connect(&self) -> Result<Conn> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        conn::connect(&self.addr, self.spec.h2, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn answer(status: StatusCode, served_by: Option<&'static str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(s) = served_by {
            headers.insert("x-served-by", HeaderValue::from_static(s));
        }
        Answer {
            status,
            headers,
            body: Bytes::new(),
            close: false,
        }
    }

    #[test]
    fn summary_shape() {
        let mut s = Summary::default();
        s.count(&answer(StatusCode::OK, Some("web-1")));
        s.count(&answer(StatusCode::OK, Some("web-2")));
        s.count(&answer(StatusCode::SERVICE_UNAVAILABLE, Some("web-1")));
        s.count(&answer(StatusCode::BAD_GATEWAY, None));
        s.errors = 1;
        s.sent = 5;
        s.connections = 2;
        s.duration_ms = 12;
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"sent":5,"ok":2,"errors":1,"status":{"200":2,"502":1,"503":1},"served_by":{"-":1,"web-1":2,"web-2":1},"connections":2,"duration_ms":12}"#
        );
    }
}
