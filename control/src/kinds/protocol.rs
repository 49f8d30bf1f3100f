//! Istio's explicit protocol selection: which application protocol a
//! Service or ServiceEntry port carries. The one definition the model
//! (`istio.workload.Port.app_protocol`) and the analysis (`W5001`) share.
//!
//! Semantics follow istio/istio `pkg/config/protocol` (`Parse`) and
//! `pkg/config/kube/conversion.go` (`ConvertProtocol`):
//!
//! - a Kubernetes Service port: UDP by `protocol: UDP`; else its
//!   `appProtocol` if set, else its name, read as `<protocol>` or
//!   `<protocol>-<suffix>` (case-insensitive; `grpc-web` is matched before
//!   the cut at the first `-`); the Kubernetes names `kubernetes.io/h2c`
//!   (HTTP2), `kubernetes.io/ws` (HTTP) and `kubernetes.io/wss` (HTTPS) as
//!   `appProtocol` only; an unknown protocol on a well-known port (25, 53,
//!   3306, 27017) is TCP;
//! - a ServiceEntry port: its `protocol` field alone ([`Protocol::parse`]).
//!
//! One addition to Istio: `h2c` (as a name prefix or `appProtocol`) is
//! HTTP2, as `kubernetes.io/h2c` is; Istio leaves it unknown.

/// An application protocol, as Istio's `protocol.Instance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tcp,
    Tls,
    Mongo,
    Mysql,
    Redis,
    Udp,
    /// Not declared, or not a protocol Istio knows: sniffed by a sidecar,
    /// opaque TCP to a node proxy.
    Unsupported,
}

/// Ports Istio takes as TCP when no protocol is declared (SMTP, DNS,
/// MySQL, MongoDB): sniffing would break their server-first protocols.
const WELL_KNOWN_TCP_PORTS: [u32; 4] = [25, 53, 3306, 27017];

impl Protocol {
    /// A protocol's name, case-insensitive (Istio's `protocol.Parse`, plus
    /// `h2c`); anything else is [`Protocol::Unsupported`].
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" | "h2c" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// The protocol of a Kubernetes Service port (Istio's
    /// `kube.ConvertProtocol`): `l4` is the port's `protocol` (TCP when
    /// empty), `app_protocol` its `appProtocol` (an empty one counts as
    /// unset; Kubernetes does not accept it).
    pub fn of_service_port(
        port: u32,
        name: &str,
        l4: Option<&str>,
        app_protocol: Option<&str>,
    ) -> Protocol {
        if l4 == Some("UDP") {
            return Protocol::Udp;
        }
        let declared = match app_protocol.filter(|a| !a.is_empty()) {
            Some("kubernetes.io/h2c") => return Protocol::Http2,
            Some("kubernetes.io/ws") => return Protocol::Http,
            Some("kubernetes.io/wss") => return Protocol::Https,
            Some(a) => a,
            None => name,
        };
        let protocol = Protocol::of_name(declared);
        if protocol == Protocol::Unsupported && WELL_KNOWN_TCP_PORTS.contains(&port) {
            return Protocol::Tcp;
        }
        protocol
    }

