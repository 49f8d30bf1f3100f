//! `get`: requests one after the other on one keep-alive connection, a
//! JSON line per response.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::Method;
use serde::Serialize;

use crate::conn::{self, Answer, ClientArgs, Conn, RequestSpec, Target};
use crate::headers;

/// How much of each body is printed.
const BODY_SHOWN: usize = 64 * 1024;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Request method.
    #[arg(long, default_value = "GET", value_parser = parse_method)]
    pub method: Method,
    /// Request body.
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Number of requests.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_method(arg: &str) -> Result<Method, String> {
    Method::from_bytes(arg.as_bytes()).map_err(|_| format!("{arg:?} is not an HTTP method"))
}

/// The line printed per response.
#[derive(Debug, Serialize)]
struct Line {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Line {
    fn of(answer: &Answer) -> Line {
        Line {
            status: answer.status.as_u16(),
            headers: headers::to_json(&answer.headers),
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        }
    }
}

pub async fn run(args: GetArgs) -> Result<ExitCode> {
    let target = Target::parse(&args.url)?;
    let body = Bytes::from(args.body.unwrap_or_default());
    let spec = RequestSpec::new(
        args.method,
        &target,
        &args.client.headers,
        body,
        args.client.h2,
    )?;
    let timeout = args.client.timeout;
    let mut conn: Option<Conn> = None;
    for i in 1..=args.count {
        let c = match conn.take().filter(|c| !c.is_closed()) {
            Some(c) => conn.insert(c),
            None => conn.insert(conn::connect(&target.addr, spec.h2, timeout).await?),
        };
        let answer = tokio::time::timeout(timeout, conn::exchange(c, spec.build(), BODY_SHOWN))
            .await
            .map_err(|_| anyhow!("no response within {timeout:?}"))
            .and_then(|r| r)
            .with_context(|| format!("request {i} of {} to {}", args.count, args.url))?;
        crate::emit_json(&Line::of(&answer))?;
        if answer.close {
            conn = None;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    #[test]
    fn line_shape() {
        let mut headers = HeaderMap::new();
        headers.insert("x-served-by", HeaderValue::from_static("web-1"));
        let answer = Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers,
            body: Bytes::from_static(b"{\"a\":1}\n\xff"),
            close: false,
        };
        assert_eq!(
            serde_json::to_string(&Line::of(&answer)).unwrap(),
            "{\"status\":503,\"headers\":{\"x-served-by\":\"web-1\"},\"body\":\"{\\\"a\\\":1}\\n\u{fffd}\"}"
        );
    }
}
