//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` one after the
//! other and sums them up in a table (target, runs, seconds, exec/s, corpus
//! size, crashes). See docs/RELIABILITY.md.
//!
//! * Needs the nightly toolchain (libFuzzer's instrumentation) and
//!   cargo-fuzz; cargo-fuzz is installed from crates.io when missing.
//! * Each target reads its committed seeds (`fuzz/corpus/<target>`, never
//!   written to) and grows its corpus in a scratch directory,
//!   `target/fuzz-corpus/<target>`, kept between runs.
//! * A crash (a panic, a timeout of [`UNIT_TIMEOUT`] seconds, running out of
//!   memory) fails the task, naming the input libFuzzer saved under
//!   `fuzz/artifacts/<target>/`; `cargo +nightly fuzz run <target> <file>`
//!   replays it.
//! * Built without a sanitizer by default (`--sanitizer none`): the code
//!   under test is safe Rust, where AddressSanitizer finds nothing more and
//!   halves the speed. Debug assertions (overflow checks) are on.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::run;

/// Seconds one input may take before libFuzzer calls it a hang.
pub const UNIT_TIMEOUT: u32 = 25;

/// What `cargo xtask fuzz` was asked for.
pub struct Options {
    /// Seconds per target (libFuzzer's `-max_total_time`).
    pub time: Option<u64>,
    /// Inputs per target (`-runs`).
    pub runs: Option<u64>,
    /// `none` or one of cargo-fuzz's sanitizers (`address`, ...).
    pub sanitizer: String,
    /// Targets to run; empty: all.
    pub targets: Vec<String>,
}

/// One target's campaign, as libFuzzer reported it.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    runs: u64,
    seconds: f64,
    /// libFuzzer's own count of seconds (`Done N runs in S second(s)`).
    fuzzer_seconds: Option<u64>,
    exec_per_sec: u64,
    corpus: usize,
    /// The saved input when it crashed.
    crash: Option<String>,
}

pub fn run_all(options: &Options) -> anyhow::Result<()> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    ensure_tools()?;
    let available = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if options.targets.is_empty() {
        available.clone()
    } else {
        for target in &options.targets {
            if !available.contains(target) {
                bail!(
                    "no fuzz target {target:?} in {}; there are: {}",
                    fuzz_dir.join("fuzz_targets").display(),
                    available.join(", ")
                );
            }
        }
        options.targets.clone()
    };
    let limit = match (options.time, options.runs) {
        (_, Some(runs)) => format!("-runs={runs}"),
        (Some(time), None) => format!("-max_total_time={time}"),
        (None, None) => "-max_total_time=60".to_string(),
    };

    // Build them all first, so that the seconds are fuzzing only.
    run(&mut nightly_cargo(
        &fuzz_dir,
        &["fuzz", "build", "--sanitizer", &options.sanitizer],
    ))?;

    let scratch = root.join("target").join("fuzz-corpus");
    let mut outcomes = Vec::new();
    for target in &chosen {
        let grown = scratch.join(target);
        std::fs::create_dir_all(&grown)
            .with_context(|| format!("cannot create the scratch corpus {}", grown.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let outcome = run_target(&fuzz_dir, target, &grown, &seeds, &limit, options)?;
        outcomes.push(outcome);
    }
    print_table(&outcomes);
    let crashed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.crash
                .as_ref()
                .map(|artifact| format!("{} ({artifact})", o.target))
        })
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {}; replay with `cargo +nightly fuzz run <target> <artifact>` in fuzz/",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly <args>` in `fuzz/`, without the variables `cargo run`
/// set for xtask itself: build scripts that watch them (ring's watches
/// `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`) would otherwise run again,
/// and rebuild half the graph, whenever a `cargo fuzz` from a shell and
/// one from here alternate.
fn nightly_cargo(fuzz_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir).arg("+nightly").args(args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// The workspace's top directory (xtask lives one below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Checks for nightly and installs cargo-fuzz when it is missing.
fn ensure_tools() -> anyhow::Result<()> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("cannot run `rustup toolchain list`: is rustup installed?")?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|line| line.starts_with("nightly"))
    {
        bail!(
            "the nightly toolchain is not installed; fuzzing needs it for libFuzzer's \
             instrumentation: rustup toolchain install nightly"
        );
    }
    let has_cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_cargo_fuzz {
        eprintln!("cargo-fuzz is not installed; installing it from crates.io");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz (`cargo install cargo-fuzz --locked`)")?;
    }
    Ok(())
}

