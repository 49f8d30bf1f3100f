//! `--cni-install` and `weft-agent cni-uninstall` on real files: a node's
//! CNI directories in a temporary directory, watched with real inotify.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use weft_agent::cni_install::{
    Chained, CniInstallError, Installer, PluginEntry, Settings, uninstall,
};

/// A node: `bin/` (the CNI bin dir), `net.d/`, and the image's `weft-cni`.
struct Node {
    _dir: TempDir,
    bin: PathBuf,
    net: PathBuf,
    installer: Installer,
}

const PLUGIN: &[u8] = b"#!/bin/sh\n# weft-cni, version 1\n";

/// What weft-cni's entry looks like in these tests, pretty-printed at the
/// depth of a plugin in a network list.
const ENTRY: &str = r#"    {
      "type": "weft-cni",
      "agent_socket": "/run/weft/cni.sock",
      "timeout_seconds": 60
    }"#;

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (bin, net, image) = (
        dir.path().join("bin"),
        dir.path().join("net.d"),
        dir.path().join("image"),
    );
    for d in [&bin, &net, &image] {
        fs::create_dir(d).unwrap();
    }
    fs::write(image.join("weft-cni"), PLUGIN).unwrap();
    let installer = Installer::new(Settings {
        binary: image.join("weft-cni"),
        bin_dir: bin.clone(),
        net_dir: net.clone(),
        entry: PluginEntry {
            agent_socket: "/run/weft/cni.sock".into(),
            timeout_seconds: 60,
        },
        // Long: the tests below see inotify at work, not this.
        recheck: Duration::from_secs(3600),
    });
    Node {
        _dir: dir,
        bin,
        net,
        installer,
    }
}

impl Node {
    fn installed(self) -> Self {
        assert!(self.installer.install_binary().unwrap());
        self
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.net.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// Writes `text` as a CNI would on upgrade: a new file renamed over.
    fn replace(&self, name: &str, text: &str) {
        let temp = self.net.join(format!(".{name}.cni-tmp"));
        fs::write(&temp, text).unwrap();
        fs::rename(&temp, self.net.join(name)).unwrap();
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.net.join(name)).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.net)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn chained(text: &str) -> bool {
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    doc["plugins"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["type"] == "weft-cni"))
}

/// Waits (bounded) for `cond`; the deadline is generous, never asserted on.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A network list with keys in no sorted order, written as serde_json's
/// pretty printer writes (two-space indent), so that the chained file can
/// be compared byte for byte.
const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "datastore_type": "kubernetes",
      "mtu": 1440,
      "ipam": {
        "type": "calico-ipam",
        "assign_ipv6": false
      },
      "policy": {
        "type": "k8s"
      },
      "kubernetes": {
        "kubeconfig": "/etc/cni/net.d/calico-kubeconfig"
      }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {
        "portMappings": true
      }
    }
  ],
  "disableCheck": false
}
"#;

fn calico_chained() -> String {
    CALICO.replace(
        "        \"portMappings\": true\n      }\n    }\n  ],",
        &format!("        \"portMappings\": true\n      }}\n    }},\n{ENTRY}\n  ],"),
    )
}

#[test]
fn chaining_keeps_every_field_in_its_place_and_a_second_pass_writes_nothing() {
    let node = node().installed();
    let file = node.write("10-calico.conflist", CALICO);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();

    assert_eq!(
        node.installer.chain().unwrap(),
        Chained::Written { file: file.clone() }
    );
    assert_eq!(node.read("10-calico.conflist"), calico_chained());
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    // No temporary file left behind.
    assert_eq!(node.names(), ["10-calico.conflist"]);

    // Idempotent: the same file, not rewritten (same inode and mtime).
    assert_eq!(
        node.installer.chain().unwrap(),
        Chained::Unchanged { file: file.clone() }
    );
    let again = fs::metadata(&file).unwrap();
    assert_eq!(
        (again.ino(), again.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec())
    );
    assert_eq!(node.read("10-calico.conflist"), calico_chained());
}

#[test]
fn an_outdated_entry_is_updated_where_it_is() {
    let node = node().installed();
    node.write(
        "10-ptp.conflist",
        r#"{"plugins":[{"type":"ptp"},{"type":"weft-cni","agent_socket":"/old.sock"},{"type":"bandwidth"}]}"#,
    );
    node.installer.chain().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&node.read("10-ptp.conflist")).unwrap();
    let types: Vec<&str> = doc["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ptp", "weft-cni", "bandwidth"]);
    assert_eq!(doc["plugins"][1]["agent_socket"], "/run/weft/cni.sock");
    assert_eq!(doc["plugins"][1]["timeout_seconds"], 60);
}

