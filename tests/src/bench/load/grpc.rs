//! `grpc`: unary calls of `weft.test.Echo/Unary` (served by `weft-sim-http
//! serve`) over h2c, `--concurrency` calls in flight spread over
//! `--connections` HTTP/2 connections, each caller sending its next call as
//! soon as the last reply is in (closed loop). The latency of each call,
//! calls per second, and the client's own CPU.
//!
//! tonic's client, as a gRPC app would use it; on a runtime of `--threads`
//! workers (1: a current-thread runtime, the cheapest per call).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::{Clock, Target, Window};
use crate::bench::stats::{LoadReport, Samples};

/// `weft.test.Echo/Unary`.
const UNARY: &str = "/weft.test.Echo/Unary";

/// `weft.test.EchoRequest { string message = 1; int32 code = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(int32, tag = "2")]
    code: i32,
}

/// `weft.test.EchoReply { string message = 1; string server = 2; int32 count = 3; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(string, tag = "2")]
    server: String,
    #[prost(int32, tag = "3")]
    count: i32,
}

#[derive(Debug, Args)]
pub struct GrpcArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Calls in flight at once, over all connections (as streams).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of the request's message (the reply echoes it).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn run(args: GrpcArgs) -> Result<()> {
    if args.connections == 0 || args.concurrency < args.connections || args.threads == 0 {
        bail!("--connections, --threads must be positive and --concurrency at least --connections");
    }
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let report = runtime.block_on(calls(&args))?;
    println!("{}", report.to_json_line());
    Ok(())
}

async fn calls(args: &GrpcArgs) -> Result<LoadReport> {
    let addr = args.target.addr;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // One `Channel` per connection: each `connect` opens its own.
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {addr} (h2c)"))?,
        );
    }
    let message = "g".repeat(args.size);
    let clock = args.window.start();
    let cpu = super::cpu_meter(clock);
    let callers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(caller(channel, message.clone(), clock))
        })
        .collect();
    let mut samples = Samples::default();
    let mut report = LoadReport {
        seconds: clock.seconds,
        ..LoadReport::default()
    };
    for caller in callers {
        let (s, errors, first_error) = caller.await.context("a gRPC caller panicked")?;
        samples.merge(s);
        report.errors += errors;
        report.first_error = report.first_error.or(first_error);
    }
    report.count = samples.len() as u64;
    report.latency = samples.summary();
    report.client_cpu = tokio::task::spawn_blocking(move || cpu.join().ok().flatten())
        .await
        .ok()
        .flatten();
    Ok(report)
}

/// Calls one after the other until the window closes: the latencies of
/// the successful ones in the window, errors, the first error.
async fn caller(channel: Channel, message: String, clock: Clock) -> (Samples, u64, Option<String>) {
    let mut client = Grpc::new(channel);
    let mut samples = Samples::with_capacity(1 << 16);
    let (mut errors, mut first_error) = (0u64, None);
    let request = EchoRequest { message, code: 0 };
    loop {
        let start = Instant::now();
        if start >= clock.until {
            break;
        }
        let outcome = match client.ready().await {
            Ok(()) => client
                .unary(
                    tonic::Request::new(request.clone()),
                    PathAndQuery::from_static(UNARY),
                    ProstCodec::<EchoRequest, EchoReply>::default(),
                )
                .await
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
                .and_then(|reply| match reply.get_ref().message.len() {
                    n if n == request.message.len() => Ok(()),
                    n => Err(format!("a reply of {n} bytes to {}", request.message.len())),
                }),
            Err(e) => Err(format!("the channel is not ready: {e}")),
        };
        match outcome {
            Ok(()) if start >= clock.from => samples.record(start.elapsed()),
            Ok(()) => {}
            Err(e) => {
                if start >= clock.from {
                    errors += 1;
                }
                first_error.get_or_insert(e);
                // Do not spin on a failing server.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
    (samples, errors, first_error)
}
