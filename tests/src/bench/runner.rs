//! Runs scenarios: each one direct and through weft (and through ztunnel
//! with `--peer`; the HTTP and gRPC ones direct, through weft at L4 and
//! through weft at L7), reversing the
//! order from round to round (direct first in odd rounds, last in even
//! ones) so that drift on the machine hits all alike; medians of the
//! rounds are reported. A measurement during which other work took more
//! than a few percent of the machine is repeated (the quietest attempt is
//! kept). Optionally profiles the node proxies (weft's agents, ztunnel's
//! proxies) during the meshed runs.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::hostload::HostLoad;
use super::options::Settings;
use super::procstat::ProcStat;
use super::profile;
use super::report::{Row, Sample};
use super::testbed::{Telemetry, Testbed, Variant};

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
    /// Measures other work on the machine.
    pub hostload: Option<HostLoad>,
    /// Each agent's RSS (MiB) after each scenario.
    pub rss_trace: Vec<(String, Vec<(String, f64)>)>,
}

impl Run {
    pub fn new(settings: Settings, profile_dir: PathBuf) -> Run {
        Run {
            settings,
            rows: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
            profile_dir,
            hostload: None,
            rss_trace: Vec::new(),
        }
    }

    /// Runs `measure` for the L4 variants (direct and weft, and ztunnel
    /// with `--peer`), `rounds` times, and adds a row per metric. A failure is recorded and the run goes on with the next
    /// scenario.
    pub fn paired(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        let variants = testbed.l4_variants();
        self.every_round(testbed, scenario, &variants, measure);
    }

    /// Like [`Run::paired`] for the three paths of the HTTP and gRPC
    /// scenarios: direct, weft L4 ([`Variant::Weft`]) and weft L7.
    pub fn three_paths(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        self.every_round(
            testbed,
            scenario,
            &[Variant::Direct, Variant::Weft, Variant::WeftL7],
            measure,
        );
    }

    /// Like [`Run::paired`] for the L7 authorization scenario: weft L7
    /// ([`Variant::WeftL7`]) and the same path to a workload with a policy
    /// ([`Variant::WeftL7Authz`]).
    pub fn authz_pair(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        self.every_round(
            testbed,
            scenario,
            &[Variant::WeftL7, Variant::WeftL7Authz],
            measure,
        );
    }

    /// Like [`Run::paired`] for the metrics scenarios: weft with the
    /// agents' traffic metrics on (their default) and off, over L4
    /// ([`Variant::Weft`], [`Variant::WeftMetricsOff`]) or L7
    /// ([`Variant::WeftL7`], [`Variant::WeftL7MetricsOff`]). Before each
    /// measurement (and before a profile starts, so that it follows the
    /// new agents) the agents restart with `telemetry` on or off as the
    /// variant says.
    pub fn metrics_pair(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        l7: bool,
        telemetry: Telemetry,
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        let variants = match l7 {
            true => [Variant::WeftL7, Variant::WeftL7MetricsOff],
            false => [Variant::Weft, Variant::WeftMetricsOff],
        };
        let rounds = self.settings.rounds;
        self.rounds(
            testbed,
            scenario,
            &variants,
            Repeat::Rounds(rounds),
            Some(telemetry),
            measure,
        );
    }

    /// `measure` for `variants`, the run's number of rounds.
    fn every_round(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        variants: &[Variant],
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        let rounds = self.settings.rounds;
        self.rounds(
            testbed,
            scenario,
            variants,
            Repeat::Rounds(rounds),
            None,
            measure,
        );
    }

    /// One round of the variants given, in that order, never repeated: for
    /// measurements that change the agents' state (memory they keep),
    /// which a second attempt would not see anew.
    pub fn once_with(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        variants: &[Variant],
        measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        self.rounds(testbed, scenario, variants, Repeat::Once, None, measure);
    }

