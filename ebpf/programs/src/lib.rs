//! weft's eBPF programs live in `main.rs` (the `weft` binary, built for
//! `bpfel-unknown-none` by the agent's build script). This library is empty:
//! it exists so that the agent can build-depend on the crate.
#![no_std]