#[test]
fn a_single_plugin_conf_becomes_a_conflist() {
    let node = node().installed();
    let conf = node.write(
        "10-bridge.conf",
        r#"{"cniVersion":"0.4.0","name":"bridge-net","type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","subnet":"10.244.1.0/24"}}"#,
    );
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    let conflist = node.net.join("10-bridge.conflist");
    assert_eq!(
        node.installer.chain().unwrap(),
        Chained::Converted {
            from: conf,
            to: conflist.clone()
        }
    );
    assert_eq!(node.names(), ["10-bridge.conflist"]);
    let expected = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "bridge-net",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipam": {{
        "type": "host-local",
        "subnet": "10.244.1.0/24"
      }}
    }},
{ENTRY}
  ]
}}
"#
    );
    assert_eq!(node.read("10-bridge.conflist"), expected);
    let mode = fs::metadata(&conflist).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        node.installer.chain().unwrap(),
        Chained::Unchanged { file: conflist }
    );
}

#[test]
fn a_symlinked_config_is_chained_in_its_target_and_stays_a_link() {
    let node = node().installed();
    let elsewhere = node.net.parent().unwrap().join("calico.conflist");
    fs::write(&elsewhere, CALICO).unwrap();
    let link = node.net.join("10-calico.conflist");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    node.installer.chain().unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), calico_chained());
}

