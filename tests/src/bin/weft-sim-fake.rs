//! `weft-sim-fake`: stand-ins for `weft-control`, `weft-agent` and
//! `weft-cni`, chosen by the name it is invoked under (symlinks), so the
//! harness's mesh plumbing can be tested on its own: command lines,
//! readiness waits, bootstrap tokens, CNI environment and stdin, failure
//! paths. They carry no traffic.
//!
//! - `weft-control serve …`: writes `<state>/trust-bundle.pem`, answers
//!   `GET /ready` on `--debug-addr`. `weft-control bootstrap-token --node N`
//!   prints `token-for-N`.
//! - `weft-agent …`: checks its token and CA file, creates its bpffs dir,
//!   answers `GET /healthz/ready` on :15021, and answers the fake CNI on its
//!   socket, refusing pods named `deny-*`.
//! - `weft-cni`: checks what a runtime must send, asks the agent, prints the
//!   `prevResult` on success or a CNI error JSON on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = Path::new(&args[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match invoked_as.as_str() {
        "weft-control" => control(&args[1..]),
        "weft-agent" => agent(&args[1..]),
        "weft-cni" => cni(),
        other => Err(anyhow::anyhow!(
            "invoked as {other:?}: symlink me as weft-control, weft-agent or weft-cni"
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{invoked_as} (fake): {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The value of `--name`, required.
fn flag<'a>(args: &'a [String], name: &str) -> Result<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .with_context(|| format!("missing {name} (got {args:?})"))
}

/// Answers `GET <path>` with 200 and anything else with 404, forever.
fn serve_ready(listener: TcpListener, path: &'static str) {
    for conn in listener.incoming().flatten() {
        let mut reader = BufReader::new(&conn);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // Read the headers too: closing with a request unread would reset
        // the connection under the client.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 0) && !header.trim_end().is_empty() {
            header.clear();
        }
        let status = if line.split_whitespace().nth(1) == Some(path) {
            "200 OK"
        } else {
            "404 Not Found"
        };
        let _ = (&conn).write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
}

// === weft-control ===

fn control(args: &[String]) -> Result<ExitCode> {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let config_dir = flag(args, "--config-dir")?;
            let state_dir = PathBuf::from(flag(args, "--state-dir")?);
            flag(args, "--xds-addr")?;
            let debug_addr = flag(args, "--debug-addr")?;
            let trust_domain = flag(args, "--trust-domain")?;
            if !Path::new(config_dir).is_dir() {
                bail!("--config-dir {config_dir} is not a directory");
            }
            std::fs::create_dir_all(&state_dir)?;
            std::fs::write(state_dir.join("args"), args.join(" "))?;
            let listener =
                TcpListener::bind(debug_addr).with_context(|| format!("binding {debug_addr}"))?;
            std::fs::write(
                state_dir.join("trust-bundle.pem"),
                format!(
                    "-----BEGIN CERTIFICATE-----\nZmFrZSB7{trust_domain}\n-----END CERTIFICATE-----\n"
                ),
            )?;
            println!("fake weft-control serving /ready on {debug_addr}");
            serve_ready(listener, "/ready");
            Ok(ExitCode::SUCCESS)
        }
        Some("bootstrap-token") => {
            flag(args, "--state-dir")?;
            println!("token-for-{}", flag(args, "--node")?);
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("expected `serve` or `bootstrap-token`, got {args:?}"),
    }
}

// === weft-agent ===

