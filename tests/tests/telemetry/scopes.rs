//! Which workloads a Telemetry's `metrics` reach: one bound to a Service
//! by `targetRef` that names no Prometheus provider turns off the metrics
//! of that Service's pods, and only theirs, until it is removed.

use anyhow::{Result, ensure};
use weft_sim::{Cluster, ServicePort, httpapp};

use super::common::*;
use super::{scrape, total};

#[test]
fn a_target_ref_telemetry_without_prometheus_turns_off_its_services_metrics() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "front"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let port = [ServicePort::http("http", 8080, 8080)];
        let _api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let _db = backend(cluster, "node-2", "shop", "db", &[("app", "db")], 8080, &[])?;
        let api = cluster.add_service("shop", "api", &[("app", "api")], &port)?;
        let db = cluster.add_service("shop", "db", &[("app", "db")], &port)?;
        let web = client(cluster, "node-1", "front", "web")?;
        // Requests to `destination_workload` counted by `node`'s agent as
        // `reporter`.
        let counted = |node: &str, reporter: &str, destination: &str| -> Result<f64> {
            Ok(total(
                &scrape(cluster, node, "istio_requests_total")?,
                &[("reporter", reporter), ("source_workload", "web"), ("destination_workload", destination)],
            ))
        };
        // Five requests to each; what each count grew by: api's and db's at
        // the destination, api's at the source.
        let five_each = || -> Result<[f64; 3]> {
            let before = [counted("node-2", "destination", "api")?, counted("node-2", "destination", "db")?, counted("node-1", "source", "api")?];
            for vip in [api, db] {
                let load = httpapp::load(&web, &format!("http://{vip}:8080/"), &["--count", "5"])?;
                ensure!(load.ok == 5, "{load:?}");
            }
            std::thread::sleep(LOG_SETTLE);
            let after = [counted("node-2", "destination", "api")?, counted("node-2", "destination", "db")?, counted("node-1", "source", "api")?];
            Ok([after[0] - before[0], after[1] - before[1], after[2] - before[2]])
        };
        converge("both destinations reporting", || Ok(five_each()? == [5.0, 5.0, 5.0]))?;

        apply(
            cluster,
            "api-metrics",
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: api-metrics\n  namespace: shop\nspec:\n  targetRef:\n    kind: Service\n    group: \"\"\n    name: api\n  metrics:\n  - providers:\n    - name: stackdriver\n",
        )?;
        // api's pod stops; db, in the same namespace, and web's side of
        // the requests to api go on.
        converge("api's metrics off", || Ok(five_each()? == [0.0, 5.0, 5.0]))?;
        let grew = five_each()?;
        ensure!(grew == [0.0, 5.0, 5.0], "api off, db and the source side on: {grew:?}");

        cluster.remove_config_file("api-metrics.yaml")?;
        converge("api's metrics back", || Ok(five_each()? == [5.0, 5.0, 5.0]))?;
        Ok(())
    })
}
