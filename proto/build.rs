//! Compiles `proto/**/*.proto` with protox (no system `protoc`) and
//! generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "envoy/service/discovery/v3/ads.proto",
    "weft/route/v1/route.proto",
    "weft/route/v1/destination.proto",
    "weft/telemetry/v1/access_log.proto",
    "weft/telemetry/v1/tracing.proto",
    "weft/telemetry/v1/metrics.proto",
    "envoy/service/auth/v3/external_auth.proto",
    "envoy/service/accesslog/v3/als.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    // `prost::Name` impls, so `Address::type_url()` is the xDS type URL.
    let mut config = tonic_prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        // weft's own messages encode maps in key order, so equal content
        // encodes to equal bytes (and versions).
        .btree_map([".weft"]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