/// The targets: `fuzz/fuzz_targets/<name>.rs`, sorted.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Runs one target, echoing libFuzzer's output, and reads its final
/// statistics.
fn run_target(
    fuzz_dir: &Path,
    target: &str,
    grown: &Path,
    seeds: &Path,
    limit: &str,
    options: &Options,
) -> anyhow::Result<Outcome> {
    eprintln!("== fuzzing {target} ({limit})");
    let mut cmd = nightly_cargo(
        fuzz_dir,
        &["fuzz", "run", "--sanitizer", &options.sanitizer, target],
    );
    cmd.arg(grown)
        .arg(seeds)
        .arg("--")
        .arg(limit)
        .arg(format!("-timeout={UNIT_TIMEOUT}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut outcome = Outcome {
        target: target.to_string(),
        ..Outcome::default()
    };
    let mut echo = std::io::stderr();
    for line in BufReader::new(stderr).lines() {
        let line = line.with_context(|| format!("reading {target}'s output"))?;
        let _ = writeln!(echo, "{line}");
        read_stat(&line, &mut outcome);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {target}'s fuzzer"))?;
    outcome.seconds = outcome
        .fuzzer_seconds
        .map_or_else(|| started.elapsed().as_secs_f64(), |s| s as f64);
    outcome.corpus = std::fs::read_dir(grown).map_or(0, |dir| dir.count());
    if !status.success() && outcome.crash.is_none() {
        outcome.crash = Some(format!(
            "the fuzzer exited with {status} and saved no input"
        ));
    }
    Ok(outcome)
}

/// Reads what a line of libFuzzer's output says into `outcome`.
fn read_stat(line: &str, outcome: &mut Outcome) {
    let stat = |name: &str| {
        line.strip_prefix(name)
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    if let Some(runs) = stat("stat::number_of_executed_units:") {
        outcome.runs = runs;
    } else if let Some(rate) = stat("stat::average_exec_per_sec:") {
        outcome.exec_per_sec = rate;
    } else if let Some(rest) = line.strip_prefix("Done ") {
        // `Done 10000000 runs in 240 second(s)`
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let Some(runs) = words.first().and_then(|n| n.parse().ok()) {
            outcome.runs = runs;
        }
        outcome.fuzzer_seconds = words.get(3).and_then(|s| s.parse().ok());
    } else if let Some(at) = line.find("Test unit written to ") {
        outcome.crash = Some(
            line[at + "Test unit written to ".len()..]
                .trim()
                .to_string(),
        );
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<16} {:>12} {:>9} {:>9} {:>8} {:>8}",
        "target", "runs", "seconds", "exec/s", "corpus", "crashes"
    );
    for o in outcomes {
        println!(
            "{:<16} {:>12} {:>9.0} {:>9} {:>8} {:>8}",
            o.target,
            o.runs,
            o.seconds,
            o.exec_per_sec,
            o.corpus,
            usize::from(o.crash.is_some())
        );
    }
    for o in outcomes {
        if let Some(crash) = &o.crash {
            println!("{}: crashed: {crash}", o.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_final_lines() {
        let mut outcome = Outcome::default();
        for line in [
            "#8388608\tpulse  cov: 2103 ft: 9000 corp: 412/60Kb exec/s: 41943 rss: 90Mb",
            "Done 10000000 runs in 240 second(s)",
            "stat::number_of_executed_units: 10000000",
            "stat::average_exec_per_sec:     41666",
            "stat::new_units_added:          977",
        ] {
            read_stat(line, &mut outcome);
        }
        assert_eq!(outcome.runs, 10_000_000);
        assert_eq!(outcome.exec_per_sec, 41_666);
        assert_eq!(outcome.fuzzer_seconds, Some(240));
        assert!(outcome.crash.is_none());
        read_stat(
            "artifact_prefix='/w/fuzz/artifacts/yaml/'; Test unit written to /w/fuzz/artifacts/yaml/crash-da39a3ee",
            &mut outcome,
        );
        assert_eq!(
            outcome.crash.as_deref(),
            Some("/w/fuzz/artifacts/yaml/crash-da39a3ee")
        );
    }
}
