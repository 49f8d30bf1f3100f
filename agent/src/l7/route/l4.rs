//! A VirtualService's `tcp` and `tls` routes, for service ports that stay
//! at L4: connections (not requests) are matched, by destination port and
//! subnet, source namespace, labels and subnet, and for `tls` routes the
//! SNI of the client's hello; the connection then goes to one of the
//! route's weighted destinations.

use std::net::{IpAddr, SocketAddr};

use weft_proto::route as pb;

use super::{
    HeaderOps, RouteError,
    destination::{self, Destination, WeightedDestination},
};

/// What L4 matching reads from a connection.
pub struct ConnectionView<'a> {
    /// The address the client connected to (the service's VIP and port).
    pub destination: SocketAddr,
    pub source_ip: IpAddr,
    pub source_namespace: &'a str,
    /// The client's workload uid.
    pub source_workload: &'a str,
    /// The SNI of the client's TLS hello, if it sent one.
    pub sni: Option<&'a str>,
}

/// One compiled `tcp` or `tls` route.
#[derive(Debug, Clone)]
pub struct L4Route {
    /// The VirtualService it comes from, "ns/name".
    pub virtual_service: String,
    export_to: Option<Vec<String>>,
    matches: Vec<L4Match>,
    destinations: Vec<WeightedDestination>,
}

#[derive(Debug, Clone, Default)]
struct L4Match {
    destination_subnets: Vec<Cidr>,
    port: u16,
    source_subnet: Option<Cidr>,
    source_namespace: String,
    /// `Some` when the match names source labels: the matching workloads.
    source_workloads: Option<Vec<String>>,
    /// `tls` routes: SNI values (`*.example.com` matches any prefix).
    sni_hosts: Vec<String>,
}

impl L4Route {
    /// Whether `conn` selects this route.
    pub fn applies(&self, conn: &ConnectionView<'_>) -> bool {
        let visible = self.export_to.as_ref().is_none_or(|ns| {
            ns.binary_search_by(|n| n.as_str().cmp(conn.source_namespace))
                .is_ok()
        });
        visible && (self.matches.is_empty() || self.matches.iter().any(|m| m.applies(conn)))
    }

    /// Weighted choice of a destination (`roll`: uniform random).
    pub fn pick(&self, roll: u32) -> Option<&Destination> {
        destination::pick(&self.destinations, roll).map(|d| &d.destination)
    }

    /// Whose DestinationRule gives the TCP proxy its own settings (idle
    /// timeout, longest duration, source-IP hash), as (service, subset):
    /// istiod looks up one rule, the first destination's service's, and
    /// for a route with several destinations reads its top level alone
    /// (`buildOutboundNetworkFiltersWithWeightedClusters`).
    pub fn proxy_settings_of(&self) -> Option<(&str, &str)> {
        let first = &self.destinations.first()?.destination;
        let subset = match self.destinations.len() {
            1 => first.subset.as_str(),
            _ => "",
        };
        Some((first.service.as_str(), subset))
    }

    pub(crate) fn compile_tcp(
        r: &pb::TcpRoute,
        index: usize,
        table: &str,
    ) -> Result<Self, RouteError> {
        let route = route_name(r.virtual_service.as_ref(), index, table, "tcp");
        let matches = r
            .r#match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let field = format!("match[{i}]");
                Ok(L4Match {
                    destination_subnets: cidrs(&m.destination_subnets, &route, &field)?,
                    port: port(m.port, &route, &field)?,
                    source_subnet: (!m.source_subnet.is_empty())
                        .then(|| {
                            Cidr::parse(&m.source_subnet, &route, &format!("{field}.sourceSubnet"))
                        })
                        .transpose()?,
                    source_namespace: m.source_namespace.clone(),
                    source_workloads: source_workloads(&m.source_labels, &m.source_workloads),
                    sni_hosts: Vec::new(),
                })
            })
            .collect::<Result<_, RouteError>>()?;
        Ok(L4Route {
            virtual_service: vs_name(r.virtual_service.as_ref()),
            export_to: export_to(r.export_to.as_ref()),
            matches,
            destinations: destinations(&r.route, &route)?,
        })
    }

    pub(crate) fn compile_tls(
        r: &pb::TlsRoute,
        index: usize,
        table: &str,
    ) -> Result<Self, RouteError> {
        let route = route_name(r.virtual_service.as_ref(), index, table, "tls");
        let matches = r
            .r#match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let field = format!("match[{i}]");
                Ok(L4Match {
                    destination_subnets: cidrs(&m.destination_subnets, &route, &field)?,
                    port: port(m.port, &route, &field)?,
                    source_subnet: None,
                    source_namespace: m.source_namespace.clone(),
                    source_workloads: source_workloads(&m.source_labels, &m.source_workloads),
                    sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                })
            })
            .collect::<Result<_, RouteError>>()?;
        Ok(L4Route {
            virtual_service: vs_name(r.virtual_service.as_ref()),
            export_to: export_to(r.export_to.as_ref()),
            matches,
            destinations: destinations(&r.route, &route)?,
        })
    }
}

