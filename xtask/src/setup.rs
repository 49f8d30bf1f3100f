//! Set-up from nothing: everything weft needs that a fresh Debian machine
//! with a Rust toolchain lacks. Each step checks first and says what it
//! installs, so running it again does nothing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// Debian packages: LLVM 22 for bpf-linker, the network tools the
/// simulated cluster and its captures use, and Prometheus (2.42), which
/// `weft_sim::prometheus` runs privately per test to scrape the mesh and
/// check the dashboards' PromQL. Debian's package also installs a system
/// service on :9090 (started only where systemd runs); the tests never use
/// it: each starts its own Prometheus on a free loopback port with its own
/// TSDB directory.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("iproute2", "/usr/sbin/ip"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("prometheus", "/usr/bin/prometheus"),
    // iptables-legacy: netem-style delay and loss in the TCP-health tests
    // (`weft_sim::impair`, an NFQUEUE rule in a pod's namespace); this
    // kernel has no sch_netem.
    ("iptables", "/usr/sbin/iptables-legacy"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Python packages the tests use: (pip name, version, module, why).
/// Helm's Go SDK (v4): the chart test (`cli/tests/chart.rs`) renders and
/// lints `deploy/charts/weft` with it (there is no `helm` binary in any
/// registry reachable here). `h2`: an HBONE peer weft did not write
/// (`tests/peers/hbone_client.py`).
const PYTHON_PACKAGES: &[(&str, &str, &str, &str)] = &[
    (
        "helm-python-sdk",
        "0.2.2",
        "helm_python",
        "Helm's Go SDK, for the chart test",
    ),
    ("h2", "4.4.1", "h2", "HTTP/2, for the Python HBONE peer"),
];

fn cargo_home() -> std::path::PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo")
        })
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(name, _)| *name)
        .collect()
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("rust-src"))
        .unwrap_or(false)
}

/// The installed nightly is used as it is: `rustup toolchain install`
/// would move it to a newer one.
fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
        .unwrap_or(false)
}

fn has_bpf_linker() -> bool {
    Command::new(cargo_home().join("bin/bpf-linker"))
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn has_python_package(module: &str, version: &str) -> bool {
    Command::new("python3")
        .args([
            "-c",
            &format!("import {module}; assert {module}.__version__ == '{version}'"),
        ])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

fn missing_python_packages()
-> Vec<&'static (&'static str, &'static str, &'static str, &'static str)> {
    PYTHON_PACKAGES
        .iter()
        .filter(|(_, version, module, _)| !has_python_package(module, version))
        .collect()
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf")
            })
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn needs_setup() -> bool {
    !missing_packages().is_empty()
        || !has_rust_src()
        || !has_bpf_linker()
        || !missing_python_packages().is_empty()
        || !bpffs_mounted()
}

/// Runs set-up only if something is missing.
pub fn ensure() -> anyhow::Result<()> {
    if needs_setup() {
        println!("xtask: this machine lacks part of weft's toolchain; running `cargo xtask setup`");
        run()?;
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask setup` installs system packages and mounts bpffs: run it as root");
    }
    let missing = missing_packages();
    if !missing.is_empty() {
        println!(
            "xtask setup: installing Debian packages {}",
            missing.join(" ")
        );
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !has_rust_src() {
        println!(
            "xtask setup: installing nightly rust-src (the eBPF programs build core from source)"
        );
        if !has_nightly() {
            run_cmd(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
        }
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !has_bpf_linker() {
        println!(
            "xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (links the eBPF programs; built against LLVM 22)"
        );
        run_cmd(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--force",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
                .env(
                    "PATH",
                    format!(
                        "/usr/lib/llvm-22/bin:{}",
                        std::env::var("PATH").unwrap_or_default()
                    ),
                ),
        )?;
    }
    for (name, version, _, why) in missing_python_packages() {
        println!("xtask setup: installing Python package {name} {version} ({why})");
        run_cmd(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "-q",
            &format!("{name}=={version}"),
        ]))?;
    }
    if !bpffs_mounted() {
        println!("xtask setup: mounting bpffs at /sys/fs/bpf");
        std::fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
        run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    println!(
        "xtask setup: done (nightly rust-src, bpf-linker {BPF_LINKER_VERSION}, LLVM 22, iproute2, tcpdump, prometheus, iptables, Python packages, bpffs)"
    );
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    crate::run(cmd)
}
