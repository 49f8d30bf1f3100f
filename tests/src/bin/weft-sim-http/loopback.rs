//! `serve` and the clients against each other on loopback, in process.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::conn::{self, RequestSpec, Target};
use crate::faults::Faults;
use crate::headers::parse_header;
use crate::serve::{self, App};
use crate::{Cli, Command};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server named `loop-1` on an ephemeral loopback port; its address.
async fn server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let faults = Faults::new(
        Duration::ZERO,
        None,
        0.0,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    let app = App::new("loop-1".into(), faults, false).unwrap();
    tokio::spawn(serve::accept(listener, Arc::new(app)));
    addr
}

/// Runs a client subcommand as the command line would.
async fn run(args: &[&str]) -> ExitCode {
    let cli = <Cli as clap::Parser>::try_parse_from(
        std::iter::once("weft-sim-http").chain(args.iter().copied()),
    )
    .unwrap();
    let result = match cli.command {
        Command::Get(a) => crate::get::run(a).await,
        Command::Load(a) => crate::load::run(a).await,
        Command::GrpcCall(a) => crate::grpc_call::run(a).await,
        Command::Ws(a) => crate::ws::run(a).await,
        Command::Serve(_) => panic!("not a client"),
    };
    result.unwrap_or_else(|e| panic!("{args:?}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2_on_one_port() {
    let addr = server().await;
    let target = Target::parse(&format!("http://{addr}/seen?q=1")).unwrap();
    for h2 in [false, true] {
        let headers = [
            parse_header("x-a: 1").unwrap(),
            parse_header("x-a: 2").unwrap(),
            parse_header("host: web.demo:80").unwrap(),
        ];
        let spec = RequestSpec::new(Method::POST, &target, &headers, "abc".into(), h2).unwrap();
        let mut c = conn::connect(&target.addr, h2, TIMEOUT).await.unwrap();
        for _ in 0..2 {
            let answer = conn::exchange(&mut c, spec.build(), 1 << 16).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.headers["x-served-by"], "loop-1");
            assert_eq!(answer.headers["content-type"], "application/json");
            let seen: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(seen["server"], "loop-1");
            assert_eq!(seen["method"], "POST");
            assert_eq!(seen["path"], "/seen?q=1");
            assert_eq!(seen["authority"], "web.demo:80");
            assert_eq!(seen["version"], if h2 { "HTTP/2" } else { "HTTP/1.1" });
            assert_eq!(seen["headers"]["x-a"], "1, 2");
            assert_eq!(seen["body_bytes"], 3);
            assert!(seen["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_paths() {
    let addr = server().await;
    for (path, status, len) in [
        ("/status/503", 503, None),
        ("/status/204", 204, Some(0)),
        ("/bytes/100000", 200, Some(100_000)),
        ("/echo", 200, Some(4)),
    ] {
        let target = Target::parse(&format!("http://{addr}{path}")).unwrap();
        let spec = RequestSpec::new(Method::PUT, &target, &[], Bytes::from("ping"), true).unwrap();
        let mut c = conn::connect(&target.addr, true, TIMEOUT).await.unwrap();
        let answer = conn::exchange(&mut c, spec.build(), 1 << 20).await.unwrap();
        assert_eq!(answer.status.as_u16(), status, "{path}");
        if let Some(len) = len {
            assert_eq!(answer.body.len(), len, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_exit_codes() {
    let addr = server().await;
    let url = format!("http://{addr}/");
    let ok = ExitCode::SUCCESS;
    assert_eq!(run(&["get", &url, "--count", "2"]).await, ok);
    assert_eq!(
        run(&["get", &format!("{url}status/500"), "--h2", "true"]).await,
        ok
    );
    assert_eq!(
        run(&["load", &url, "--count", "40", "--concurrency", "4"]).await,
        ok
    );
    assert_eq!(
        run(&[
            "load",
            &url,
            "--count",
            "40",
            "--concurrency",
            "4",
            "--connections",
            "1",
            "--h2",
            "true"
        ])
        .await,
        ok
    );
    assert_eq!(
        run(&["ws", &addr, "--message", "hi", "--count", "3"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "unary", "--count", "2"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "chat", "--count", "5"]).await,
        ok
    );
    assert_eq!(
        run(&["grpc-call", &addr, "--method", "fail", "--code", "7"]).await,
        ExitCode::from(3)
    );
}

/// `load`'s summary for `args`.
async fn load(args: &[&str]) -> crate::load::Summary {
    let cli = <Cli as clap::Parser>::try_parse_from(
        ["weft-sim-http", "load"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .unwrap();
    let Command::Load(args) = cli.command else {
        unreachable!()
    };
    crate::load::measure(args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_spreads_over_workers_and_connections() {
    let addr = server().await;
    let url = format!("http://{addr}/");
    let s = load(&[&url, "--count", "41", "--concurrency", "4"]).await;
    assert_eq!((s.sent, s.ok, s.errors, s.connections), (41, 41, 0, 4));
    assert_eq!(s.status["200"], 41);
    assert_eq!(s.served_by["loop-1"], 41);
    let s = load(&[
        &url,
        "--count",
        "40",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--h2",
        "true",
    ])
    .await;
    assert_eq!((s.ok, s.errors, s.connections), (40, 0, 2));
    let s = load(&[&url, "--count", "10", "--concurrency", "2", "--rate", "100"]).await;
    assert_eq!(s.ok, 10);
    assert!(
        s.duration_ms >= 80,
        "10 requests at 100/s took {} ms",
        s.duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_errors_not_panics() {
    // A port nobody listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let url = format!("http://{addr}/");
    assert_eq!(
        run(&["load", &url, "--count", "3"]).await,
        ExitCode::from(2)
    );
    let get = <Cli as clap::Parser>::try_parse_from(["weft-sim-http", "get", &url]).unwrap();
    let Command::Get(args) = get.command else {
        unreachable!()
    };
    let err = crate::get::run(args).await.unwrap_err();
    assert!(format!("{err:#}").contains("connecting to"), "{err:#}");
}
