//! `weft-apiserver [--port N] [--kubeconfig PATH]`: runs the Kubernetes API
//! server stand-in until SIGTERM or ctrl-c, printing its URL on stdout.

use std::path::PathBuf;

use anyhow::{Context, bail};
use weft_apiserver::{ApiServer, Options};

const USAGE: &str = "usage: weft-apiserver [--port N] [--kubeconfig PATH] [--no-istio-crds]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut options = Options::default();
    let mut kubeconfig: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().context("--port needs a value")?;
                options.port = value
                    .parse()
                    .with_context(|| format!("--port {value:?} is not a port number (0-65535)"))?;
            }
            "--kubeconfig" => {
                kubeconfig = Some(args.next().context("--kubeconfig needs a path")?.into())
            }
            "--no-istio-crds" => options.istio_crds = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let server = ApiServer::start(options).await?;
    if let Some(path) = &kubeconfig {
        server.write_kubeconfig(path, ApiServer::ADMIN_TOKEN)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    server.stop().await;
    Ok(())
}
