//! `istio_request_bytes` and `istio_response_bytes` are what crossed the
//! app's connection, head and body, as Istio's stats filter records them
//! (Envoy's wire bytes): a `GET` without a body counts its request line
//! and headers, and a response its status line and headers.

use anyhow::{Result, ensure};
use weft_sim::{Cluster, httpapp};

use super::common::*;
use super::{scrape, total};

/// `name: value\r\n`
fn field(name: &str, value: &str) -> usize {
    name.len() + 2 + value.len() + 2
}

#[test]
fn request_and_response_sizes_count_heads_and_bodies_as_sent() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (_api, vip) = shop_api(cluster)?;
        cluster.add_namespace("front", &[AMBIENT])?;
        let web = client(cluster, "node-1", "front", "web")?;
        let url = format!("http://{vip}:8080/items?page=2");
        converge("api reachable at L7", || {
            Ok(httpapp::get_one(&web, &url, &[])?.status == 200)
        })?;
        // (request bytes, response bytes, requests) summed over the
        // series of web's requests to api, as `node`'s agent reports them.
        let sums = |node: &str, reporter: &str| -> Result<[f64; 3]> {
            let with = [
                ("reporter", reporter),
                ("source_workload", "web"),
                ("destination_workload", "api"),
            ];
            Ok([
                total(&scrape(cluster, node, "istio_request_bytes_sum")?, &with),
                total(&scrape(cluster, node, "istio_response_bytes_sum")?, &with),
                total(&scrape(cluster, node, "istio_request_bytes_count")?, &with),
            ])
        };
        std::thread::sleep(LOG_SETTLE);
        let source_before = sums("node-1", "source")?;
        let destination_before = sums("node-2", "destination")?;

        // A GET without a body, then a POST with one, on one connection.
        let replies = httpapp::get(&web, &url, &["--header", "x-team: checkout"])?;
        let post = httpapp::get(&web, &url, &["--method", "POST", "--body", "hello, api"])?;
        let (get, post) = (&replies[0], &post[0]);
        ensure!(get.status == 200 && post.status == 200, "{get:?} {post:?}");
        std::thread::sleep(LOG_SETTLE);

        // What the app wrote: hyper's HTTP/1.1 client sends the request
        // line, the headers weft-sim-http sets and `host`; a POST's body
        // gets a `content-length`.
        let authority = format!("{vip}:8080");
        let get_head = "GET /items?page=2 HTTP/1.1\r\n".len()
            + field("x-team", "checkout")
            + field("user-agent", "weft-sim-http")
            + field("host", &authority)
            + 2;
        let post_head = "POST /items?page=2 HTTP/1.1\r\n".len()
            + field("user-agent", "weft-sim-http")
            + field("host", &authority)
            + field("content-length", "10")
            + 2;
        // What the app read back: the status line, the headers it printed
        // and the body.
        let response = |reply: &httpapp::Reply| {
            "HTTP/1.1 200 OK\r\n".len()
                + reply
                    .headers
                    .iter()
                    .map(|(n, v)| field(n, v))
                    .sum::<usize>()
                + 2
                + reply.body.len()
        };
        let source = sums("node-1", "source")?;
        let grew = [
            source[0] - source_before[0],
            source[1] - source_before[1],
            source[2] - source_before[2],
        ];
        let expected = [
            (get_head + post_head + "hello, api".len()) as f64,
            (response(get) + response(post)) as f64,
            2.0,
        ];
        ensure!(
            grew == expected,
            "the source's request bytes, response bytes and requests grew by {grew:?}, \
             expected {expected:?} (replies: {get:?} {post:?})"
        );

        // The destination's agent counts the request as the source's agent
        // forwarded it: the same head and body, and the headers the proxy
        // adds (`x-request-id`, `x-forwarded-proto`...).
        let destination = sums("node-2", "destination")?;
        let request_bytes = destination[0] - destination_before[0];
        ensure!(
            destination[2] - destination_before[2] == 2.0 && request_bytes > expected[0],
            "the destination's request bytes grew by {request_bytes} for {} requests, \
             more than the app's {} expected",
            destination[2] - destination_before[2],
            expected[0]
        );
        Ok(())
    })
}