    /// `measure` for `variants` as `repeat` says, the agents restarted
    /// first with `restart`'s telemetry on or off as each variant says.
    fn rounds(
        &mut self,
        testbed: &Testbed,
        scenario: &str,
        variants: &[Variant],
        repeat: Repeat,
        restart: Option<Telemetry>,
        mut measure: impl FnMut(&Testbed, Variant) -> Result<Vec<Sample>>,
    ) {
        if !self.settings.selected(scenario) || super::stopped() {
            return;
        }
        println!("weft-bench: {scenario}");
        let three_paths = variants.contains(&Variant::WeftL7);
        let name = |variant: Variant| match three_paths {
            true => variant.path_name().to_string(),
            false => variant.to_string(),
        };
        // A profile per path when several go through weft; ztunnel's
        // always has its own name, weft's keeps the scenario's.
        let per_path = variants
            .iter()
            .filter(|v| v.meshed() && **v != Variant::Ztunnel)
            .count()
            > 1;
        let mut measured: Vec<(Variant, Sample)> = Vec::new();
        let mut busiest = 0.0f64;
        let outcome = (|| -> Result<()> {
            let rounds = match repeat {
                Repeat::Rounds(rounds) => rounds,
                Repeat::Once => 1,
            };
            for round in 0..rounds {
                let mut order = variants.to_vec();
                if round % 2 == 1 {
                    order.reverse();
                }
                for variant in order {
                    if super::stopped() {
                        anyhow::bail!("interrupted");
                    }
                    let profiling = self.settings.profile && variant.meshed() && round == 0;
                    let profile_name = match per_path || variant == Variant::Ztunnel {
                        true => format!("{scenario}/{}", name(variant)),
                        false => scenario.to_string(),
                    };
                    let retries = match repeat {
                        Repeat::Rounds(_) if !profiling => self.settings.busy_retries,
                        _ => 0,
                    };
                    let mut recording = None;
                    let (samples, busy) = self
                        .quietest(retries, || {
                            if let Some(telemetry) = restart {
                                testbed.restart_agents_with(telemetry, variant.telemetry_on())?;
                            }
                            if profiling && recording.is_none() {
                                recording =
                                    Some(self.start_profile(testbed, variant, &profile_name)?);
                            }
                            measure(testbed, variant)
                        })
                        .with_context(|| format!("{}, round {}", name(variant), round + 1))?;
                    if let Some(recording) = recording {
                        self.finish_profile(recording, &profile_name);
                    }
                    if busy > self.settings.busy_threshold {
                        self.note(format!(
                            "{scenario}, {}, round {}: other work on the machine took {:.0}% \
                             of its CPU during the measurement",
                            name(variant),
                            round + 1,
                            busy * 100.0
                        ));
                    }
                    busiest = busiest.max(busy);
                    if !samples.is_empty() {
                        println!("    {:<7} {}", name(variant), brief(&samples));
                    }
                    measured.extend(samples.into_iter().map(|s| (variant, s)));
                }
            }
            Ok(())
        })();
        self.rows
            .extend(Row::collect(scenario, &measured).into_iter().map(|mut r| {
                r.other_load = Some(busiest);
                r
            }));
        if let Err(e) = outcome {
            self.fail(scenario, e);
        }
        self.trace_rss(testbed, scenario);
    }

    /// Records the agents' RSS after a scenario: memory they keep after
    /// the traffic is gone shows here.
    fn trace_rss(&mut self, testbed: &Testbed, scenario: &str) {
        let Ok(agents) = testbed.agents() else {
            return;
        };
        let rss: Vec<(String, f64)> = agents
            .into_iter()
            .filter_map(|(node, pid)| Some((node, ProcStat::read(pid).ok()?.rss_mib())))
            .collect();
        self.rss_trace.push((scenario.to_string(), rss));
    }

    /// Runs `measure` up to `1 + retries` times until the machine was quiet
    /// during it; returns the quietest attempt's samples and the share of
    /// the machine other work took meanwhile.
    fn quietest(
        &self,
        retries: usize,
        mut measure: impl FnMut() -> Result<Vec<Sample>>,
    ) -> Result<(Vec<Sample>, f64)> {
        let Some(load) = &self.hostload else {
            return Ok((measure()?, 0.0));
        };
        let mut best: Option<(Vec<Sample>, f64)> = None;
        for attempt in 0..=retries {
            if !self.settings.quiet_wait.is_zero() {
                let share =
                    load.wait_quiet(self.settings.busy_threshold, self.settings.quiet_wait)?;
                if share > self.settings.busy_threshold {
                    println!(
                        "    the machine did not quiet down within {:?} (other work: {:.0}%)",
                        self.settings.quiet_wait,
                        share * 100.0
                    );
                }
            }
            let before = load.snapshot()?;
            let samples = measure()?;
            let busy = load.foreign_share(&before, &load.snapshot()?);
            if best.as_ref().is_none_or(|(_, b)| busy < *b) {
                best = Some((samples, busy));
            }
            if busy <= self.settings.busy_threshold || super::stopped() {
                break;
            }
            if attempt < retries {
                println!(
                    "    other work took {:.0}% of the machine; measuring again",
                    busy * 100.0
                );
            }
        }
        Ok(best.expect("at least one attempt"))
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

    fn start_profile(
        &self,
        testbed: &Testbed,
        variant: Variant,
        scenario: &str,
    ) -> Result<profile::Recording> {
        let pids: Vec<u32> = testbed
            .proxies(variant)?
            .into_iter()
            .map(|(_, pid)| pid)
            .collect();
        profile::record(&pids, &self.profile_dir, scenario)
    }

    fn finish_profile(&mut self, recording: profile::Recording, name: &str) {
        match recording.finish() {
            Ok(p) => {
                let top: Vec<String> = p
                    .top
                    .iter()
                    .take(5)
                    .map(|(pct, sym)| format!("{pct:.1}% {sym}"))
                    .collect();
                self.note(format!(
                    "profile of the node proxies during {name}: {}; top: {}",
                    p.report.display(),
                    top.join(", ")
                ));
                let _ = p.folded;
            }
            Err(e) => self.note(format!("profiling {name} failed: {e:#}")),
        }
    }
}

/// How often a scenario's variants are measured.
#[derive(Clone, Copy)]
enum Repeat {
    /// The run's rounds; a measurement taken while the machine was busy
    /// is repeated (`--busy-retries`).
    Rounds(usize),
    /// One round, never repeated: for measurements that change the
    /// agents' state (memory they keep), which a second attempt would not
    /// see anew.
    Once,
}

/// `metric value unit, ...` for progress lines.
fn brief(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|(m, v)| format!("{} {} {}", m.name, super::report::num(Some(*v)), m.unit))
        .collect::<Vec<_>>()
        .join(", ")
}
