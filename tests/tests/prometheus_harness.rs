//! `weft_sim::prometheus` against the real Prometheus: it scrapes an
//! exposition this test serves on loopback, and answers `rate()` and
//! `histogram_quantile()` with the values the exposition implies; and the
//! dashboards' expressions in deploy/dashboards/ are all valid PromQL.
//!
//! Needs Debian's prometheus package (`cargo xtask setup`); no root, no
//! cluster.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use weft_sim::dashboards;
use weft_sim::prometheus::{Prometheus, QueryError, ScrapeJob};

/// The counter grows by this much per second.
const COUNTER_RATE: f64 = 50.0;

/// Histogram buckets `(le, observations per second)`, cumulative: 10/s at
/// most 0.1s, 30/s at most 0.5s, 40/s at most 1s, none slower.
const BUCKETS: &[(&str, f64)] = &[("0.1", 10.0), ("0.5", 30.0), ("1", 40.0), ("+Inf", 40.0)];

/// Serves a classic-text exposition whose counters grow linearly with
/// wall-clock time, until dropped.
struct Exposition {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exposition {
    fn start() -> Exposition {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        // 10 s in, so the first scrape already sees data.
                        let t = start.elapsed().as_secs_f64() + 10.0;
                        let _ = serve(stream, &exposition(t));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Exposition {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Exposition {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: std::net::TcpStream, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The request head, up to its blank line.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut stream = reader.into_inner();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

/// The exposition `t` seconds in.
fn exposition(t: f64) -> String {
    let mut out = String::new();
    out.push_str("# HELP demo_requests_total Requests handled.\n");
    out.push_str("# TYPE demo_requests_total counter\n");
    out.push_str(&format!(
        "demo_requests_total{{code=\"200\"}} {}\n",
        COUNTER_RATE * t
    ));
    out.push_str("# HELP demo_latency_seconds Request latency.\n");
    out.push_str("# TYPE demo_latency_seconds histogram\n");
    for (le, per_sec) in BUCKETS {
        out.push_str(&format!(
            "demo_latency_seconds_bucket{{le=\"{le}\"}} {}\n",
            per_sec * t
        ));
    }
    let count = BUCKETS.last().unwrap().1 * t;
    out.push_str(&format!("demo_latency_seconds_sum {}\n", 0.3 * count));
    out.push_str(&format!("demo_latency_seconds_count {count}\n"));
    out
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected.abs()
}

#[test]
fn scrapes_and_answers_rate_and_quantiles() {
    let exposition = Exposition::start();
    let target = exposition.addr.to_string();
    let prom = Prometheus::start(&[ScrapeJob::new("demo", [target.as_str()])]).unwrap();

    let targets = prom.targets().unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].health, "up");
    assert_eq!(targets[0].job, "demo");

    // Every series carries the scrape's job and instance.
    let raw = prom.query("demo_requests_total").unwrap();
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(raw[0].label("job"), Some("demo"));
    assert_eq!(raw[0].label("instance"), Some(target.as_str()));
    assert_eq!(raw[0].label("code"), Some("200"));

    // rate() needs two scrapes, and a window covering several gives a
    // steady value.
    let rate = prom
        .wait_for_query(
            "rate(demo_requests_total[5s])",
            Duration::from_secs(30),
            |s| s.len() == 1 && close(s[0].value, COUNTER_RATE, 0.05),
        )
        .unwrap();
    assert_eq!(rate[0].label("code"), Some("200"));

    // Every bucket's rate is extrapolated alike, so the quantiles are
    // exactly those of the per-second counts: p50 at rank 20 of 40 lies
    // half-way in (0.1, 0.5] (10 → 30), p90 at rank 36 at 0.6 of (0.5, 1].
    let p50 = prom
        .wait_for_query(
            "histogram_quantile(0.5, sum by (le) (rate(demo_latency_seconds_bucket[5s])))",
            Duration::from_secs(30),
            |s| s.len() == 1 && close(s[0].value, 0.3, 0.01),
        )
        .unwrap();
    assert!(close(p50[0].value, 0.3, 0.01), "{p50:?}");
    let p90 = prom
        .query_value("histogram_quantile(0.9, sum by (le) (rate(demo_latency_seconds_bucket[5s])))")
        .unwrap();
    assert!(close(p90, 0.8, 0.01), "p90 {p90}");
    let mean = prom
        .query_value(
            "sum(rate(demo_latency_seconds_sum[5s])) / sum(rate(demo_latency_seconds_count[5s]))",
        )
        .unwrap();
    assert!(close(mean, 0.3, 0.01), "mean {mean}");

    // A scalar comes back as one sample without labels.
    let scalar = prom.query("scalar(vector(2)) * 3").unwrap();
    assert_eq!(scalar.len(), 1);
    assert_eq!(scalar[0].value, 6.0);
    assert!(scalar[0].labels.is_empty());

    // Range queries: one series, a point per second, the counter rising.
    let end = SystemTime::now();
    let series = prom
        .query_range(
            "demo_requests_total",
            end - Duration::from_secs(3),
            end,
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let points = &series[0].points;
    assert_eq!(points.len(), 4, "{points:?}");
    assert!(points.windows(2).all(|w| w[1].1 >= w[0].1), "{points:?}");
    assert_eq!(
        series[0].labels,
        BTreeMap::from([
            ("__name__".to_string(), "demo_requests_total".to_string()),
            ("code".to_string(), "200".to_string()),
            ("instance".to_string(), target.clone()),
            ("job".to_string(), "demo".to_string()),
        ])
    );
}

#[test]
fn invalid_promql_names_the_query_and_the_error() {
    let prom = Prometheus::start(&[]).unwrap();
    let bad = "sum(rate(demo_requests_total[5s])";
    let err = prom.query(bad).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(bad), "{text}");
    assert!(text.contains("parse error"), "{text}");
    let query_error = err.downcast_ref::<QueryError>().expect("a QueryError");
    assert_eq!(query_error.error_type, "bad_data");
    assert!(prom.check(bad).is_err());
    assert!(prom.check("up[5m]").is_ok());
    // wait_for_query gives up at once on invalid PromQL.
    let started = Instant::now();
    assert!(
        prom.wait_for_query(bad, Duration::from_secs(20), |_| true)
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_down_target_is_reported() {
    // Nobody listens on a port just released.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let err = Prometheus::builder()
        .job(ScrapeJob::new("nobody", [target.as_str()]).metrics_path("/stats/prometheus"))
        // Prometheus applies new targets up to 5 s after it starts.
        .wait(Duration::from_secs(15))
        .start()
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("http://{target}/stats/prometheus")),
        "{text}"
    );
    assert!(text.contains("down"), "{text}");
}

#[test]
fn drop_kills_prometheus_and_removes_its_directory() {
    let prom = Prometheus::start(&[]).unwrap();
    let pid = prom.pid().unwrap();
    let dir = prom.dir().to_path_buf();
    let addr = prom.addr();
    assert!(dir.join("prometheus.yml").exists());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(prom);
    assert!(!dir.exists(), "{} left behind", dir.display());
    // Reaped, not a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Every expression of every dashboard, with its variables filled in, is
/// PromQL that Prometheus accepts and evaluates (no data needed).
#[test]
fn dashboard_expressions_are_valid_promql() {
    let prom = Prometheus::start(&[]).unwrap();
    let vars = dashboards::example_values();
    let boards = dashboards::load_all(&dashboards::default_dir()).unwrap();
    assert_eq!(boards.len(), 5);
    let mut checked = 0;
    let mut failures = Vec::new();
    for board in &boards {
        for (panel, expr) in board.expressions(&vars).unwrap() {
            checked += 1;
            if let Err(e) = prom.check(&expr) {
                failures.push(format!("{} / {panel}: {e}", board.file));
            }
        }
        for (var, query) in board.variable_queries(&vars).unwrap() {
            checked += 1;
            if let Err(e) = prom.check(&query) {
                failures.push(format!("{} / variable {var}: {e}", board.file));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 50, "only {checked} expressions");
}
