//! CPU profiles of the agents during a scenario: `perf record -e cpu-clock
//! -g` (hardware counters are not available on these VMs), then the top
//! symbols and callers as text, and folded stacks for a flamegraph
//! (`inferno-flamegraph < x.folded > x.svg`, or Brendan Gregg's
//! `flamegraph.pl`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `perf record`.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
    stem: PathBuf,
}

/// What a recording produced.
#[derive(Debug)]
pub struct Profile {
    /// `perf report` text: flat top symbols, then callers of the top ones.
    pub report: PathBuf,
    /// Folded stacks, one `frame;frame;frame count` line each.
    pub folded: PathBuf,
    /// The top symbols, `(percent, symbol)`.
    pub top: Vec<(f64, String)>,
}

/// Starts recording `pids` into `<dir>/<name>.perf.data`.
pub fn record(pids: &[u32], dir: &Path, name: &str) -> Result<Recording> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = dir.join(name.replace('/', "-"));
    let data = stem.with_extension("perf.data");
    let log = File::create(stem.with_extension("perf.log"))?;
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-p"])
        .arg(pids.join(","))
        .arg("-o")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `perf record` (install linux-perf)")?;
    // perf attaches to every thread before sampling starts.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Recording { child, data, stem })
}

impl Recording {
    /// Stops recording (SIGINT, as Ctrl-C would) and writes the reports.
    pub fn finish(mut self) -> Result<Profile> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let status = self.child.wait()?;
        if !status.success() && !self.data.exists() {
            bail!(
                "perf record failed ({status}); see {}",
                self.stem.with_extension("perf.log").display()
            );
        }
        let flat = perf(
            &[
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "0.5",
                "-g",
                "none",
                "-i",
            ],
            &self.data,
        )?;
        let callers = perf(
            &[
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "--percent-limit",
                "3",
                "-g",
                "caller,2,callee,function,percent",
                "-i",
            ],
            &self.data,
        )?;
        let report = self.stem.with_extension("txt");
        std::fs::write(&report, format!("{flat}\n\n{callers}"))?;
        let script = perf(&["script", "-i"], &self.data)?;
        let folded = self.stem.with_extension("folded");
        std::fs::write(&folded, fold(&script))?;
        Ok(Profile {
            top: top_symbols(&flat, 8),
            report,
            folded,
        })
    }
}

fn perf(args: &[&str], data: &Path) -> Result<String> {
    let out = Command::new("perf")
        .args(args)
        .arg(data)
        .output()
        .context("running perf")?;
    if !out.status.success() {
        bail!(
            "perf {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `perf report --sort dso,symbol -g none` lines: `  12.34%  dso  [.] symbol`.
fn top_symbols(report: &str, n: usize) -> Vec<(f64, String)> {
    report
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (pct, rest) = l.split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            let symbol = ["[k] ", "[.] "]
                .iter()
                .find_map(|m| rest.split_once(m))
                .map_or(rest, |(_, s)| s)
                .trim();
            // perf pads the symbol to its column and may print more
            // columns after it.
            let symbol = symbol.split("  ").next().unwrap_or(symbol);
            Some((pct, symbol.to_string()))
        })
        .take(n)
        .collect()
}

/// Folds `perf script` output into `comm;outer;...;inner count` lines.
fn fold(script: &str) -> String {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut comm = String::new();
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |comm: &str, frames: &mut Vec<String>| {
        if !comm.is_empty() {
            let mut stack = comm.to_string();
            for f in frames.iter().rev() {
                stack.push(';');
                stack.push_str(f);
            }
            *counts.entry(stack).or_default() += 1;
        }
        frames.clear();
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&comm, &mut frames);
            comm.clear();
        } else if line.starts_with(char::is_whitespace) {
            // `\t  ffffffff81000000 symbol+0x10 (dso)`
            let mut parts = line.split_whitespace();
            let _addr = parts.next();
            let rest: Vec<&str> = parts.collect();
            let symbol = rest
                .iter()
                .take_while(|p| !p.starts_with('('))
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let symbol = match symbol.rsplit_once("+0x") {
                Some((s, _)) => s.to_string(),
                None => symbol,
            };
            frames.push(if symbol.is_empty() {
                "[unknown]".into()
            } else {
                symbol.replace(';', ":")
            });
        } else {
            flush(&comm, &mut frames);
            // `comm  pid/tid  time: period event:`; comm may hold spaces
            // and digits, the pid is the first all-digit word.
            let words: Vec<&str> = line.split_whitespace().collect();
            let pid_at = words
                .iter()
                .position(|w| {
                    !w.is_empty()
                        && w.split('/')
                            .all(|p| p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty())
                })
                .unwrap_or(words.len());
            comm = words[..pid_at].join("_");
        }
    }
    flush(&comm, &mut frames);
    let mut lines: Vec<String> = counts
        .into_iter()
        .map(|(s, c)| format!("{s} {c}"))
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_perf_script_stacks() {
        let script = "tokio-runtime-w 123/124 1.0: 1 cpu-clock:\n\
            \tffffffff81 copy_user+0x10 ([kernel.kallsyms])\n\
            \t55aa tcp_to_h2+0x20 (/bin/weft-agent)\n\n\
            tokio-runtime-w 125 1.1: 1 cpu-clock:\n\
            \tffffffff81 copy_user+0x18 ([kernel.kallsyms])\n\
            \t55aa tcp_to_h2+0x28 (/bin/weft-agent)\n";
        assert_eq!(fold(script), "tokio-runtime-w;tcp_to_h2;copy_user 2\n");
    }

    #[test]
    fn reads_top_symbols() {
        let report = "# Overhead  Shared Object  Symbol\n\
            # ....\n\
            \n    25.00%  [kernel.kallsyms]  [k] copy_user_generic\n\
            \x20   10.50%  weft-agent  [.] ring::aead::seal\n";
        assert_eq!(
            top_symbols(report, 5),
            vec![
                (25.0, "copy_user_generic".to_string()),
                (10.5, "ring::aead::seal".to_string())
            ]
        );
    }
}
