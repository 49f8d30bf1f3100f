//! `cargo xtask bench`: weft against no mesh, side by side, on the
//! simulated cluster (`weft-bench` in `tests/`; see docs/PERFORMANCE.md).
//!
//! * `cargo xtask bench [options]`: a full run, on a release build.
//! * `cargo xtask bench --quick`: a smoke run of about a minute that CI can
//!   afford; it uses the dev build `cargo xtask test` already made (add
//!   `--release` for a release build).
//! * `cargo xtask bench control-plane [args]`: the control plane at scale
//!   (`weft-control-bench`); with `--kubernetes`, against the API server
//!   stand-in `weft-apiserver`, which it builds too.
//!
//! Installs iperf3 if missing (and linux-perf for `--profile`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cargo, setup};

/// Debian packages the benchmarks run, and a file each installs.
const IPERF3: (&str, &str) = ("iperf3", "/usr/bin/iperf3");
const PERF: (&str, &str) = ("linux-perf", "/usr/bin/perf");

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("control-plane") {
        return control_plane(&args[1..]);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return crate::run(cargo().args(bench_cargo_args(false)).arg("--help"));
    }
    setup::ensure()?;
    let mut packages = vec![IPERF3];
    if args.iter().any(|a| a == "--profile") {
        packages.push(PERF);
    }
    install_missing(&packages)?;

    let quick = args.iter().any(|a| a == "--quick");
    let release = !quick || args.iter().any(|a| a == "--release");
    let passed: Vec<&String> = args.iter().filter(|a| *a != "--release").collect();
    // Every binary the cluster runs, in the profile being measured.
    let mut build = cargo();
    build.args(["build", "--bins"]);
    if release {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let mut bench = cargo();
    bench.args(bench_cargo_args(release)).args(&passed).env(
        "WEFT_BENCH_COMMAND",
        std::iter::once("cargo xtask bench")
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    );
    run_outliving_ctrl_c(&mut bench)
}

/// `cargo run [--release] -p weft-sim --bin weft-bench --`.
fn bench_cargo_args(release: bool) -> Vec<&'static str> {
    let mut args = vec!["run", "--quiet"];
    if release {
        args.push("--release");
    }
    args.extend(["-p", "weft-sim", "--bin", "weft-bench", "--"]);
    args
}

/// Runs `cmd` while ignoring Ctrl-C here: the benchmark catches it itself
/// and tears its cluster down before exiting, which this process must not
/// cut short.
fn run_outliving_ctrl_c(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("cannot run {shown}"))?;
    // SAFETY: setting signal dispositions to SIG_IGN and back to SIG_DFL.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let status = child.wait();
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    let status = status.with_context(|| format!("waiting for {shown}"))?;
    if !status.success() {
        bail!("the benchmarks failed ({status})");
    }
    Ok(())
}

/// `apt-get install` of the packages whose file is missing (says what).
fn install_missing(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask bench: installing Debian packages {} (load generators, profiler)",
        missing.join(" ")
    );
    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `weft-control-bench`, written alongside the control plane.
fn control_plane(args: &[String]) -> anyhow::Result<()> {
    let metadata = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    if !String::from_utf8_lossy(&metadata.stdout).contains("\"name\":\"weft-control-bench\"") {
        bail!(
            "`cargo xtask bench control-plane` runs the `weft-control-bench` binary of the \
             weft-control crate, which does not exist yet (it is being written with the control \
             plane's scale work)"
        );
    }
    if args.iter().any(|a| a == "--kubernetes") {
        // The benchmark starts it from next to its own executable.
        crate::run(cargo().args([
            "build",
            "--release",
            "-p",
            "weft-apiserver",
            "--bin",
            "weft-apiserver",
        ]))?;
    }
    run_outliving_ctrl_c(
        cargo()
            .args([
                "run",
                "--release",
                "-p",
                "weft-control",
                "--bin",
                "weft-control-bench",
                "--",
            ])
            .args(args),
    )
}
