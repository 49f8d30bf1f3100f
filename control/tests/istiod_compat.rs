//! What a stock Istio client (ztunnel) needs from weft-control before any
//! config flows: a serving certificate valid for istiod's names (a
//! ztunnel's default address is `istiod.istio-system.svc:15012`), and a
//! node token that works as the bytes of the file it was written to (a
//! client puts the file's contents in the header verbatim).

mod common;

use common::{ControlPlane, Token, XdsSession, request};
use weft_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

#[tokio::test]
async fn the_serving_certificate_answers_to_istiods_names() {
    let cp = ControlPlane::start(&[]).await;
    for name in [
        "weft-control",
        "weft-control.istio-system.svc",
        "istiod",
        "istiod.istio-system",
        "istiod.istio-system.svc",
    ] {
        let channel = cp
            .channel_as(name)
            .await
            .unwrap_or_else(|e| panic!("TLS verifying the control plane as {name}: {e:?}"));
        let client = AggregatedDiscoveryServiceClient::with_interceptor(
            channel,
            Token::new(&cp.token("node-a")),
        );
        let mut session = XdsSession::open(client, request("node-a"))
            .await
            .unwrap_or_else(|e| panic!("xDS through {name}: {e}"));
        session.recv().await.expect("a first response");
    }
    assert!(
        cp.channel_as("istiod.other-namespace.svc").await.is_err(),
        "a name the certificate does not hold must fail verification"
    );
}

#[tokio::test]
async fn a_bootstrap_token_written_to_a_file_works_as_the_files_bytes() {
    let cp = ControlPlane::start(&[]).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-control"))
        .arg("bootstrap-token")
        .arg("--state-dir")
        .arg(cp.state_dir.path())
        .args(["--node", "node-a"])
        .output()
        .expect("running weft-control bootstrap-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = cp.state_dir.path().join("istio-token");
    std::fs::write(&file, &out.stdout).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes.ends_with(b"\n"),
        "the token is printed without a newline (a header value cannot hold one)"
    );
    let token = std::str::from_utf8(&bytes).expect("an ASCII token");
    let client =
        AggregatedDiscoveryServiceClient::with_interceptor(cp.channel().await, Token::new(token));
    let mut session = XdsSession::open(client, request("node-a"))
        .await
        .expect("the file's token is accepted");
    session.recv().await.expect("a first response");
}
