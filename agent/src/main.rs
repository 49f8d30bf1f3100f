//! `weft-agent`: parses flags, sets up logging, runs [`weft_agent::App`];
//! or, as `weft-agent cni-uninstall`, removes weft-cni from the node.

use clap::Parser;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt};
use weft_agent::{
    config::{CNI_UNINSTALL, CniUninstall},
    log_sink::{LogLevel, Logging},
};

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == CNI_UNINSTALL)
    {
        // The mode's name stands where clap expects the program's.
        return cni_uninstall(CniUninstall::parse_from(std::env::args_os().skip(1)));
    }
    let config = weft_agent::Config::parse();
    let initial = std::env::var("WEFT_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".to_string());
    // The filter can be changed while the agent runs (admin `/logging`).
    let (filter, reload) = reload::Layer::new(EnvFilter::new(&initial));
    // Log lines (one per request, with L7) are written by a thread of
    // their own, in batches: the proxy's threads never wait on a write to
    // stdout. Flushed at exit (the guard).
    let (writer, _flush_at_exit) = log_writer();
    let lines = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    let registry = tracing_subscriber::registry().with(filter);
    if config.log_json {
        registry.with(lines.json()).init();
    } else {
        // Colours only on a terminal: logs in files stay greppable.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(lines.with_ansi(ansi)).init();
    }
    let level = LogLevel::new(initial, move |f| {
        reload.reload(f).map_err(|e| e.to_string())
    });
    let logging = Logging::new(level, Some(writer));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ran = runtime.block_on(weft_agent::App::run(config, logging));
    // The last requests' lines, before the process ends.
    weft_agent::access_log::global().flush();
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let message = error_chain(&err);
            tracing::error!(error = %message, "weft-agent failed");
            eprintln!("weft-agent: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `weft-agent cni-uninstall`: one line per thing removed or left.
fn cni_uninstall(args: CniUninstall) -> std::process::ExitCode {
    let done = weft_agent::cni_install::uninstall(&args.cni_bin_dir, &args.cni_net_dir);
    let binary = args.cni_bin_dir.join(weft_agent::cni_install::PLUGIN_TYPE);
    if done.binary_removed {
        println!("removed {}", binary.display());
    } else if done.errors.is_empty() {
        println!("{} was not installed", binary.display());
    }
    for file in &done.unchained {
        println!("removed weft-cni from {}", file.display());
    }
    for err in &done.errors {
        eprintln!("weft-agent cni-uninstall: {}", error_chain(err));
    }
    if done.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The log sink (see [`weft_agent::log_sink`]) writing to stdout.
fn log_writer() -> (
    weft_agent::log_sink::LogSink,
    weft_agent::log_sink::FlushOnDrop,
) {
    weft_agent::log_sink::to(weft_agent::log_sink::Output::stdout())
        .expect("starting the log thread")
}

/// The error and its causes, `: `-separated (the kernel's words included).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
