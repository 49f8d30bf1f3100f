//! `cargo xtask <task>`: weft's developer tasks.
//!
//! * `setup`: install what a fresh machine lacks (idempotent).
//! * `test`: set up if needed, then format check, clippy, and every test.
//! * `demo`: set up if needed, then a simulated cluster with a request
//!   crossing the mesh.
//! * `bench`: benchmarks, weft against no mesh, side by side
//!   (`bench control-plane` for the control plane at scale).
//! * `fuzz`: the cargo-fuzz targets of `fuzz/`, one after the other, with
//!   a table of runs, exec/s and crashes (docs/RELIABILITY.md).
//! * `soak`: the simulated cluster under load for a long time, with an
//!   agent upgrade, a control-plane restart and a config change every
//!   minute; RSS, descriptors and CPU over time in `target/soak/`
//!   (docs/RELIABILITY.md).

mod bench;
mod fuzz;
mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and system packages weft needs.
    Setup,
    /// Check formatting and lints, run every test, then a smoke run of the
    /// benchmarks (needs root).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the benchmarks' smoke run (`cargo xtask bench --quick`).
        #[arg(long)]
        no_bench: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (needs root). `--quick` for a smoke run;
    /// `control-plane` for the control plane at scale.
    Bench {
        /// Arguments for the benchmarks.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets (`fuzz/`, nightly and cargo-fuzz) one after
    /// the other; fails when one crashes.
    Fuzz {
        /// Seconds per target (default 60 when --runs is not given).
        #[arg(long)]
        time: Option<u64>,
        /// Inputs per target instead of a time.
        #[arg(long)]
        runs: Option<u64>,
        /// `none`, or a sanitizer cargo-fuzz knows (`address`).
        #[arg(long, default_value = "none")]
        sanitizer: String,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Soak the simulated cluster (needs root): `--duration 1h` by default,
    /// with 10,000 long-lived connections; see `weft-soak --help`.
    Soak {
        /// Arguments for `weft-soak`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the demo on a simulated cluster (needs root). Ctrl-C to stop.
    Demo {
        /// Arguments for the demo.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test {
            no_lint,
            no_bench,
            args,
        } => test(no_lint, no_bench, &args),
        Task::Bench { args } => bench::run(&args),
        Task::Soak { args } => soak(&args),
        Task::Demo { args } => demo(&args),
        Task::Fuzz {
            time,
            runs,
            sanitizer,
            targets,
        } => fuzz::run_all(&fuzz::Options {
            time,
            runs,
            sanitizer,
            targets,
        }),
    }
}

/// Runs a command, failing with its description if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `weft-soak` on a release build of every binary it runs.
fn soak(args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(cargo()
        .args([
            "run",
            "--release",
            "-p",
            "weft-sim",
            "--bin",
            "weft-soak",
            "--",
        ])
        .args(args)
        .env(
            "WEFT_SOAK_COMMAND",
            std::iter::once("cargo xtask soak")
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ))
}

fn test(no_lint: bool, no_bench: bool, args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    warn_if_disk_is_short();
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    }
    // Build every binary first: the end-to-end tests run the real ones.
    run(cargo().args(["build", "--bins"]))?;
    run(cargo()
        .args(["test", "--no-fail-fast"])
        .arg("--")
        .args(args))?;
    // The benchmarks must keep working: a smoke run (it fails only when a
    // scenario cannot run, never on a figure).
    if !no_bench && args.is_empty() {
        bench::run(&["--quick".to_string()])?;
    }
    Ok(())
}

/// Free space the test build needs in `target/` (a clean build measured
/// about 6 GiB), with some room to spare.
const TEST_BUILD_BYTES: u64 = 10 << 30;

/// Says so up front when the disk holding `target/` is nearly full: the
/// compiler's own error ("No space left on device" in the middle of a
/// panic) does not make the cause obvious.
fn warn_if_disk_is_short() {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = if std::path::Path::new(&target).exists() {
        target
    } else {
        ".".into()
    };
    let Ok(path) = std::ffi::CString::new(dir.as_str()) else {
        return;
    };
    // SAFETY: `path` is a NUL-terminated string and `stat` a plain struct
    // the call fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return;
    }
    let free = stat.f_bavail * stat.f_frsize;
    if free < TEST_BUILD_BYTES {
        eprintln!(
            "warning: only {:.1} GiB free on the disk holding {dir}; the test build needs about {} GiB \
             (`cargo clean` frees the old build)",
            free as f64 / (1u64 << 30) as f64,
            TEST_BUILD_BYTES >> 30
        );
    }
}

fn demo(args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    run(cargo().args(["build", "--bins"]))?;
    run(cargo()
        .args([
            "run",
            "--quiet",
            "-p",
            "weft-sim",
            "--bin",
            "weft-demo",
            "--",
        ])
        .args(args))
}