    /// `<protocol>` or `<protocol>-<suffix>`; `grpc-web` first, as any
    /// name that starts with it (`grpc-webx` included, as in Istio).
    fn of_name(name: &str) -> Protocol {
        const GRPC_WEB: &str = "grpc-web";
        if name
            .get(..GRPC_WEB.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GRPC_WEB))
        {
            return Protocol::GrpcWeb;
        }
        Protocol::parse(name.split_once('-').map_or(name, |(prefix, _)| prefix))
    }

    /// HTTP of any version (Istio's `IsHTTP`): routing and L7 policy
    /// apply.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub fn is_unsupported(self) -> bool {
        self == Protocol::Unsupported
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "Mongo",
            Protocol::Mysql => "MySQL",
            Protocol::Redis => "Redis",
            Protocol::Udp => "UDP",
            Protocol::Unsupported => "UnsupportedProtocol",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::{self, *};

    fn named(name: &str) -> Protocol {
        Protocol::of_service_port(8080, name, None, None)
    }

    fn app(app_protocol: &str) -> Protocol {
        Protocol::of_service_port(8080, "", None, Some(app_protocol))
    }

    #[test]
    fn every_protocol_by_name_by_app_protocol_and_parsed() {
        for (text, want) in [
            ("http", Http),
            ("http2", Http2),
            ("https", Https),
            ("tcp", Tcp),
            ("tls", Tls),
            ("grpc", Grpc),
            ("grpc-web", GrpcWeb),
            ("mongo", Mongo),
            ("mysql", Mysql),
            ("redis", Redis),
            ("udp", Udp),
            ("http_proxy", HttpProxy),
            ("h2c", Http2),
            ("foo", Unsupported),
            ("", Unsupported),
        ] {
            assert_eq!(named(text), want, "name {text:?}");
            assert_eq!(app(text), if text.is_empty() { Unsupported } else { want });
            assert_eq!(Protocol::parse(text), want, "parse {text:?}");
            assert_eq!(Protocol::parse(&text.to_uppercase()), want, "parse upper");
        }
    }

    #[test]
    fn kubernetes_app_protocols() {
        assert_eq!(app("kubernetes.io/h2c"), Http2);
        assert_eq!(app("kubernetes.io/ws"), Http);
        assert_eq!(app("kubernetes.io/wss"), Https);
        // Only as appProtocol (a port name cannot hold a `/` anyway), and
        // not by `Parse` (a ServiceEntry's protocol field).
        assert_eq!(named("kubernetes.io/h2c"), Unsupported);
        assert_eq!(Protocol::parse("kubernetes.io/h2c"), Unsupported);
        assert_eq!(app("example.com/custom"), Unsupported);
    }

    #[test]
    fn name_prefixes_and_case() {
        assert_eq!(named("http-foo"), Http);
        assert_eq!(named("http-"), Http);
        assert_eq!(named("httpfoo"), Unsupported, "no `-`: not a prefix");
        assert_eq!(named("http2-api"), Http2);
        assert_eq!(named("HTTP-Foo"), Http);
        assert_eq!(named("Http2"), Http2);
        assert_eq!(named("grpc-web"), GrpcWeb);
        assert_eq!(named("GRPC-Web-ui"), GrpcWeb);
        assert_eq!(named("grpc-webui"), GrpcWeb, "Istio matches the 8 bytes");
        assert_eq!(named("grpc-api"), Grpc);
        assert_eq!(named("grpc-wet"), Grpc);
        assert_eq!(named("tcp-db"), Tcp);
        assert_eq!(named("tls-x"), Tls);
        assert_eq!(named("h2c-x"), Http2);
        assert_eq!(named("-http"), Unsupported);
        assert_eq!(named("web"), Unsupported);
        // appProtocol takes prefixes too (Istio cuts whatever it reads).
        assert_eq!(app("http-v1"), Http);
        assert_eq!(app("GRPC"), Grpc);
    }

    #[test]
    fn app_protocol_wins_over_the_name() {
        let p = |name, app| Protocol::of_service_port(80, name, None, Some(app));
        assert_eq!(p("http", "grpc"), Grpc);
        assert_eq!(p("grpc", "tcp"), Tcp);
        // An unknown appProtocol is not a reason to read the name.
        assert_eq!(p("http", "custom"), Unsupported);
        // An empty one is unset.
        assert_eq!(p("http", ""), Http);
    }

    #[test]
    fn udp_and_well_known_ports() {
        assert_eq!(
            Protocol::of_service_port(53, "dns", Some("UDP"), Some("http")),
            Udp
        );
        assert_eq!(
            Protocol::of_service_port(80, "http", Some("TCP"), None),
            Http
        );
        for port in [25, 53, 3306, 27017] {
            assert_eq!(Protocol::of_service_port(port, "db", None, None), Tcp);
            assert_eq!(
                Protocol::of_service_port(port, "http", None, None),
                Http,
                "a declared protocol wins"
            );
        }
        assert_eq!(
            Protocol::of_service_port(3307, "db", None, None),
            Unsupported
        );
    }

    #[test]
    fn http_family() {
        for p in [Http, Http2, HttpProxy, Grpc, GrpcWeb] {
            assert!(p.is_http(), "{p}");
        }
        for p in [Https, Tcp, Tls, Mongo, Mysql, Redis, Udp, Unsupported] {
            assert!(!p.is_http(), "{p}");
        }
    }
}
