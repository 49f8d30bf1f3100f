//! `ws`: an HTTP/1.1 upgrade to `weft-echo`, then lines echoed over the
//! upgraded connection.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::conn::{self, Conn};
use crate::headers::{HeaderArg, parse_header, parse_secs};
use crate::serve::ECHO_PROTOCOL;

#[derive(Debug, clap::Args)]
pub struct WsArgs {
    /// `host:port`.
    pub addr: String,
    /// The line to send (no newline in it).
    #[arg(long)]
    pub message: String,
    /// How many times to send it.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Seconds allowed for the whole exchange.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
    /// A header of the upgrade request, `'Name: value'`; repeatable.
    #[arg(long = "header", value_name = "'K: V'", value_parser = parse_header)]
    pub headers: Vec<HeaderArg>,
    /// After `upgraded`, print `served-by NAME` (the 101's `x-served-by`).
    #[arg(long)]
    pub print_server: bool,
}

pub async fn run(args: WsArgs) -> Result<ExitCode> {
    if args.message.contains(['\n', '\r']) {
        bail!(
            "--message {:?}: the echo is line by line, so no line breaks",
            args.message
        );
    }
    let host = HeaderValue::from_str(&args.addr)
        .map_err(|_| anyhow!("{:?} is not host:port", args.addr))?;
    let timeout = args.timeout;
    tokio::time::timeout(timeout, echo(&args, host))
        .await
        .map_err(|_| anyhow!("ws to {}: not done within {timeout:?}", args.addr))?
        .with_context(|| format!("ws to {}", args.addr))?;
    Ok(ExitCode::SUCCESS)
}

async fn echo(args: &WsArgs, host: HeaderValue) -> Result<()> {
    let Conn::H1(mut send) = conn::connect(&args.addr, false, args.timeout).await? else {
        unreachable!("asked for HTTP/1.1");
    };
    let mut req = Request::get("/").body(Full::new(Bytes::new()))?;
    let headers = req.headers_mut();
    headers.insert(HOST, host);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(ECHO_PROTOCOL));
    for h in &args.headers {
        headers.append(h.name.clone(), h.value.clone());
    }
    send.ready().await.context("the connection closed")?;
    let response = send
        .send_request(req)
        .await
        .context("sending the upgrade")?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!(
            "answered {} instead of 101 Switching Protocols",
            response.status()
        );
    }
    let served_by = response
        .headers()
        .get("x-served-by")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("taking over the upgraded connection")?;
    crate::emit("upgraded")?;
    if args.print_server {
        crate::emit(&format!(
            "served-by {}",
            served_by.as_deref().unwrap_or("-")
        ))?;
    }
    let mut io = BufReader::new(TokioIo::new(upgraded));
    let line = format!("{}\n", args.message);
    for i in 1..=args.count {
        io.get_mut()
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("sending line {i} of {}", args.count))?;
        let mut echoed = String::new();
        io.read_line(&mut echoed)
            .await
            .with_context(|| format!("reading echo {i} of {}", args.count))?;
        if echoed != line {
            bail!(
                "echo {i} of {} was {echoed:?}, not {:?}",
                args.count,
                args.message
            );
        }
        crate::emit(&args.message)?;
    }
    io.get_mut().shutdown().await.context("closing")?;
    Ok(())
}
