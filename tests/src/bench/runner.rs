//! Runs scenarios: each one direct and through weft, alternating the
//! order from round to round (direct first in odd rounds, weft first in
//! even ones) so that drift on the machine hits both alike; medians of the
//! rounds are reported. Optionally profiles the agents during weft runs.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::options::Settings;
use super::profile;
use super::report::{Row, Sample};
use super::testbed::{Testbed, Variant};

/// The state of a benchmark run: settings, rows so far, failures, notes.
#[derive(Debug)]
pub struct Run {
    pub settings: Settings,
    pub rows: Vec<Row>,
    /// Scenarios that could not run, with why.
    pub failures: Vec<(String, String)>,
    /// Things a reader of the results should know (profiles, errors seen).
    pub notes: Vec<String>,
    pub profile_dir: PathBuf,
}

impl Run {
    pub fn new(settings: Settings, profile_dir: PathBuf) -> Run {
        Run {
            settings,
            rows: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
            profile_dir,
        }
    }

    /// Runs `measure` for both variants, `rounds` times, and adds a row per
    /// metric. A failure is recorded and the run goes on with the next
    /// scenario.
    pub fn paired(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        self.paired_rounds(testbed, scenario, self.settings.rounds, measure);
    }

    /// [`Run::paired`] with its own number of rounds.
    pub fn paired_rounds(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        rounds: usize,
        mut measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        if !self.settings.selected(scenario) || super::stopped() {
            return;
        }
        println!("weft-bench: {scenario}");
        let mut measured: Vec<(Variant, Sample)> = Vec::new();
        let outcome = (|| -> Result<()> {
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    [Variant::Direct, Variant::Weft]
                } else {
                    [Variant::Weft, Variant::Direct]
                };
                for variant in order {
                    let profiling = self.settings.profile && variant == Variant::Weft && round == 0;
                    let recording = match profiling {
                        true => Some(self.start_profile(testbed, scenario)?),
                        false => None,
                    };
                    let samples = measure(testbed, variant)
                        .with_context(|| format!("{variant}, round {}", round + 1))?;
                    if let Some(recording) = recording {
                        self.finish_profile(recording, scenario);
                    }
                    if !samples.is_empty() {
                        println!("    {variant:<6} {}", brief(&samples));
                    }
                    measured.extend(samples.into_iter().map(|s| (variant, s)));
                }
            }
            Ok(())
        })();
        self.rows.extend(Row::collect(scenario, &measured));
        if let Err(e) = outcome {
            self.fail(scenario, e);
        }
    }

    /// Records a scenario that could not run.
    pub fn fail(&mut self, scenario: &str, error: anyhow::Error) {
        eprintln!("weft-bench: {scenario} failed: {error:#}");
        self.failures
            .push((scenario.to_string(), format!("{error:#}")));
    }

    pub fn note(&mut self, note: String) {
        println!("    note: {note}");
        self.notes.push(note);
    }

    fn start_profile(&self, testbed: &Testbed, scenario: &str) -> Result<profile::Recording> {
        let pids: Vec<u32> = testbed.agents()?.into_iter().map(|(_, pid)| pid).collect();
        profile::record(&pids, &self.profile_dir, scenario)
    }

    fn finish_profile(&mut self, recording: profile::Recording, scenario: &str) {
        match recording.finish() {
            Ok(p) => {
                let top: Vec<String> = p
                    .top
                    .iter()
                    .take(5)
                    .map(|(pct, sym)| format!("{pct:.1}% {sym}"))
                    .collect();
                self.note(format!(
                    "profile of the agents during {scenario} (weft): {}; top: {}",
                    p.report.display(),
                    top.join(", ")
                ));
                let _ = p.folded;
            }
            Err(e) => self.note(format!("profiling {scenario} failed: {e:#}")),
        }
    }
}

/// `metric value unit, ...` for progress lines.
fn brief(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|(m, v)| format!("{} {} {}", m.name, super::report::num(Some(*v)), m.unit))
        .collect::<Vec<_>>()
        .join(", ")
}