impl L4Match {
    fn applies(&self, conn: &ConnectionView<'_>) -> bool {
        (self.port == 0 || self.port == conn.destination.port())
            && (self.destination_subnets.is_empty()
                || self
                    .destination_subnets
                    .iter()
                    .any(|c| c.contains(conn.destination.ip())))
            && self
                .source_subnet
                .as_ref()
                .is_none_or(|c| c.contains(conn.source_ip))
            && (self.source_namespace.is_empty() || self.source_namespace == conn.source_namespace)
            && self.source_workloads.as_ref().is_none_or(|uids| {
                uids.binary_search_by(|u| u.as_str().cmp(conn.source_workload))
                    .is_ok()
            })
            && (self.sni_hosts.is_empty()
                || conn
                    .sni
                    .is_some_and(|sni| self.sni_hosts.iter().any(|h| sni_matches(h, sni))))
    }
}

/// `*.example.com` matches any name ending in `.example.com`; anything
/// else must be equal (case-insensitive).
fn sni_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => sni.len() > suffix.len() && ends_with_ignore_case(sni, suffix),
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn route_name(vs: Option<&pb::ConfigRef>, index: usize, table: &str, kind: &str) -> String {
    match vs {
        Some(vs) => format!(
            "{kind} route {index} of {}/{} (for {table})",
            vs.namespace, vs.name
        ),
        None => format!("{kind} route {index} of {table}"),
    }
}

fn vs_name(vs: Option<&pb::ConfigRef>) -> String {
    vs.map(|vs| format!("{}/{}", vs.namespace, vs.name))
        .unwrap_or_default()
}

fn export_to(v: Option<&pb::Visibility>) -> Option<Vec<String>> {
    v.filter(|v| !v.namespaces.is_empty()).map(|v| {
        let mut ns = v.namespaces.clone();
        ns.sort_unstable();
        ns
    })
}

fn source_workloads(
    labels: &std::collections::BTreeMap<String, String>,
    uids: &[String],
) -> Option<Vec<String>> {
    (!labels.is_empty()).then(|| {
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids
    })
}

fn port(p: u32, route: &str, field: &str) -> Result<u16, RouteError> {
    u16::try_from(p).map_err(|_| RouteError::Invalid {
        route: route.to_string(),
        field: format!("{field}.port"),
        reason: format!("{p} is not a port"),
    })
}

fn destinations(
    route: &[pb::RouteDestination],
    name: &str,
) -> Result<Vec<WeightedDestination>, RouteError> {
    route
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("route[{i}]");
            Ok(WeightedDestination {
                destination: Destination::compile(
                    d.destination.as_ref(),
                    name,
                    &format!("{field}.destination"),
                )?,
                weight: u32::try_from(d.weight).map_err(|_| RouteError::Invalid {
                    route: name.to_string(),
                    field: format!("{field}.weight"),
                    reason: format!("negative weight {}", d.weight),
                })?,
                headers: HeaderOps::default(),
            })
        })
        .collect()
}

fn cidrs(list: &[String], route: &str, field: &str) -> Result<Vec<Cidr>, RouteError> {
    list.iter()
        .enumerate()
        .map(|(i, c)| Cidr::parse(c, route, &format!("{field}.destinationSubnets[{i}]")))
        .collect()
}

// === impl dump (the admin API's config dump) ===