#[test]
fn a_conflist_of_the_same_name_that_is_not_ours_is_never_overwritten() {
    let node = node().installed();
    let conf = r#"{"name":"a","type":"bridge"}"#;
    let theirs = r#"{"name":"b","plugins":[{"type":"ptp"}]}"#;
    node.write("10-net.conf", conf);
    node.write("10-net.conflist", theirs);
    let err = node.installer.chain().unwrap_err();
    assert!(matches!(err, CniInstallError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("10-net.conflist"), "{err}");
    assert_eq!(node.read("10-net.conf"), conf);
    assert_eq!(node.read("10-net.conflist"), theirs);
}

#[test]
fn the_runtimes_first_config_is_the_one_chained() {
    let node = node().installed();
    let list = |name: &str| format!(r#"{{"name":"{name}","plugins":[{{"type":"ptp"}}]}}"#);
    node.write("20-b.conflist", &list("b"));
    node.write("10-a.conflist", &list("a"));
    // Not configs to the runtime: hidden, other extensions, a directory.
    node.write(".00-hidden.conflist", &list("hidden"));
    node.write("00-notes.txt", "not JSON");
    node.write("05-old.conflist.bak", &list("bak"));
    fs::create_dir(node.net.join("01-dir.conflist")).unwrap();

    let result = node.installer.chain().unwrap();
    assert_eq!(
        result,
        Chained::Written {
            file: node.net.join("10-a.conflist")
        }
    );
    assert!(chained(&node.read("10-a.conflist")));
    assert_eq!(node.read("20-b.conflist"), list("b"));
    assert_eq!(node.read(".00-hidden.conflist"), list("hidden"));
    assert_eq!(node.read("05-old.conflist.bak"), list("bak"));

    // Bytewise: uppercase sorts before lowercase, `.conf` before `.conflist`.
    node.write("10-A.conf", r#"{"name":"upper","type":"bridge"}"#);
    assert_eq!(
        node.installer.chain().unwrap(),
        Chained::Converted {
            from: node.net.join("10-A.conf"),
            to: node.net.join("10-A.conflist")
        }
    );
}

#[test]
fn a_bad_config_is_left_untouched_with_the_file_and_reason() {
    let node = node().installed();
    let broken = "{\"name\": \"k8s\", \"plugins\": [ {\"type\": \"calico\" },\n";
    node.write("10-calico.conflist", broken);
    let fine = r#"{"name":"b","plugins":[{"type":"ptp"}]}"#;
    node.write("20-fine.conflist", fine);

    let err = node.installer.chain().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CniInstallError::Parse { .. }), "{text}");
    assert!(text.contains("10-calico.conflist"), "{text}");
    assert!(text.contains("EOF while parsing"), "{text}");
    assert!(text.contains("untouched"), "{text}");
    assert_eq!(node.read("10-calico.conflist"), broken);
    // The runtime would fail on the first file, not fall back: neither do we.
    assert_eq!(node.read("20-fine.conflist"), fine);

    node.write("10-calico.conflist", r#"{"name":"k8s","plugins":{}}"#);
    let err = node.installer.chain().unwrap_err().to_string();
    assert!(
        err.contains("10-calico.conflist") && err.contains("`plugins` is not a list"),
        "{err}"
    );

    // Repaired: chained on the next pass.
    node.write("10-calico.conflist", CALICO);
    assert!(matches!(
        node.installer.chain(),
        Ok(Chained::Written { .. })
    ));
}

#[test]
fn nothing_is_chained_before_the_primary_cni_has_a_config_or_without_the_binary() {
    let node = node();
    node.write("10-calico.conflist", CALICO);
    let err = node.installer.chain().unwrap_err();
    assert!(
        matches!(err, CniInstallError::BinaryMissing { .. }),
        "{err}"
    );
    assert_eq!(node.read("10-calico.conflist"), CALICO);

    let node = node.installed();
    fs::remove_file(node.net.join("10-calico.conflist")).unwrap();
    let err = node.installer.chain().unwrap_err();
    assert!(matches!(err, CniInstallError::NoConfig { .. }), "{err}");
    assert!(
        err.to_string().contains("waiting for the primary CNI"),
        "{err}"
    );
}

#[test]
fn the_binary_is_installed_executable_and_only_when_it_differs() {
    let node = node();
    let dest = node.bin.join("weft-cni");
    assert!(node.installer.install_binary().unwrap());
    assert_eq!(fs::read(&dest).unwrap(), PLUGIN);
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let inode = fs::metadata(&dest).unwrap().ino();

    assert!(!node.installer.install_binary().unwrap());
    assert_eq!(fs::metadata(&dest).unwrap().ino(), inode);

    // A new version replaces the file (a new inode: a running copy is not
    // disturbed).
    fs::write(&node.installer.settings().binary, b"version 2").unwrap();
    assert!(node.installer.install_binary().unwrap());
    assert_eq!(fs::read(&dest).unwrap(), b"version 2");
    assert_ne!(fs::metadata(&dest).unwrap().ino(), inode);
    let names: Vec<_> = fs::read_dir(&node.bin).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind");

    let mut missing = node.installer.settings().clone();
    missing.binary = node.bin.join("nowhere");
    let err = Installer::new(missing).install_binary().unwrap_err();
    assert!(err.to_string().contains("--cni-binary"), "{err}");
}

#[test]
fn uninstall_removes_only_our_entries_and_binary() {
    let node = node().installed();
    node.write("10-calico.conflist", CALICO);
    node.installer.chain().unwrap();
    // A later first config chained too, then replaced as first by another.
    let other = r#"{"name":"o","plugins":[{"type":"ptp"},{"type":"weft-cni"}]}"#;
    node.write("20-other.conflist", other);
    let unrelated = r#"{"name":"u","type":"bridge"}"#;
    node.write("30-unrelated.conf", unrelated);
    fs::write(node.bin.join("bridge"), "another plugin").unwrap();

    let done = uninstall(&node.bin, &node.net);
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert!(done.binary_removed);
    assert_eq!(
        done.unchained,
        [
            node.net.join("10-calico.conflist"),
            node.net.join("20-other.conflist")
        ]
    );
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    assert_eq!(
        node.read("20-other.conflist"),
        "{\n  \"name\": \"o\",\n  \"plugins\": [\n    {\n      \"type\": \"ptp\"\n    }\n  ]\n}\n"
    );
    assert_eq!(node.read("30-unrelated.conf"), unrelated);
    assert!(!node.bin.join("weft-cni").exists());
    assert_eq!(
        fs::read_to_string(node.bin.join("bridge")).unwrap(),
        "another plugin"
    );

    // Again: nothing left to remove.
    let again = uninstall(&node.bin, &node.net);
    assert!(!again.binary_removed && again.unchained.is_empty() && again.errors.is_empty());
}

/// What the watcher's `on_state` told: how many passes, and the last
/// state (0 none yet, 1 chained, 2 not chained).
#[derive(Default)]
struct Passes {
    count: AtomicUsize,
    last: AtomicU8,
}

impl Passes {
    fn last(&self) -> u8 {
        self.last.load(Ordering::SeqCst)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

fn passes() -> (Arc<Passes>, impl Fn(bool) + Send + 'static) {
    let passes = Arc::new(Passes::default());
    let seen = passes.clone();
    (passes, move |chained| {
        seen.last
            .store(if chained { 1 } else { 2 }, Ordering::SeqCst);
        seen.count.fetch_add(1, Ordering::SeqCst);
    })
}

#[tokio::test]
async fn the_watcher_chains_again_whenever_the_primary_cni_rewrites_its_config() {
    let node = node().installed();
    let (passes, on_state) = passes();
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        node.installer
            .clone()
            .keep_chained(on_state, stop.clone())
            .unwrap(),
    );

    // No config yet: waits for the primary CNI.
    eventually("not chained without a config", || passes.last() == 2).await;
    node.write("10-calico.conflist", CALICO);
    eventually("chained once the config appears", || {
        chained(&node.read("10-calico.conflist"))
    })
    .await;
    eventually("reported chained", || passes.last() == 1).await;
    assert_eq!(node.read("10-calico.conflist"), calico_chained());

    // The primary CNI rewrites its config (rename over it), without us.
    node.replace("10-calico.conflist", CALICO);
    eventually("chained again after a rename over it", || {
        node.read("10-calico.conflist") == calico_chained()
    })
    .await;

    // ...or in place.
    fs::write(node.net.join("10-calico.conflist"), CALICO).unwrap();
    eventually("chained again after an in-place write", || {
        node.read("10-calico.conflist") == calico_chained()
    })
    .await;

    // A new first config: chained too.
    node.write(
        "05-cilium.conflist",
        r#"{"name":"cilium","plugins":[{"type":"cilium-cni"}]}"#,
    );
    eventually("chained into the new first config", || {
        chained(&node.read("05-cilium.conflist"))
    })
    .await;

    // A broken first config: left alone, reported, and chained once fixed.
    let broken = "{\"name\": \"cilium\", \"plugins\": [";
    node.replace("05-cilium.conflist", broken);
    eventually("reported not chained", || passes.last() == 2).await;
    assert_eq!(node.read("05-cilium.conflist"), broken);
    node.replace(
        "05-cilium.conflist",
        r#"{"name":"cilium","plugins":[{"type":"cilium-cni"}]}"#,
    );
    eventually("chained once repaired", || {
        chained(&node.read("05-cilium.conflist"))
    })
    .await;
    eventually("reported chained", || passes.last() == 1).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the watcher stops when told")
        .unwrap();
}

#[tokio::test]
async fn uninstall_while_the_agent_runs_is_not_undone_by_its_watcher() {
    let node = node().installed();
    node.write("10-calico.conflist", CALICO);
    let (passes, on_state) = passes();
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        node.installer
            .clone()
            .keep_chained(on_state, stop.clone())
            .unwrap(),
    );
    eventually("chained", || passes.last() == 1).await;
    assert!(chained(&node.read("10-calico.conflist")));

    let done = uninstall(&node.bin, &node.net);
    assert!(done.binary_removed && done.errors.is_empty(), "{done:?}");
    // The watcher's pass after the change saw the binary gone...
    eventually("the watcher saw the uninstall", || passes.last() == 2).await;
    // ...and left the config as uninstall wrote it, even on a later rewrite.
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    let before = passes.count();
    node.replace("10-calico.conflist", CALICO);
    eventually("a pass after the rewrite", || passes.count() > before).await;
    assert_eq!(passes.last(), 2);
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn weft_agent_cni_uninstall_is_a_mode_of_the_binary() {
    let node = node().installed();
    node.write("10-calico.conflist", CALICO);
    node.installer.chain().unwrap();
    let broken = "{\"plugins\": [";
    node.write("20-broken.conflist", broken);
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weft-agent"))
            .arg("cni-uninstall")
            .arg("--cni-bin-dir")
            .arg(&node.bin)
            .arg("--cni-net-dir")
            .arg(&node.net)
            .output()
            .unwrap()
    };

    let out = run();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // A config it cannot read is reported (and fails the command), the
    // rest is done anyway.
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("20-broken.conflist"), "{stderr}");
    assert!(
        stdout.contains(&format!("removed {}", node.bin.join("weft-cni").display())),
        "{stdout}"
    );
    assert!(stdout.contains("removed weft-cni from"), "{stdout}");
    assert!(stdout.contains("10-calico.conflist"), "{stdout}");
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    assert_eq!(node.read("20-broken.conflist"), broken);
    assert!(!node.bin.join("weft-cni").exists());

    fs::remove_file(node.net.join("20-broken.conflist")).unwrap();
    let out = run();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("was not installed"),
        "{out:?}"
    );
}
