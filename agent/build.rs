//! Builds weft's eBPF programs (`ebpf/programs`) for the BPF target with
//! aya-build, so that `cargo build` builds everything. The object lands in
//! `OUT_DIR/weft` and is embedded in the agent (`redirect::loader`).
//!
//! Needs nightly with `rust-src` and `bpf-linker`: `cargo xtask setup`
//! installs both.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not baked in when it was compiled: a
    // target directory shared by two checkouts reuses the compiled script.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .join("../ebpf/programs")
        .canonicalize()
        .context("locating ebpf/programs")?;
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // The shared types are part of the programs too.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("../common").display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "weft-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .map_err(|err| {
        anyhow!(
            "building the eBPF programs failed: {err:#}\n\
             The eBPF build needs nightly with rust-src and bpf-linker; \
             `cargo xtask setup` installs them."
        )
    })
}