impl L4Route {
    /// The VirtualService, its matches and weighted destinations.
    pub fn dump(&self) -> serde_json::Value {
        let matches: Vec<serde_json::Value> = self
            .matches
            .iter()
            .map(|m| {
                let mut out = serde_json::Map::new();
                if m.port != 0 {
                    out.insert("port".into(), m.port.into());
                }
                if !m.destination_subnets.is_empty() {
                    let subnets: Vec<String> = m
                        .destination_subnets
                        .iter()
                        .map(|c| format!("{}/{}", c.network, c.prefix))
                        .collect();
                    out.insert("destination_subnets".into(), subnets.into());
                }
                if let Some(c) = &m.source_subnet {
                    out.insert(
                        "source_subnet".into(),
                        format!("{}/{}", c.network, c.prefix).into(),
                    );
                }
                if !m.source_namespace.is_empty() {
                    out.insert("source_namespace".into(), m.source_namespace.clone().into());
                }
                if let Some(w) = &m.source_workloads {
                    out.insert("source_workloads".into(), w.clone().into());
                }
                if !m.sni_hosts.is_empty() {
                    out.insert("sni_hosts".into(), m.sni_hosts.clone().into());
                }
                serde_json::Value::Object(out)
            })
            .collect();
        serde_json::json!({
            "virtual_service": self.virtual_service,
            "export_to": self.export_to,
            "match": matches,
            "route": self.destinations.iter().map(WeightedDestination::dump).collect::<Vec<_>>(),
        })
    }
}

/// An address block (`10.0.0.0/8`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str, route: &str, field: &str) -> Result<Cidr, RouteError> {
        let invalid = |reason: &str| RouteError::Invalid {
            route: route.to_string(),
            field: field.to_string(),
            reason: format!("`{text}`: {reason}"),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| invalid("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| invalid("bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(subset: &str, weight: i32) -> pb::RouteDestination {
        pb::RouteDestination {
            destination: Some(pb::Destination {
                host: "db.default.svc.cluster.local".into(),
                subset: subset.into(),
                port: 5432,
                service: "default/db.default.svc.cluster.local".into(),
                endpoints: None,
            }),
            weight,
        }
    }

    fn conn<'a>(port: u16, ns: &'a str, uid: &'a str, sni: Option<&'a str>) -> ConnectionView<'a> {
        ConnectionView {
            destination: SocketAddr::new("10.96.0.5".parse().unwrap(), port),
            source_ip: "10.1.2.3".parse().unwrap(),
            source_namespace: ns,
            source_workload: uid,
            sni,
        }
    }

    #[test]
    fn tcp_matches_port_subnets_namespace_and_labels() {
        let route = pb::TcpRoute {
            virtual_service: None,
            export_to: None,
            r#match: vec![pb::L4MatchAttributes {
                destination_subnets: vec!["10.96.0.0/16".into()],
                port: 5432,
                source_subnet: "10.1.0.0/16".into(),
                source_namespace: "app".into(),
                source_labels: [("tier".to_string(), "web".to_string())].into(),
                source_workloads: vec!["w2".into(), "w1".into()],
            }],
            route: vec![dest("v1", 100)],
        };
        let r = L4Route::compile_tcp(&route, 0, "default/db").unwrap();
        assert!(r.applies(&conn(5432, "app", "w1", None)));
        assert!(!r.applies(&conn(5433, "app", "w1", None)), "port");
        assert!(!r.applies(&conn(5432, "other", "w1", None)), "namespace");
        assert!(!r.applies(&conn(5432, "app", "w3", None)), "labels");
        assert_eq!(r.pick(7).unwrap().subset, "v1");
        // One destination: its rule, for its subset.
        assert_eq!(
            r.proxy_settings_of(),
            Some(("default/db.default.svc.cluster.local", "v1"))
        );
    }

    #[test]
    fn tls_matches_sni_with_wildcards() {
        let route = pb::TlsRoute {
            virtual_service: None,
            export_to: Some(pb::Visibility {
                namespaces: vec!["app".into()],
            }),
            r#match: vec![pb::TlsMatchAttributes {
                sni_hosts: vec!["*.example.com".into(), "db.internal".into()],
                ..Default::default()
            }],
            route: vec![dest("a", 50), dest("b", 50)],
        };
        let r = L4Route::compile_tls(&route, 0, "default/db").unwrap();
        assert!(r.applies(&conn(443, "app", "w", Some("api.Example.com"))));
        assert!(r.applies(&conn(443, "app", "w", Some("db.internal"))));
        assert!(!r.applies(&conn(443, "app", "w", Some("example.com"))));
        assert!(!r.applies(&conn(443, "app", "w", None)));
        assert!(
            !r.applies(&conn(443, "other", "w", Some("db.internal"))),
            "exportTo"
        );
        let picked: std::collections::BTreeSet<_> = (0..100u32)
            .map(|i| r.pick(i.wrapping_mul(0x9E37_79B9)).unwrap().subset.clone())
            .collect();
        assert_eq!(picked.len(), 2);
        // Weighted: the first destination's rule, its top level.
        assert_eq!(
            r.proxy_settings_of(),
            Some(("default/db.default.svc.cluster.local", ""))
        );
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8", "r", "f").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33", "r", "f").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0", "r", "f")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8", "r", "f")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
    }
}
