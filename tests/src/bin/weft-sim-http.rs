//! `weft-sim-http`: the HTTP/1.1, HTTP/2 and gRPC workload run inside
//! simulated pods, for the tests of weft's L7 data path. Like `weft-sim-app`
//! it knows nothing of the mesh; it reports what it saw so tests can check
//! what the mesh did. Tests parse its stdout, so every line below is exact;
//! JSON is printed compact (no spaces), keys in the order shown, and map
//! keys (`headers`, `status`, `served_by`, `resource`, `attributes`)
//! sorted. Errors go to stderr.
//!
//! # `serve --port P [--name NAME] [--fail-rate F] [--fail-status S] [--fail-while-exists PATH] [--delay-ms D] [--delay-while-exists PATH] [--verbose] [--tls-cert PEM --tls-key PEM [--client-ca PEM]] [--file URL_PATH=FILE]... [--call URL]`
//!
//! HTTP/1.1 and HTTP/2 cleartext (prior knowledge) on `0.0.0.0:P`, and the
//! gRPC service below on the same port (requests whose `content-type`
//! starts with `application/grpc`). NAME defaults to `$POD_NAME`, else the
//! host name. Prints one line when listening, then nothing (with
//! `--verbose`, one line per request, and per failed TLS handshake, on
//! stderr):
//!
//! ```text
//! serving NAME on 0.0.0.0:P
//! ```
//!
//! With `--tls-cert` (a PEM certificate chain, leaf first) and `--tls-key`
//! (its PEM private key) the port serves the same over TLS only (rustls,
//! TLS 1.2 and 1.3), offering ALPN `h2` then `http/1.1`; HTTP/2 is then
//! also spoken without ALPN if the client opens with its preface. With
//! `--client-ca` (PEM CA certificates) a client certificate is required
//! and must chain to one of them, or the handshake fails.
//!
//! A `GET` of a `--file` path is answered `200` with the file's content
//! as `application/json` (read at each request; `500` if it cannot be).
//!
//! Every other plain HTTP request (not gRPC, not an upgrade) is read whole, then
//! delayed by D ms (default 0) and then for as long as the file
//! `--delay-while-exists` exists; it then fails with status S (default 503)
//! while the file `--fail-while-exists` exists, or with probability F
//! (default 0). Otherwise the path decides:
//!
//! - `/status/<code>`: status `<code>` (200..=599), the JSON body below
//!   (empty for 204 and 304);
//! - `/echo`: 200, the request body as the body, the request's
//!   `content-type` (else `application/octet-stream`);
//! - `/bytes/<n>`: 200, n bytes `x`, `application/octet-stream`;
//! - `/drip/<ms>`: 200 at once, then a body of ten `.` spread over `ms`
//!   milliseconds (a slow body);
//! - `/call`, with `--call URL` (`http://host[:port][/path]`): the reply
//!   to an HTTP/1.1 `GET` of URL, below;
//! - anything else: 200 and the JSON body.
//!
//! Failures and errors (a bad `/status/` code: 400) carry the JSON body too.
//! Every response has `x-served-by: NAME`; the JSON body (followed by a
//! newline) is `content-type: application/json` and reads
//!
//! ```text
//! {"server":NAME,"method":"GET","path":"/a?b=c","authority":"host:port","version":"HTTP/1.1","peer":"10.1.1.2:40000","tls":false,"sni":null,"alpn":null,"client_cert":null,"headers":{"accept":"*/*",…},"body_bytes":0}
//! ```
//!
//! `path` is the path and query as received; `authority` the URI's
//! authority, else the `Host` header, else `""`; `version` `HTTP/1.0`,
//! `HTTP/1.1` or `HTTP/2`; `tls` whether the connection is TLS; `sni`
//! the server name the client sent in its TLS hello, `alpn` the protocol
//! agreed by ALPN, `client_cert` the client's certificate as
//! `SUBJECT[; SAN, SAN…]` (the subject as RFC 4514 text, e.g.
//! `CN=client, O=weft`; each subject alternative name as `DNS:name`,
//! `URI:uri`, `IP:address` or `email:address`), each `null` when absent
//! (always in cleartext); `headers` every request header (lower case),
//! values of a repeated header joined by `", "`.
//!
//! `/call` is answered by a `GET` of URL on a new HTTP/1.1 connection
//! (`Host`: URL's authority; 10 s to connect, then 10 s for the
//! response), carrying every value of the request's trace context headers
//! that are present, the ones Istio asks applications to propagate:
//! `x-request-id`, `traceparent`, `tracestate`, `x-b3-traceid`,
//! `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`, `b3`,
//! `x-ot-span-context`, `x-cloud-trace-context`, `grpc-trace-bin`,
//! `baggage` (and no other header but `host` and `user-agent:
//! weft-sim-http`). The reply has the upstream's status and, as
//! `application/json` followed by a newline (no body for 204 and 304),
//!
//! ```text
//! {"server":NAME,"upstream_status":200,"upstream":{"server":"api-1",…}}
//! ```
//!
//! `upstream` is the upstream's body (its first MiB) as JSON (object keys
//! sorted), or as a string (UTF-8, lossy) if it is not JSON. If the upstream cannot be
//! reached, or does not answer: 502 and `{"server":NAME,"error":"…"}`.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and `Upgrade: weft-echo`
//! gets `101 Switching Protocols`; the server then echoes every byte of the
//! upgraded connection until EOF.
//!
//! # gRPC service `weft.test.Echo` (served by `serve`)
//!
//! - `Unary(EchoRequest) returns (EchoReply)`: `{message, server: NAME, count: 0}`;
//! - `Chat(stream EchoRequest) returns (stream EchoReply)`: one reply per
//!   request, `count` = its index from 0; ends, with status OK, when the
//!   client's stream ends;
//! - `Fail(EchoRequest) returns (EchoReply)`: the status `code` of the
//!   request, with its `message` (or `failed as asked with code C` when
//!   empty) as the status message; code 0 replies like `Unary`.
//!
//! `EchoRequest { string message = 1; int32 code = 2; }`,
//! `EchoReply { string message = 1; string server = 2; int32 count = 3; }`.
//!
//! # `authz-server --port P [--http]`
//!
//! An Envoy ext_authz provider on `0.0.0.0:P`, for CUSTOM
//! AuthorizationPolicies: gRPC (`envoy.service.auth.v3.Authorization`), or
//! with `--http` the HTTP service API (`envoyExtAuthzHttp`). Prints
//! `serving ext_authz on 0.0.0.0:P` (`serving ext_authz over HTTP on
//! ...`), then one line per check on stderr. A request whose `x-ext-authz`
//! header is `allow` is allowed, with `x-ext-authz-check: allowed` for it
//! and `x-ext-authz-response: yes` and `x-ext-authz-seen: <JSON>` for its
//! answer; any other is denied with the status in `x-ext-authz-status`
//! (default 403), `x-ext-authz-check: denied`, `x-ext-authz-extra: 1` and
//! the body `denied by ext_authz` (gRPC) or `<JSON>` (HTTP). The JSON is
//! what the provider received: `method`, `path`, `headers` (HTTP), `body`,
//! and for gRPC `raw_body` and `partial_body`.
//!
//! # `otlp-receiver --port P`
//!
//! An OpenTelemetry OTLP/gRPC trace receiver on `0.0.0.0:P`
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, h2c).
//! Prints `otlp receiver on 0.0.0.0:P` when listening, then one line per
//! span received, in the order received, each export's lines before its
//! reply (an `ExportTraceServiceResponse` with no partial success):
//!
//! ```text
//! {"trace_id":"<32 hex>","span_id":"<16 hex>","parent_span_id":"","name":"…","kind":"SERVER","service":"web.shop","resource":{"service.name":"web.shop",…},"attributes":{"node_id":"…",…},"status":"UNSET","start_unix_nano":N,"end_unix_nano":N}
//! ```
//!
//! Ids are lower-case hex of their bytes (`""` when empty: a root span has
//! `parent_span_id` `""`); `kind` is `UNSPECIFIED`, `INTERNAL`, `SERVER`,
//! `CLIENT`, `PRODUCER` or `CONSUMER` (`UNSPECIFIED` for unknown values);
//! `service` the resource attribute `service.name` (else `""`); `status`
//! the span status code, `UNSET`, `OK` or `ERROR` (`UNSET` when absent or
//! unknown). `resource` and `attributes` map each key (the last of a
//! repeated key) to its value as a string: strings as they are, integers
//! and doubles formatted by Rust (`-3`, `0.5`, `2`), booleans `true` or
//! `false`, bytes as lower-case hex, arrays and key-value lists as compact
//! JSON of their values as strings (`["a","1"]`, `{"b":"false"}`), `""`
//! when the value is absent.
//!
//! It also serves OTLP logs (`LogsService/Export`: a line per log record,
//! starting `{"body":`) and Envoy's gRPC access-log service
//! (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`): a
//! line per entry as it comes, starting `{"als":"http"` or `{"als":"tcp"`,
//! with the stream's number, whether the entry's message carried the
//! identifier, the identifier's node id and log name, and the entry's
//! fields (`weft_sim::otlp::AlsEntry` lists them); a stream is answered
//! when the client ends it.
//!
//! # `get URL [--method M] [--header 'K: V']... [--body TEXT] [--h2 true] [--timeout SECS] [--count N] [--then 'METHOD /path']...`
//!
//! N (default 1) requests one after the other on one keep-alive connection
//! (HTTP/1.1, or HTTP/2 prior knowledge with `--h2 true`), then one request
//! per `--then` (same headers, no body), in order; a new connection only if
//! the server closed it. URL is `http://host[:port][/path]`. A
//! `--header 'Host: h'` becomes the `:authority` with `--h2 true`;
//! `--header 'K: @FILE'` takes the value from a file. One line
//! per response, `body` UTF-8 (lossy), cut to its first 64 KiB, and
//! `connection` the number of the connection that carried it (1, then 2
//! after the server closed the first...):
//!
//! ```text
//! {"status":200,"headers":{"content-type":"application/json",…},"body":"…","connection":1}
//! ```
//!
//! Exit 0 if every request got a response (whatever its status), 1 on a
//! connection or protocol error or a timeout (default 10 s per request).
//!
//! # `load URL --count N [--concurrency C] [--connections K] [--header 'K: V']... [--h2 true] [--timeout SECS] [--rate R]`
//!
//! N GET requests spread over C (default 1) concurrent workers (worker w
//! sends requests w, w+C, w+2C…), each on its own keep-alive connection,
//! reconnecting when it closes; with `--h2 true`
//! the C workers may instead share K (default C) connections, their
//! requests multiplexed as streams. `--rate R` paces the requests to R per
//! second overall. A request that fails (connect, protocol, reset, timeout)
//! counts in `errors` (the first few are printed to stderr) and its
//! connection is dropped. One line at the end:
//!
//! ```text
//! {"sent":N,"ok":n2xx,"errors":n,"status":{"200":n,"503":n},"served_by":{"NAME":n,"-":n},"connections":n,"duration_ms":D}
//! ```
//!
//! `served_by` counts the responses' `x-served-by` (`-` when absent);
//! `connections` is the number of connections opened. Exit 0 if every
//! request got a response, 2 otherwise, 1 on bad arguments.
//!
//! # `grpc-call ADDR --method unary|chat|fail [--message M] [--count N] [--code C] [--authority A] [--timeout SECS]`
//!
//! Calls `weft.test.Echo` at ADDR (`host:port`) over h2c, with `:authority`
//! A (default ADDR). `unary` and `fail` make N (default 1) calls one after
//! the other on one connection, stopping at the first error; `fail` asks
//! for code C (default 14, UNAVAILABLE). `chat` opens one stream and sends
//! N (default 3) messages M (default `hello`), each only after the reply to
//! the previous one came back, then closes its side and reads the final
//! status. One line per reply, then the final status:
//!
//! ```text
//! {"message":"hello","server":"NAME","count":0}
//! {"grpc_status":0,"grpc_message":""}
//! ```
//!
//! Exit 0 if the final status is OK, 3 if it is a gRPC error status (also
//! one a proxy gave, or tonic inferred from an HTTP error status), 1 on a
//! transport error (refused, reset, timeout; then no status line).
//!
//! # `ws ADDR --message M [--count N] [--timeout SECS]`
//!
//! An HTTP/1.1 `Upgrade: weft-echo` request to ADDR (`host:port`), then M
//! and a newline sent N (default 1) times on the upgraded connection, each
//! echo read back before the next is sent. Prints `upgraded`, then each
//! echoed line (without its newline):
//!
//! ```text
//! upgraded
//! M
//! ```
//!
//! Exit 0 if all came back, 1 otherwise (no 101, a different echo, EOF).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