fn agent(args: &[String]) -> Result<ExitCode> {
    let node = flag(args, "--node-name")?;
    flag(args, "--control-addr")?;
    let ca = flag(args, "--ca-root-file")?;
    let token_file = flag(args, "--token-file")?;
    let socket = flag(args, "--cni-socket")?;
    let state_dir = flag(args, "--state-dir")?;
    let bpffs = flag(args, "--bpffs-dir")?;
    let cgroup = flag(args, "--cgroup")?;
    let token =
        std::fs::read_to_string(token_file).with_context(|| format!("reading {token_file}"))?;
    if token.trim() != format!("token-for-{node}") {
        bail!("token file {token_file} holds {token:?}, not this node's token");
    }
    if !Path::new(ca).is_file() {
        bail!("--ca-root-file {ca} does not exist");
    }
    if !Path::new(cgroup).join("cgroup.procs").is_file() {
        bail!("--cgroup {cgroup} is not a cgroup directory");
    }
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(Path::new(state_dir).join("args"), args.join(" "))?;
    std::fs::create_dir_all(Path::new(bpffs).join("links"))?;
    let _ = std::fs::remove_file(socket);
    let cni = UnixListener::bind(socket).with_context(|| format!("binding {socket}"))?;
    let ready = TcpListener::bind("0.0.0.0:15021").context("binding 0.0.0.0:15021")?;
    println!("fake weft-agent of {node} ready");
    std::thread::spawn(move || serve_ready(ready, "/healthz/ready"));
    for conn in cni.incoming().flatten() {
        let _ = answer_cni(conn, Path::new(state_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// One request line `ADD|DEL <ns>/<name> <netns path>`; one reply line.
fn answer_cni(conn: UnixStream, state_dir: &Path) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    let reply = match parts.as_slice() {
        [cmd, pod, _]
            if pod
                .split('/')
                .nth(1)
                .is_some_and(|n| n.starts_with("deny-")) =>
        {
            format!("ERR {cmd} refused: pod {pod} is on the deny list")
        }
        ["ADD", pod, netns] if !Path::new(netns).exists() => {
            format!("ERR netns of {pod} missing: {netns}")
        }
        [cmd @ ("ADD" | "DEL"), pod, _] => {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(state_dir.join("pods"))?;
            writeln!(log, "{cmd} {pod}")?;
            "OK".to_string()
        }
        _ => format!("ERR bad request {line:?}"),
    };
    (&conn).write_all(format!("{reply}\n").as_bytes())?;
    Ok(())
}

// === weft-cni ===

fn cni() -> Result<ExitCode> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let command = env("CNI_COMMAND")?;
    let netns = env("CNI_NETNS")?;
    env("CNI_CONTAINERID")?;
    env("CNI_PATH")?;
    if env("CNI_IFNAME")? != "eth0" {
        bail!("CNI_IFNAME is not eth0");
    }
    let cni_args = env("CNI_ARGS")?;
    let arg = |k: &str| {
        cni_args
            .split(';')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .with_context(|| format!("CNI_ARGS lacks {k}: {cni_args}"))
    };
    let pod = format!("{}/{}", arg("K8S_POD_NAMESPACE")?, arg("K8S_POD_NAME")?);
    arg("K8S_POD_UID")?;
    let mut stdin = String::new();
    std::io::stdin().read_to_string(&mut stdin)?;
    let config: serde_json::Value =
        serde_json::from_str(&stdin).context("network config on stdin")?;
    let socket = config["agent_socket"]
        .as_str()
        .context("no agent_socket in the config")?;
    let prev = &config["prevResult"];
    if prev["ips"][0]["address"].as_str().is_none() {
        bail!("no prevResult.ips[0].address in {stdin}");
    }
    let mut conn =
        UnixStream::connect(socket).with_context(|| format!("connecting to {socket}"))?;
    conn.write_all(format!("{command} {pod} {netns}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    match reply.trim().strip_prefix("ERR ") {
        None if reply.trim() == "OK" => {
            if command == "ADD" {
                println!("{prev}");
            }
            Ok(ExitCode::SUCCESS)
        }
        reason => {
            let msg = reason.unwrap_or(reply.trim());
            println!(
                "{}",
                serde_json::json!({ "cniVersion": "1.0.0", "code": 999, "msg": msg })
            );
            eprintln!("fake weft-cni: agent refused {pod}");
            Ok(ExitCode::from(1))
        }
    }
}
