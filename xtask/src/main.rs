//! `cargo xtask <task>`: weft's developer tasks.
//!
//! * `setup`: install what a fresh machine lacks (idempotent).
//! * `test`: set up if needed, then format check, clippy, and every test.
//! * `demo`: set up if needed, then a simulated cluster with a request
//!   crossing the mesh.
//! * `bench`: benchmarks, weft against no mesh, side by side
//!   (`bench control-plane` for the control plane at scale).

mod bench;
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
    /// Check formatting and lints, then run every test (needs root).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
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
        Task::Test { no_lint, args } => test(no_lint, &args),
        Task::Bench { args } => bench::run(&args),
        Task::Demo { args } => demo(&args),
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

fn test(no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    }
    // Build every binary first: the end-to-end tests run the real ones.
    run(cargo().args(["build", "--bins"]))?;
    run(cargo()
        .args(["test", "--no-fail-fast"])
        .arg("--")
        .args(args))
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