// A crate root's modules live next to it; these live in weft-sim-http/.
#[path = "weft-sim-http/authz_server.rs"]
mod authz_server;
#[path = "weft-sim-http/call.rs"]
mod call;
#[path = "weft-sim-http/conn.rs"]
mod conn;
#[path = "weft-sim-http/faults.rs"]
mod faults;
#[path = "weft-sim-http/get.rs"]
mod get;
#[path = "weft-sim-http/grpc.rs"]
mod grpc;
#[path = "weft-sim-http/grpc_call.rs"]
mod grpc_call;
#[path = "weft-sim-http/grpc_server.rs"]
mod grpc_server;
#[path = "weft-sim-http/headers.rs"]
mod headers;
#[path = "weft-sim-http/load.rs"]
mod load;
#[cfg(test)]
#[path = "weft-sim-http/loopback.rs"]
mod loopback;
#[path = "weft-sim-http/otlp_receiver.rs"]
mod otlp_receiver;
#[path = "weft-sim-http/serve.rs"]
mod serve;
#[path = "weft-sim-http/tls.rs"]
mod tls;
#[path = "weft-sim-http/ws.rs"]
mod ws;

#[derive(Debug, Parser)]
#[command(
    name = "weft-sim-http",
    about = "HTTP/1.1, HTTP/2 and gRPC server and clients for weft's simulated pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP/1.1 + h2c + gRPC server.
    Serve(serve::ServeArgs),
    /// Requests on one keep-alive connection, one JSON line per response.
    Get(get::GetArgs),
    /// Many requests from concurrent workers, one JSON summary.
    Load(load::LoadArgs),
    /// Calls the weft.test.Echo gRPC service.
    GrpcCall(grpc_call::GrpcCallArgs),
    /// Echoes lines over an HTTP/1.1 upgraded connection.
    Ws(ws::WsArgs),
    /// An Envoy ext_authz provider (gRPC, or HTTP with `--http`) deciding
    /// by a request header.
    AuthzServer(authz_server::AuthzServerArgs),
    /// An OpenTelemetry OTLP/gRPC trace receiver printing each span.
    OtlpReceiver(otlp_receiver::OtlpReceiverArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Not clap's 2: `load` exits 2 when requests failed.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-sim-http: starting the tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Get(args) => get::run(args).await,
            Command::AuthzServer(args) => authz_server::run(args).await,
            Command::OtlpReceiver(args) => otlp_receiver::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::GrpcCall(args) => grpc_call::run(args).await,
            Command::Ws(args) => ws::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-sim-http: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints `line` on stdout: an error, not a panic, if stdout is gone.
fn emit(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Prints `value` as one line of compact JSON.
fn emit_json(value: &impl Serialize) -> anyhow::Result<()> {
    emit(&serde_json::to_string(value).context("serialising the output")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-sim-http").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn serve_defaults_and_options() {
        let Command::Serve(a) = parse(&["serve", "--port", "8080", "--name", "web-1"]).unwrap()
        else {
            panic!("not serve");
        };
        assert_eq!(a.port, 8080);
        assert_eq!(a.name.as_deref(), Some("web-1"));
        assert_eq!(a.fail_rate, 0.0);
        assert_eq!(a.fail_status.as_u16(), 503);
        assert!(!a.verbose);

        let Command::Serve(a) = parse(&[
            "serve",
            "--port",
            "80",
            "--fail-rate",
            "0.25",
            "--fail-status",
            "500",
            "--fail-while-exists",
            "/tmp/f",
            "--delay-ms",
            "30",
            "--delay-while-exists",
            "/tmp/d",
            "--verbose",
        ])
        .unwrap() else {
            panic!("not serve");
        };
        assert_eq!(a.fail_rate, 0.25);
        assert_eq!(a.fail_status.as_u16(), 500);
        assert_eq!(a.fail_while_exists.unwrap().to_str(), Some("/tmp/f"));
        assert_eq!(a.delay_ms, 30);
        assert_eq!(a.delay_while_exists.unwrap().to_str(), Some("/tmp/d"));
        assert!(a.verbose);
        assert!(a.tls_cert.is_none() && a.tls_key.is_none() && a.client_ca.is_none());
        assert!(a.call.is_none());

        let Command::Serve(a) = parse(&[
            "serve",
            "--port",
            "8443",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--client-ca",
            "/ca.pem",
        ])
        .unwrap() else {
            panic!("not serve");
        };
        assert_eq!(a.tls_cert.unwrap().to_str(), Some("/c.pem"));
        assert_eq!(a.tls_key.unwrap().to_str(), Some("/k.pem"));
        assert_eq!(a.client_ca.unwrap().to_str(), Some("/ca.pem"));

        let Command::Serve(a) = parse(&[
            "serve",
            "--port",
            "80",
            "--call",
            "http://api.shop.svc.cluster.local:8080/x",
        ])
        .unwrap() else {
            panic!("not serve");
        };
        let call = a.call.unwrap();
        assert_eq!(call.addr, "api.shop.svc.cluster.local:8080");
        assert_eq!(call.path, "/x");
    }

    #[test]
    fn otlp_receiver_options() {
        let Command::OtlpReceiver(a) = parse(&["otlp-receiver", "--port", "4317"]).unwrap() else {
            panic!("not otlp-receiver");
        };
        assert_eq!(a.port, 4317);
        assert!(parse(&["otlp-receiver"]).is_err());
        assert!(parse(&["otlp-receiver", "--port", "otlp"]).is_err());
    }

    #[test]
    fn serve_rejects_bad_values() {
        for bad in [
            &["serve"][..],
            &["serve", "--port", "http"],
            &["serve", "--port", "80", "--fail-rate", "1.5"],
            &["serve", "--port", "80", "--fail-rate", "NaN"],
            &["serve", "--port", "80", "--fail-status", "101"],
            &["serve", "--port", "80", "--fail-status", "600"],
            &["serve", "--port", "80", "--bogus", "1"],
            &["serve", "--port", "443", "--tls-cert", "/c.pem"],
            &["serve", "--port", "443", "--tls-key", "/k.pem"],
            &["serve", "--port", "443", "--client-ca", "/ca.pem"],
            &["serve", "--port", "80", "--call", "https://api/"],
            &["serve", "--port", "80", "--call", "api:80"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn get_and_load_options() {
        let Command::Get(a) = parse(&[
            "get",
            "http://10.96.0.1/x",
            "--method",
            "POST",
            "--header",
            "X-A: 1",
            "--header",
            "x-b:two words",
            "--body",
            "hi",
            "--h2",
            "true",
            "--timeout",
            "2.5",
            "--count",
            "3",
        ])
        .unwrap() else {
            panic!("not get");
        };
        assert_eq!(a.url, "http://10.96.0.1/x");
        assert_eq!(a.method, http::Method::POST);
        assert_eq!(a.body.as_deref(), Some("hi"));
        assert_eq!(a.count, 3);
        assert!(a.client.h2);
        assert_eq!(a.client.timeout, std::time::Duration::from_millis(2500));
        let names: Vec<_> = a.client.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        assert_eq!(a.client.headers[1].value, "two words");

        let Command::Load(a) = parse(&[
            "load",
            "http://h:8080/",
            "--count",
            "100",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--h2",
            "true",
            "--rate",
            "50",
        ])
        .unwrap() else {
            panic!("not load");
        };
        assert_eq!((a.count, a.concurrency, a.connections), (100, 4, Some(2)));
        assert_eq!(a.rate, Some(50.0));
        assert!(a.client.h2);

        for bad in [
            &["get"][..],
            &["get", "http://h/", "--header", "no-colon"],
            &["get", "http://h/", "--header", "bad name: v"],
            &["get", "http://h/", "--method", "GE T"],
            &["get", "http://h/", "--h2", "yes"],
            &["get", "http://h/", "--timeout", "0"],
            &["get", "http://h/", "--timeout", "-1"],
            &["load", "http://h/"],
            &["load", "http://h/", "--count", "1", "--concurrency", "0"],
            &["load", "http://h/", "--count", "1", "--rate", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn grpc_call_and_ws_options() {
        let Command::GrpcCall(a) =
            parse(&["grpc-call", "10.1.1.2:9090", "--method", "chat"]).unwrap()
        else {
            panic!("not grpc-call");
        };
        assert_eq!(a.addr, "10.1.1.2:9090");
        assert_eq!(a.method, grpc_call::Method::Chat);
        assert_eq!(a.count(), 3);
        assert_eq!(a.message, "hello");
        assert_eq!(a.code, 14);

        let Command::GrpcCall(a) = parse(&[
            "grpc-call",
            "h:1",
            "--method",
            "fail",
            "--code",
            "5",
            "--authority",
            "echo.demo.svc.cluster.local:9090",
        ])
        .unwrap() else {
            panic!("not grpc-call");
        };
        assert_eq!(
            (a.method, a.code, a.count()),
            (grpc_call::Method::Fail, 5, 1)
        );
        assert!(parse(&["grpc-call", "h:1", "--method", "stream"]).is_err());
        assert!(parse(&["grpc-call", "h:1"]).is_err());

        let Command::Ws(a) = parse(&["ws", "h:1", "--message", "ping", "--count", "2"]).unwrap()
        else {
            panic!("not ws");
        };
        assert_eq!(
            (a.addr.as_str(), a.message.as_str(), a.count),
            ("h:1", "ping", 2)
        );
        assert!(parse(&["ws", "h:1"]).is_err());
    }
}
