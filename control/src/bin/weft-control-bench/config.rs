//! The benchmark's configuration: written as a directory of
//! Kubernetes-style YAML, which directory mode watches and Kubernetes
//! mode loads into the API server stand-in object by object (one source
//! of truth for both modes).

use std::{fmt::Write as _, path::Path};

use crate::Sizes;

/// Pods per file; a one-pod change moves the first pod of a file.
pub const PODS_PER_FILE: usize = 100;

pub fn namespace(i: usize) -> String {
    format!("ns-{i}")
}

pub fn write_config(dir: &Path, sizes: &Sizes) -> anyhow::Result<()> {
    let mut ns = String::new();
    for i in 0..sizes.namespaces {
        writeln!(
            ns,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels: {{istio.io/dataplane-mode: ambient}}",
            namespace(i)
        )?;
    }
    ns.push_str("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n");
    std::fs::write(dir.join("namespaces.yaml"), ns)?;

    std::fs::create_dir_all(dir.join("services"))?;
    for chunk in 0..sizes.services.div_ceil(100) {
        let mut text = String::new();
        for s in chunk * 100..((chunk + 1) * 100).min(sizes.services) {
            writeln!(
                text,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  selector: {{app: svc-{s}}}\n  clusterIP: 10.{a}.{b}.{c}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}",
                ns = namespace(s % sizes.namespaces),
                a = 96 + s / 65536,
                b = (s / 256) % 256,
                c = s % 256,
            )?;
        }
        std::fs::write(dir.join(format!("services/{chunk:04}.yaml")), text)?;
    }

    std::fs::create_dir_all(dir.join("routes"))?;
    for chunk in 0..sizes.routes.div_ceil(100) {
        let mut text = String::new();
        for s in chunk * 100..((chunk + 1) * 100).min(sizes.routes) {
            let ns = namespace(s % sizes.namespaces);
            writeln!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  host: svc-{s}\n  trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  hosts: [svc-{s}]\n  http:\n  - match: [{{headers: {{x-canary: {{exact: 'true'}}}}}}]\n    route: [{{destination: {{host: svc-{s}, subset: v2}}}}]\n  - route:\n    - {{destination: {{host: svc-{s}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc-{s}, subset: v2}}, weight: 10}}\n    retries: {{attempts: 3, perTryTimeout: 2s}}\n    timeout: 10s"
            )?;
        }
        std::fs::write(dir.join(format!("routes/{chunk:04}.yaml")), text)?;
    }

    std::fs::create_dir_all(dir.join("pods"))?;
    for file in 0..sizes.pods.div_ceil(PODS_PER_FILE) {
        std::fs::write(
            dir.join(format!("pods/{file:05}.yaml")),
            pod_file(sizes, file, 0),
        )?;
    }
    Ok(())
}

/// One file of pods; `generation` moves the first pod's IP.
fn pod_file(sizes: &Sizes, file: usize, generation: usize) -> String {
    let mut text = String::new();
    for p in file * PODS_PER_FILE..((file + 1) * PODS_PER_FILE).min(sizes.pods) {
        let s = p % sizes.services;
        let gen_here = if p == file * PODS_PER_FILE {
            generation
        } else {
            0
        };
        let _ = writeln!(
            text,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: {ns}\n  labels: {{app: svc-{s}, version: v{v}}}\nspec:\n  nodeName: node-{node}\n  serviceAccountName: svc-{s}\n  containers:\n  - name: app\n    ports: [{{name: http, containerPort: 8080}}]\nstatus:\n  podIP: {ip}",
            ns = namespace(s % sizes.namespaces),
            v = 1 + p % 2,
            node = p % sizes.agents,
            ip = pod_ip(sizes, p, gen_here),
        );
    }
    text
}

/// The pod that a change to `file` moves, and its namespace.
pub fn changed_pod(sizes: &Sizes, file: usize) -> (String, String) {
    let p = file * PODS_PER_FILE;
    (
        format!("pod-{p}"),
        namespace(p % sizes.services % sizes.namespaces),
    )
}

/// Pod `p`'s IP; a `generation` above 0 moves it outside the first
/// `sizes.pods` addresses (a different one per file and generation).
pub fn pod_ip(sizes: &Sizes, p: usize, generation: usize) -> String {
    let file = p / PODS_PER_FILE;
    let i = if generation > 0 {
        sizes.pods + generation * 1000 + file
    } else {
        p
    };
    format!("10.{}.{}.{}", 1 + i / 65536 % 60, (i / 256) % 256, i % 256)
}

pub fn rewrite_pod_file(
    dir: &Path,
    sizes: &Sizes,
    file: usize,
    generation: usize,
) -> anyhow::Result<()> {
    let path = dir.join(format!("pods/{file:05}.yaml"));
    let tmp = dir.join(format!("pods/.{file:05}.yaml.tmp"));
    std::fs::write(&tmp, pod_file(sizes, file, generation))?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}
