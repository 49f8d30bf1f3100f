//! `weftctl`: parses flags, calls the `weftctl` library, prints.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use weftctl::{
    analyze, bug_report, diagnose, http::Endpoint, install, manifest, profile, proxy_config,
    proxy_status, stats, top,
};

#[derive(Parser)]
#[command(
    name = "weftctl",
    version,
    about = "weft's command-line tool: analyze config, inspect the control plane and the node agents, render, install and uninstall the deployment manifests"
)]
struct Cli {
    /// How long to wait (e.g. 500ms, 5s, 2m): for the control plane or an
    /// agent to answer (default 5s); for `install`, for the rollout, and
    /// for `uninstall`, for the agents' pods to terminate (default 5m).
    #[arg(long, global = true, value_parser = positive_duration)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For people: tables, one line per problem.
    Text,
    /// For programs: the JSON the component serves.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and analyze a directory of Kubernetes and Istio YAML the
    /// way weft-control loads it; exit 1 when there is an error.
    Analyze {
        /// The directory (read recursively: *.yaml, *.yml).
        dir: PathBuf,
        /// `text`: tables; `json`: as served.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
        /// DNS suffix of service hostnames.
        #[arg(long, default_value = "cluster.local")]
        domain_suffix: String,
        /// Istio's root namespace (mesh-wide policies live there).
        #[arg(long, default_value = "istio-system")]
        root_namespace: String,
    },
    /// Each connected agent's xDS sync state, per type: sent and
    /// acknowledged versions, rejections (like `istioctl proxy-status`).
    ProxyStatus {
        /// The control plane's debug address (weft-control --debug-addr).
        #[arg(long, default_value = "127.0.0.1:15014")]
        control: String,
        /// `text`: tables; `json`: as served.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
    },
    /// What one agent holds: workloads, services, policies, its pods and
    /// their certificates; its L7 routes, clusters, endpoints and
    /// listeners (like `istioctl proxy-config`); `log` reads or changes
    /// its log level.
    ProxyConfig {
        /// Which part of the agent's config dump.
        #[arg(value_enum, default_value = "all")]
        section: proxy_config::Section,
        /// The agent's admin address (weft-agent --admin-addr).
        #[arg(long, default_value = "127.0.0.1:15000")]
        agent: String,
        /// `text`: tables; `json`: as served.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
        /// With `log`: the new level (trace, debug, info, warn, error, off,
        /// or `WEFT_LOG` directives such as info,weft_agent::l7=debug).
        #[arg(long)]
        level: Option<String>,
    },
    /// Why a request from SRC to DST fails (or that it should not): both
    /// in the mesh and enrolled, agents synced, endpoints, the
    /// VirtualService and DestinationRule that apply, the port's protocol,
    /// PeerAuthentication, AuthorizationPolicies, certificates and the
    /// agents' counters for the pair; each failure names the object and
    /// field to fix, and the last line the most likely cause. Exit 1 when a
    /// check fails.
    Diagnose {
        /// The client pod: `namespace/name` or `name.namespace`.
        src: String,
        /// The destination: a Service (`name.namespace`, its FQDN, or
        /// `namespace/name`) or a pod, with an optional `:PORT` (default:
        /// the Service's first port).
        dst: String,
        /// The control plane's debug address (weft-control --debug-addr).
        #[arg(long, default_value = "127.0.0.1:15014")]
        control: String,
        /// An agent's admin address, `NODE=HOST:PORT` (repeatable); by
        /// default the address its xDS stream comes from, at --agent-port.
        #[arg(long = "agent", value_name = "NODE=ADDR")]
        agents: Vec<String>,
        /// The agents' admin port (weft-agent --admin-addr).
        #[arg(long, default_value_t = 15000)]
        agent_port: u16,
        /// `text`: one line per check; `json`: the report.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
    },
    /// Collect the control plane's and the agents' debug dumps, stats
    /// and recent logs into one .tar.gz (a README.txt inside lists what
    /// was collected and what failed; an agent that is down is noted,
    /// not fatal).
    BugReport {
        /// The control plane's debug address (weft-control --debug-addr).
        #[arg(long)]
        control: Option<String>,
        /// An agent's admin address (repeat for each agent).
        #[arg(long = "agent", required = true)]
        agents: Vec<String>,
        /// The archive to write (default:
        /// weft-bug-report-<UTC time>.tar.gz here).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// An agent's counters (connections active, refused by reason).
    Stats {
        /// The agent's admin address (weft-agent --admin-addr).
        #[arg(long, default_value = "127.0.0.1:15000")]
        agent: String,
        /// `text`: tables; `json`: as served.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
    },
    /// A CPU profile of a pod, of an agent or of a whole node, sampled by
    /// the node's agent with eBPF (user and kernel stacks): writes a
    /// flame graph SVG and prints the top functions.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["pod", "agent", "node"])))]
    Profile {
        /// The pod (`namespace/name`, `name.namespace`, or `name` in
        /// `default`); its node's agent is found through the control plane.
        pod: Option<String>,
        /// Profile the agent itself.
        #[arg(long)]
        agent: bool,
        /// Profile every process of the node.
        #[arg(long)]
        node: bool,
        /// How long to sample (1s to 5m).
        #[arg(long, default_value = "30s", value_parser = weft_proto::duration::parse)]
        duration: Duration,
        /// Samples per second on each CPU (1 to 1000).
        #[arg(long, default_value_t = 99)]
        frequency: u64,
        /// The flame graph to write.
        #[arg(long, short = 'o', default_value = "profile.svg")]
        output: PathBuf,
        /// Also write the folded stacks (`thread;outer;…;inner count`,
        /// kernel frames suffixed `_[k]`) there, for other flame graph
        /// tools.
        #[arg(long, value_name = "FILE")]
        folded: Option<PathBuf>,
        /// How many functions the table lists.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// With --agent or --node: the node whose agent to ask, found
        /// through the control plane (default: the agent at --admin).
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        /// The agent's admin address: `ADDR` for --agent and --node,
        /// `NODE=ADDR` (repeatable) to say where a node's agent is.
        #[arg(long = "admin", value_name = "ADDR|NODE=ADDR")]
        admin: Vec<String>,
        /// The control plane's debug address (weft-control --debug-addr).
        #[arg(long, default_value = "127.0.0.1:15014")]
        control: String,
        /// The agents' admin port, for agents found through the control
        /// plane.
        #[arg(long, default_value_t = 15000)]
        agent_port: u16,
    },
    /// Per-workload TCP health, live, like `top`: for the connections of
    /// enrolled pods, as each node's kernel sees them, new connections,
    /// retransmitted segments, RTOs and zero windows per second and the
    /// mean smoothed RTT and setup time, refreshed every --interval.
    Top {
        /// Only pairs with a workload in this namespace (as source or
        /// destination).
        namespace: Option<String>,
        /// An agent's admin address (repeat for each node).
        #[arg(long = "agent", default_value = "127.0.0.1:15000")]
        agents: Vec<String>,
        /// What the rows are sorted by (largest first).
        #[arg(long, value_enum, default_value = "retransmits")]
        sort: top::SortBy,
        /// Time between two frames.
        #[arg(long, default_value = "1s", value_parser = positive_duration)]
        interval: Duration,
        /// Stop after this many frames (default: until interrupted).
        #[arg(long, short = 'n')]
        count: Option<u64>,
    },
    /// The Kubernetes manifests of weft (control plane and agent).
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Apply the manifests `manifest generate` renders to the cluster
    /// (server-side apply, field manager `weftctl`), then wait for the
    /// control plane and the agents to roll out.
    Install {
        #[command(flatten)]
        values: ValuesArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Apply and return without waiting for the rollout.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete what `install` applies, in reverse order, and wait for the
    /// agents' pods to go. The namespace is deleted only when it carries
    /// the label the manifests put on it; Istio's CRDs are kept.
    Uninstall {
        /// Namespace weft was installed in.
        #[arg(long, default_value = manifest::DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// weft-cni is off every node (`weft-agent cni-uninstall` ran in
        /// each agent pod): delete the agents although their pods run.
        /// Without it, uninstall stops while agent pods exist, because a
        /// node with weft-cni chained and no agent starts no pod.
        #[arg(long)]
        cni_removed: bool,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print the manifests (pipe them to `kubectl apply -f -`).
    Generate {
        #[command(flatten)]
        values: ValuesArgs,
    },
}

/// What `manifest generate` and `install` substitute.
#[derive(Args)]
struct ValuesArgs {
    /// Namespace of the control plane and the agents.
    #[arg(long, default_value = manifest::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Image holding weft-control, weft-agent and weft-cni in
    /// /usr/local/bin (see deploy/Dockerfile).
    #[arg(long, default_value_t = manifest::default_image())]
    image: String,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = manifest::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

impl From<ValuesArgs> for manifest::Values {
    fn from(args: ValuesArgs) -> Self {
        manifest::Values {
            namespace: args.namespace,
            image: args.image,
            trust_domain: args.trust_domain,
        }
    }
}

/// Which cluster, as kubectl chooses it.
#[derive(Args)]
struct ClusterArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config,
    /// else the pod's service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    context: Option<String>,
}

impl From<ClusterArgs> for install::Target {
    fn from(args: ClusterArgs) -> Self {
        install::Target {
            kubeconfig: args.kubeconfig,
            context: args.context,
        }
    }
}

/// `--timeout` of the commands that ask the control plane or an agent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `--timeout` of `install` and `uninstall`.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const CONTROL_WHAT: &str = "the control plane's debug endpoint";
const CONTROL_HINT: &str = "is weft-control running, and is --control its --debug-addr? \
    In a cluster: kubectl -n istio-system port-forward deploy/weft-control 15014";
const AGENT_WHAT: &str = "the agent's admin endpoint";
const AGENT_HINT: &str = "is weft-agent running, and is --agent its --admin-addr (127.0.0.1:15000 on its node)? \
    In a cluster: kubectl -n istio-system port-forward pod/<weft-agent pod on the node> 15000";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("weftctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let endpoint = |addr: String, what, hint| Endpoint {
        addr: addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        what,
        hint,
        timeout: cli.timeout.unwrap_or(REQUEST_TIMEOUT),
    };
    match cli.command {
        Command::Analyze {
            dir,
            output,
            domain_suffix,
            root_namespace,
        } => {
            let report = analyze::run(&dir, &domain_suffix, &root_namespace)?;
            match output {
                Output::Json => print(&json(&report)?)?,
                Output::Text => print(&analyze::render(&report))?,
            }
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::ProxyStatus { control, output } => {
            let endpoint = endpoint(control, CONTROL_WHAT, CONTROL_HINT);
            let body = endpoint.get("/debug/syncz")?;
            if output == Output::Json {
                print(&String::from_utf8_lossy(&body))?;
                return Ok(ExitCode::SUCCESS);
            }
            let syncz = proxy_status::parse(&body).with_context(|| {
                format!(
                    "{CONTROL_WHAT} at {} sent /debug/syncz in an unexpected shape; are weftctl and weft-control the same version?",
                    endpoint.addr
                )
            })?;
            print(&proxy_status::render(
                &syncz,
                &endpoint.addr,
                weftctl::now_unix(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ProxyConfig {
            section,
            agent,
            output,
            level,
        } => {
            let endpoint = endpoint(agent, AGENT_WHAT, AGENT_HINT);
            if section == proxy_config::Section::Log {
                use proxy_config::log;
                let state = match &level {
                    Some(level) => log::set(&endpoint, level)?,
                    None => log::get(&endpoint)?,
                };
                match output {
                    Output::Json => print(&json(&state)?)?,
                    Output::Text => print(&log::render(&state))?,
                }
                return Ok(ExitCode::SUCCESS);
            }
            if level.is_some() {
                anyhow::bail!("--level applies to `proxy-config log` only");
            }
            let dump = proxy_config::parse(&endpoint.get("/config_dump")?)?;
            match output {
                Output::Json => print(&json(&proxy_config::section_json(&dump, section)?)?)?,
                Output::Text => print(&proxy_config::render(&dump, section, weftctl::now_unix())?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose {
            src,
            dst,
            control,
            agents,
            agent_port,
            output,
        } => {
            let mut by_node = std::collections::BTreeMap::new();
            for pair in agents {
                let Some((node, addr)) = pair.split_once('=') else {
                    anyhow::bail!("--agent `{pair}`: expected NODE=HOST:PORT");
                };
                by_node.insert(node.to_string(), addr.to_string());
            }
            let sources = diagnose::Sources {
                control: endpoint(control, CONTROL_WHAT, CONTROL_HINT),
                agents: by_node,
                agent_port,
                agent_hint: AGENT_HINT,
            };
            let report = diagnose::run(&sources, &src, &dst, weftctl::now_unix())?;
            match output {
                Output::Json => print(&json(&report)?)?,
                Output::Text => print(&diagnose::render(&report))?,
            }
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::BugReport {
            control,
            agents,
            output,
        } => {
            let control = control.map(|c| endpoint(c, CONTROL_WHAT, CONTROL_HINT));
            let agents: Vec<Endpoint> = agents
                .into_iter()
                .map(|a| endpoint(a, AGENT_WHAT, AGENT_HINT))
                .collect();
            let report = bug_report::collect(control.as_ref(), &agents, weftctl::now_unix());
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{}.tar.gz", report.top)));
            bug_report::write_archive(&report, &path)?;
            let failed = report.failed().count();
            for item in report.failed() {
                let reason = item.outcome.as_ref().err().map_or("", String::as_str);
                eprintln!("weftctl: not collected: {}: {reason}", item.name);
            }
            print(&format!(
                "wrote {}: {} files collected, {failed} failed (see README.txt inside)\n",
                path.display(),
                report.items.len() - failed,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { agent, output } => {
            let endpoint = endpoint(agent, AGENT_WHAT, AGENT_HINT);
            let body = endpoint.get("/stats")?;
            let value: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
                format!(
                    "{AGENT_WHAT} at {} sent /stats that is not JSON",
                    endpoint.addr
                )
            })?;
            match output {
                Output::Json => print(&json(&value)?)?,
                Output::Text => print(&stats::render(&value))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top {
            namespace,
            agents,
            sort,
            interval,
            count,
        } => {
            let endpoints: Vec<Endpoint> = agents
                .into_iter()
                .map(|a| endpoint(a, AGENT_WHAT, AGENT_HINT))
                .collect();
            let read = || -> anyhow::Result<top::Snapshot> {
                let mut snapshot = top::Snapshot::default();
                for endpoint in &endpoints {
                    snapshot.add(&endpoint.addr, &endpoint.get("/tcp")?)?;
                }
                Ok(snapshot)
            };
            let terminal = std::io::stdout().is_terminal();
            let mut before = read()?;
            let mut taken = std::time::Instant::now();
            let mut frames = 0;
            while count.is_none_or(|n| frames < n) {
                std::thread::sleep(interval);
                let now = read()?;
                let elapsed = taken.elapsed();
                taken = std::time::Instant::now();
                let table = top::frame(&before, &now, elapsed, namespace.as_deref(), sort);
                let clock = utc_time_of_day();
                if terminal {
                    // Home and clear, as top does.
                    print(&format!(
                        "\x1b[H\x1b[2J{clock}, every {interval:?}\n\n{table}"
                    ))?;
                } else {
                    print(&format!("{clock}, every {interval:?}\n{table}\n"))?;
                }
                before = now;
                frames += 1;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile {
            pod,
            agent,
            node,
            duration,
            frequency,
            output,
            folded,
            top,
            on,
            admin,
            control,
            agent_port,
        } => {
            let mut by_node = std::collections::BTreeMap::new();
            let mut direct = None;
            for given in admin {
                match given.split_once('=') {
                    Some((node, addr)) => {
                        by_node.insert(node.to_string(), addr.to_string());
                    }
                    None => direct = Some(given),
                }
            }
            let sources = diagnose::inputs::Sources {
                control: endpoint(control, CONTROL_WHAT, CONTROL_HINT),
                agents: by_node,
                agent_port,
                agent_hint: AGENT_HINT,
            };
            let (target, agent_endpoint) = match (pod, agent) {
                (Some(pod), _) => {
                    let (key, agent) = profile::locate_pod(&sources, &pod)?;
                    (profile::Target::Pod(key), agent)
                }
                (None, agent) => {
                    let target = if agent {
                        profile::Target::Agent
                    } else {
                        debug_assert!(node);
                        profile::Target::Node
                    };
                    let endpoint = match (on, direct) {
                        (Some(node), _) => profile::locate_node(&sources, &node)?,
                        (None, addr) => endpoint(
                            addr.unwrap_or_else(|| "127.0.0.1:15000".into()),
                            AGENT_WHAT,
                            AGENT_HINT,
                        ),
                    };
                    (target, endpoint)
                }
            };
            let path = profile::query(&target, duration, frequency);
            let answer = profile::fetch(&agent_endpoint, &path, duration)?;
            let drawn = profile::write_svg(&answer, &output)?;
            if let Some(path) = &folded {
                let text: String = answer.folded.iter().map(|l| format!("{l}\n")).collect();
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            print(&profile::render(&answer, top))?;
            if drawn {
                print(&format!("flame graph: {}\n", output.display()))?;
            } else {
                print("no flame graph written: there is no sample to draw\n")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest {
            command: ManifestCommand::Generate { values },
        } => {
            print(&manifest::render(&values.into())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Install {
            values,
            cluster,
            no_wait,
        } => {
            let options = install::InstallOptions {
                values: values.into(),
                target: cluster.into(),
                timeout: cli.timeout.unwrap_or(ROLLOUT_TIMEOUT),
                wait: !no_wait,
            };
            runtime()?.block_on(install::install(&options, &mut printer()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall {
            namespace,
            cluster,
            cni_removed,
        } => {
            let options = install::UninstallOptions {
                namespace,
                target: cluster.into(),
                timeout: cli.timeout.unwrap_or(ROLLOUT_TIMEOUT),
                cni_removed,
            };
            runtime()?.block_on(install::uninstall(&options, &mut printer()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One thread is plenty for a few requests at a time.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Lines on stdout; progress redrawn in place when it is a terminal.
fn printer() -> install::Printer<std::io::Stdout> {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    install::Printer::new(stdout, terminal)
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// The time of day (UTC), for `top`'s frames.
fn utc_time_of_day() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3_600,
        day % 3_600 / 60,
        day % 60
    )
}

/// A timeout or an interval: a duration longer than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = weft_proto::duration::parse(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}`: must be longer than zero"));
    }
    Ok(duration)
}
