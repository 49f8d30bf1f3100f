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
    /// Then one more request, `METHOD /path`, on the same connection
    /// (repeatable, sent in order after the `--count` ones).
    #[arg(long, value_name = "METHOD PATH", value_parser = parse_then)]
    pub then: Vec<(Method, http::uri::PathAndQuery)>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_then(arg: &str) -> Result<(Method, http::uri::PathAndQuery), String> {
    let (method, path) = arg
        .split_once(' ')
        .ok_or_else(|| format!("{arg:?} is not `METHOD /path`"))?;
    let path = path
        .parse()
        .map_err(|_| format!("{path:?} is not a path"))?;
    Ok((parse_method(method)?, path))
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
    /// Which connection carried it: 1 for the first one opened, 2 for the
    /// next (after the server closed one)...
    connection: u32,
}

impl Line {
    fn of(answer: &Answer, connection: u32) -> Line {
        Line {
            status: answer.status.as_u16(),
            headers: headers::to_json(&answer.headers),
            body: String::from_utf8_lossy(&answer.body).into_owned(),
            connection,
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
    let mut specs = vec![spec; args.count as usize];
    for (method, path) in args.then {
        let target = Target {
            path,
            ..target.clone()
        };
        specs.push(RequestSpec::new(
            method,
            &target,
            &args.client.headers,
            Bytes::new(),
            args.client.h2,
        )?);
    }
    let timeout = args.client.timeout;
    let (total, mut opened) = (specs.len(), 0);
    let mut conn: Option<Conn> = None;
    for (i, spec) in specs.iter().enumerate() {
        let c = match conn.take().filter(|c| !c.is_closed()) {
            Some(c) => conn.insert(c),
            None => {
                opened += 1;
                conn.insert(conn::connect(&target.addr, spec.h2, timeout).await?)
            }
        };
        let answer = tokio::time::timeout(timeout, conn::exchange(c, spec.build(), BODY_SHOWN))
            .await
            .map_err(|_| anyhow!("no response within {timeout:?}"))
            .and_then(|r| r)
            .with_context(|| format!("request {} of {total} to {}", i + 1, args.url))?;
        crate::emit_json(&Line::of(&answer, opened))?;
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
            serde_json::to_string(&Line::of(&answer, 2)).unwrap(),
            "{\"status\":503,\"headers\":{\"x-served-by\":\"web-1\"},\"body\":\"{\\\"a\\\":1}\\n\u{fffd}\",\"connection\":2}"
        );
    }
}
