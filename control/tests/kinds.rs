//! Every kind under every served apiVersion: a realistic object (field
//! names and values from Istio's, the Gateway API's and Kubernetes' own
//! schemas and examples) loads with no error, and broken variants (an
//! unknown field, a wrong type, a broken value rule) are rejected with
//! the file, the line and column of the offending field, the object, the
//! field path and the reason. Also: a version the kind is not served as
//! is refused at `apiVersion`.
//!
//! Documents are written with `{api}` for the apiVersion, which is always
//! on line 1, so positions do not depend on the version.

use std::path::Path;

use weft_control::{
    source::{FileError, parse::parse_file},
    validate::{Report, validate_dir},
};

/// One kind: the versions it is served as, a valid file, and broken ones.
struct Kind {
    kind: &'static str,
    served: &'static [&'static str],
    /// A version of the same API group that is not served.
    unserved: &'static str,
    /// One or more documents, all valid.
    valid: &'static str,
    /// The keys of `valid`'s objects, in order.
    keys: &'static [&'static str],
    invalid: &'static [Reject],
}

/// A broken variant and the one error it must produce.
struct Reject {
    what: &'static str,
    yaml: &'static str,
    /// 1-based line and column of the offending node.
    at: (usize, usize),
    object: &'static str,
    path: &'static str,
    /// The reason starts with this.
    reason: &'static str,
}

const ISTIO_NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const ISTIO_TELEMETRY: &[&str] = &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];
const GATEWAY_API: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

const KINDS: &[Kind] = &[
    // === networking.istio.io ===
    Kind {
        kind: "VirtualService",
        served: ISTIO_NETWORKING,
        unserved: "networking.istio.io/v1alpha2",
        valid: VIRTUAL_SERVICE,
        keys: &[
            "VirtualService bookinfo/reviews",
            "VirtualService backend/mongo",
        ],
        invalid: &[
            Reject {
                what: "weights not summing to 100",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 60
    - destination: {host: reviews, subset: v2}
      weight: 50
"#,
                at: (10, 7),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].route",
                reason: "route weights sum to 110 (60 + 50), must be 100",
            },
            Reject {
                what: "unknown field (weight inside destination)",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        weight: 100
"#,
                at: (12, 9),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].route[0].destination.weight",
                reason: "unknown field `weight`, expected one of `host`, `subset`, `port`",
            },
            Reject {
                what: "bad regex",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "[a-"
    route:
    - destination: {host: reviews}
"#,
                at: (11, 16),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].match[0].uri.regex",
                reason: "regex `[a-` does not compile: ",
            },
            Reject {
                what: "wrong type",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: three
"#,
                at: (12, 17),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].retries.attempts",
                reason: "expected an integer (32 bits), found `three`",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: mongo
  namespace: backend
spec:
  hosts: [mongo.backend.svc.cluster.local]
  tcp:
  - match:
    - port: 70000
    route:
    - destination: {host: mongo.backend.svc.cluster.local}
"#,
                at: (10, 13),
                object: "VirtualService backend/mongo",
                path: "spec.tcp[0].match[0].port",
                reason: "70000 is not a port number (1-65535)",
            },
            Reject {
                what: "bad CIDR in destinationSubnets",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: mongo
  namespace: backend
spec:
  hosts: [mongo.backend.svc.cluster.local]
  tcp:
  - match:
    - destinationSubnets: [10.0.0.0/33]
    route:
    - destination: {host: mongo.backend.svc.cluster.local}
"#,
                at: (10, 28),
                object: "VirtualService backend/mongo",
                path: "spec.tcp[0].match[0].destinationSubnets[0]",
                reason: "`10.0.0.0/33`: the prefix length must be 0-32",
            },
            Reject {
                what: "bad CIDR in sourceSubnet",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: mongo
  namespace: backend
spec:
  hosts: [mongo.backend.svc.cluster.local]
  tcp:
  - match:
    - sourceSubnet: 10.0.0.0/8x
    route:
    - destination: {host: mongo.backend.svc.cluster.local}
"#,
                at: (10, 21),
                object: "VirtualService backend/mongo",
                path: "spec.tcp[0].match[0].sourceSubnet",
                reason: "`10.0.0.0/8x`: the prefix length must be 0-32",
            },
        ],
    },
    Kind {
        kind: "DestinationRule",
        served: ISTIO_NETWORKING,
        unserved: "networking.istio.io/v1alpha2",
        valid: DESTINATION_RULE,
        keys: &["DestinationRule bookinfo/reviews"],
        invalid: &[
            Reject {
                what: "invalid load balancer enum",
                yaml: r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBBIN
"#,
                at: (10, 15),
                object: "DestinationRule bookinfo/reviews",
                path: "spec.trafficPolicy.loadBalancer.simple",
                reason: "`ROUND_ROBBIN` is not one of `UNSPECIFIED`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`",
            },
            Reject {
                what: "subset defined twice",
                yaml: r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
"#,
                at: (11, 11),
                object: "DestinationRule bookinfo/reviews",
                path: "spec.subsets[1].name",
                reason: "subset `v1` is defined twice",
            },
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      baseEjectionTimes: 30s
"#,
                at: (11, 7),
                object: "DestinationRule bookinfo/reviews",
                path: "spec.trafficPolicy.outlierDetection.baseEjectionTimes",
                reason: "unknown field `baseEjectionTimes`",
            },
            Reject {
                what: "bad duration",
                yaml: r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 30 seconds
"#,
                at: (11, 25),
                object: "DestinationRule bookinfo/reviews",
                path: "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                reason: "`30 seconds` is not a duration",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 0
      loadBalancer: {simple: RANDOM}
"#,
                at: (11, 17),
                object: "DestinationRule bookinfo/reviews",
                path: "spec.trafficPolicy.portLevelSettings[0].port.number",
                reason: "0 is not a port number (1-65535)",
            },
        ],
    },
    Kind {
        kind: "Gateway",
        served: ISTIO_NETWORKING,
        unserved: "networking.istio.io/v1alpha2",
        valid: ISTIO_GATEWAY,
        keys: &["Gateway istio-ingress/bookinfo-gateway"],
        invalid: &[
            Reject {
                what: "unknown protocol",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTPX
    hosts: ["*"]
"#,
                at: (13, 17),
                object: "Gateway istio-ingress/bookinfo-gateway",
                path: "spec.servers[0].port.protocol",
                reason: "`HTTPX` is not a protocol",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 70000
      name: http
      protocol: HTTP
    hosts: ["*"]
"#,
                at: (11, 15),
                object: "Gateway istio-ingress/bookinfo-gateway",
                path: "spec.servers[0].port.number",
                reason: "70000 is not a port number (1-65535)",
            },
            Reject {
                what: "invalid TLS mode enum",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls:
      mode: STRICT
      credentialName: bookinfo-cert
"#,
                at: (13, 13),
                object: "Gateway istio-ingress/bookinfo-gateway",
                path: "spec.servers[0].tls.mode",
                reason: "`STRICT` is not one of `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`",
            },
            Reject {
                what: "HTTPS without tls (reported at the server)",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
"#,
                at: (10, 5),
                object: "Gateway istio-ingress/bookinfo-gateway",
                path: "spec.servers[0].tls",
                reason: "an HTTPS server needs `tls`",
            },
        ],
    },
    Kind {
        kind: "ServiceEntry",
        served: ISTIO_NETWORKING,
        unserved: "networking.istio.io/v1alpha2",
        valid: SERVICE_ENTRY,
        keys: &[
            "ServiceEntry egress/external-api",
            "ServiceEntry egress/legacy-db",
        ],
        invalid: &[
            Reject {
                what: "bad CIDR",
                yaml: r#"apiVersion: {api}
kind: ServiceEntry
metadata:
  name: external-api
  namespace: egress
spec:
  hosts: [api.example.com]
  addresses:
  - 240.240.0.0/33
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
"#,
                at: (9, 5),
                object: "ServiceEntry egress/external-api",
                path: "spec.addresses[0]",
                reason: "`240.240.0.0/33`: the prefix length must be 0-32",
            },
            Reject {
                what: "invalid resolution enum",
                yaml: r#"apiVersion: {api}
kind: ServiceEntry
metadata:
  name: external-api
  namespace: egress
spec:
  hosts: [api.example.com]
  addresses:
  - 240.240.0.0/16
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS_LOOKUP
"#,
                at: (12, 15),
                object: "ServiceEntry egress/external-api",
                path: "spec.resolution",
                reason: "`DNS_LOOKUP` is not one of `NONE`, `STATIC`, `DNS`, `DNS_ROUND_ROBIN`",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: ServiceEntry
metadata:
  name: external-api
  namespace: egress
spec:
  hosts: [api.example.com]
  addresses:
  - 240.240.0.0/16
  ports:
  - {number: 0, name: https, protocol: TLS}
  resolution: DNS
"#,
                at: (11, 14),
                object: "ServiceEntry egress/external-api",
                path: "spec.ports[0].number",
                reason: "0 is not a port number (1-65535)",
            },
            Reject {
                what: "STATIC with a host name endpoint",
                yaml: r#"apiVersion: {api}
kind: ServiceEntry
metadata:
  name: legacy-db
  namespace: egress
spec:
  hosts: [db.legacy.internal]
  ports:
  - {number: 5432, name: tcp-postgres, protocol: TCP}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: db.legacy.internal
"#,
                at: (13, 14),
                object: "ServiceEntry egress/legacy-db",
                path: "spec.endpoints[0].address",
                reason: "resolution STATIC needs IP addresses",
            },
        ],
    },
    Kind {
        kind: "WorkloadEntry",
        served: ISTIO_NETWORKING,
        unserved: "networking.istio.io/v1alpha2",
        valid: WORKLOAD_ENTRY,
        keys: &["WorkloadEntry bookinfo/details-vm"],
        invalid: &[
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: WorkloadEntry
metadata:
  name: details-vm
  namespace: bookinfo
spec:
  address: 2.2.2.2
  ports:
    http: 0
"#,
                at: (9, 11),
                object: "WorkloadEntry bookinfo/details-vm",
                path: "spec.ports.http",
                reason: "0 is not a port number (1-65535)",
            },
            Reject {
                what: "address with a port",
                yaml: r#"apiVersion: {api}
kind: WorkloadEntry
metadata:
  name: details-vm
  namespace: bookinfo
spec:
  address: "10.0.0.1:8080"
"#,
                at: (7, 12),
                object: "WorkloadEntry bookinfo/details-vm",
                path: "spec.address",
                reason: "`10.0.0.1:8080` is not a valid host name",
            },
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: WorkloadEntry
metadata:
  name: details-vm
  namespace: bookinfo
spec:
  address: 2.2.2.2
  serviceAcount: details
"#,
                at: (8, 3),
                object: "WorkloadEntry bookinfo/details-vm",
                path: "spec.serviceAcount",
                reason: "unknown field `serviceAcount`",
            },
            Reject {
                what: "wrong type",
                yaml: r#"apiVersion: {api}
kind: WorkloadEntry
metadata:
  name: details-vm
  namespace: bookinfo
spec:
  address: 2.2.2.2
  weight: heavy
"#,
                at: (8, 11),
                object: "WorkloadEntry bookinfo/details-vm",
                path: "spec.weight",
                reason: "expected a non-negative integer (32 bits), found `heavy`",
            },
        ],
    },
    // === security.istio.io ===
    Kind {
        kind: "PeerAuthentication",
        served: ISTIO_SECURITY,
        unserved: "security.istio.io/v1alpha1",
        valid: PEER_AUTHENTICATION,
        keys: &[
            "PeerAuthentication istio-system/default",
            "PeerAuthentication foo/finance",
        ],
        invalid: &[
            Reject {
                what: "invalid mode enum",
                yaml: r#"apiVersion: {api}
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICTLY
"#,
                at: (8, 11),
                object: "PeerAuthentication foo/default",
                path: "spec.mtls.mode",
                reason: "`STRICTLY` is not one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
            },
            Reject {
                what: "portLevelMtls without a selector",
                yaml: r#"apiVersion: {api}
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
"#,
                at: (10, 5),
                object: "PeerAuthentication foo/default",
                path: "spec.portLevelMtls",
                reason: "`portLevelMtls` needs a `selector` with labels",
            },
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
  mTLS:
    mode: STRICT
"#,
                at: (9, 3),
                object: "PeerAuthentication foo/default",
                path: "spec.mTLS",
                reason: "unknown field `mTLS`",
            },
        ],
    },
    Kind {
        kind: "AuthorizationPolicy",
        served: ISTIO_SECURITY,
        unserved: "security.istio.io/v1alpha1",
        valid: AUTHORIZATION_POLICY,
        keys: &[
            "AuthorizationPolicy foo/httpbin",
            "AuthorizationPolicy foo/deny-blocked",
        ],
        invalid: &[
            Reject {
                what: "bad CIDR",
                yaml: r#"apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.0/40"]
"#,
                at: (13, 20),
                object: "AuthorizationPolicy foo/httpbin",
                path: "spec.rules[0].from[0].source.ipBlocks[0]",
                reason: "`10.0.0.0/40`: the prefix length must be 0-32",
            },
            Reject {
                what: "invalid action enum",
                yaml: r#"apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: REJECT
"#,
                at: (10, 11),
                object: "AuthorizationPolicy foo/httpbin",
                path: "spec.action",
                reason: "`REJECT` is not one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`",
            },
            Reject {
                what: "unknown condition key",
                yaml: r#"apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - when:
    - key: request.header[x-token]
      values: ["abc"]
"#,
                at: (12, 12),
                object: "AuthorizationPolicy foo/httpbin",
                path: "spec.rules[0].when[0].key",
                reason: "unknown condition key `request.header[x-token]`",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - to:
    - operation:
        ports: ["http"]
"#,
                at: (13, 17),
                object: "AuthorizationPolicy foo/httpbin",
                path: "spec.rules[0].to[0].operation.ports[0]",
                reason: "`http` is not a port number",
            },
        ],
    },
    Kind {
        kind: "RequestAuthentication",
        served: ISTIO_SECURITY,
        unserved: "security.istio.io/v1alpha1",
        valid: REQUEST_AUTHENTICATION,
        keys: &["RequestAuthentication istio-system/jwt-example"],
        invalid: &[
            Reject {
                what: "jwksUri not a URL",
                yaml: r#"apiVersion: {api}
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: raw.githubusercontent.com/jwks.json
"#,
                at: (12, 14),
                object: "RequestAuthentication istio-system/jwt-example",
                path: "spec.jwtRules[0].jwksUri",
                reason: "`raw.githubusercontent.com/jwks.json` is not an http(s) URL",
            },
            Reject {
                what: "missing issuer (reported at the rule)",
                yaml: r#"apiVersion: {api}
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - jwksUri: https://example.com/.well-known/jwks.json
"#,
                at: (11, 5),
                object: "RequestAuthentication istio-system/jwt-example",
                path: "spec.jwtRules[0].issuer",
                reason: "must be set",
            },
            Reject {
                what: "wrong type",
                yaml: r#"apiVersion: {api}
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: testing@secure.istio.io
    fromHeaders: x-jwt-assertion
"#,
                at: (12, 18),
                object: "RequestAuthentication istio-system/jwt-example",
                path: "spec.jwtRules[0].fromHeaders",
                reason: "expected a list, found `x-jwt-assertion`",
            },
        ],
    },
    // === telemetry.istio.io ===
    Kind {
        kind: "Telemetry",
        served: ISTIO_TELEMETRY,
        unserved: "telemetry.istio.io/v1beta1",
        valid: TELEMETRY,
        keys: &["Telemetry istio-system/mesh-default"],
        invalid: &[
            Reject {
                what: "sampling over 100%",
                yaml: r#"apiVersion: {api}
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    randomSamplingPercentage: 150
"#,
                at: (10, 31),
                object: "Telemetry istio-system/mesh-default",
                path: "spec.tracing[0].randomSamplingPercentage",
                reason: "150 is not a percentage (0-100)",
            },
            Reject {
                what: "unknown metric",
                yaml: r#"apiVersion: {api}
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNTS
"#,
                at: (12, 17),
                object: "Telemetry istio-system/mesh-default",
                path: "spec.metrics[0].overrides[0].match.metric",
                reason: "`REQUEST_COUNTS` is not one of ALL_METRICS, REQUEST_COUNT",
            },
            Reject {
                what: "invalid mode enum",
                yaml: r#"apiVersion: {api}
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        mode: BOTH
"#,
                at: (12, 15),
                object: "Telemetry istio-system/mesh-default",
                path: "spec.metrics[0].overrides[0].match.mode",
                reason: "`BOTH` is not one of `CLIENT_AND_SERVER`, `CLIENT`, `SERVER`",
            },
        ],
    },
    // === gateway.networking.k8s.io ===
    Kind {
        kind: "Gateway.gateway.networking.k8s.io",
        served: GATEWAY_API,
        unserved: "gateway.networking.k8s.io/v1alpha2",
        valid: KUBE_GATEWAY,
        keys: &["Gateway.gateway.networking.k8s.io gateway/prod-web"],
        invalid: &[
            Reject {
                what: "unknown protocol",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: prod-web
  namespace: gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    protocol: HTTP3
    port: 80
"#,
                at: (10, 15),
                object: "Gateway.gateway.networking.k8s.io gateway/prod-web",
                path: "spec.listeners[0].protocol",
                reason: "`HTTP3` is not one of HTTP, HTTPS, TLS, TCP, UDP",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: prod-web
  namespace: gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    protocol: HTTP
    port: 70000
"#,
                at: (11, 11),
                object: "Gateway.gateway.networking.k8s.io gateway/prod-web",
                path: "spec.listeners[0].port",
                reason: "70000 is not a port number (1-65535)",
            },
            Reject {
                what: "listener name used twice",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: prod-web
  namespace: gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    protocol: HTTP
    port: 80
  - name: http
    protocol: HTTP
    port: 8080
"#,
                at: (12, 11),
                object: "Gateway.gateway.networking.k8s.io gateway/prod-web",
                path: "spec.listeners[1].name",
                reason: "listener name `http` is used twice",
            },
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: Gateway
metadata:
  name: prod-web
  namespace: gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoute:
      namespaces: {from: All}
"#,
                at: (12, 5),
                object: "Gateway.gateway.networking.k8s.io gateway/prod-web",
                path: "spec.listeners[0].allowedRoute",
                reason: "unknown field `allowedRoute`",
            },
        ],
    },
    Kind {
        kind: "HTTPRoute",
        served: GATEWAY_API,
        unserved: "gateway.networking.k8s.io/v1alpha2",
        valid: HTTP_ROUTE,
        keys: &["HTTPRoute bookinfo/bookinfo"],
        invalid: &[
            Reject {
                what: "bad regex",
                yaml: r#"apiVersion: {api}
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  parentRefs:
  - name: prod-web
    namespace: gateway
  rules:
  - matches:
    - path:
        type: RegularExpression
        value: "/static/(.*"
    backendRefs:
    - name: static
      port: 80
"#,
                at: (14, 16),
                object: "HTTPRoute bookinfo/bookinfo",
                path: "spec.rules[0].matches[0].path.value",
                reason: "regex `/static/(.*` does not compile: ",
            },
            Reject {
                what: "path not starting with /",
                yaml: r#"apiVersion: {api}
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  parentRefs:
  - name: prod-web
    namespace: gateway
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: productpage
    backendRefs:
    - name: productpage
      port: 9080
"#,
                at: (14, 16),
                object: "HTTPRoute bookinfo/bookinfo",
                path: "spec.rules[0].matches[0].path.value",
                reason: "must start with `/`",
            },
            Reject {
                what: "Service backend without a port (reported at the backend)",
                yaml: r#"apiVersion: {api}
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  parentRefs:
  - name: prod-web
    namespace: gateway
  rules:
  - backendRefs:
    - name: productpage
"#,
                at: (12, 7),
                object: "HTTPRoute bookinfo/bookinfo",
                path: "spec.rules[0].backendRefs[0].port",
                reason: "a Service backend needs a `port`",
            },
            Reject {
                what: "unknown filter type",
                yaml: r#"apiVersion: {api}
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  parentRefs:
  - name: prod-web
    namespace: gateway
  rules:
  - filters:
    - type: HeaderModifier
    backendRefs:
    - name: productpage
      port: 9080
"#,
                at: (12, 13),
                object: "HTTPRoute bookinfo/bookinfo",
                path: "spec.rules[0].filters[0].type",
                reason: "`HeaderModifier` is not one of RequestHeaderModifier",
            },
        ],
    },
    // === core and discovery.k8s.io ===
    Kind {
        kind: "Namespace",
        served: &["v1"],
        unserved: "v1beta1",
        valid: NAMESPACE,
        keys: &["Namespace bookinfo"],
        invalid: &[
            Reject {
                what: "invalid name",
                yaml: r#"apiVersion: {api}
kind: Namespace
metadata:
  name: Bookinfo
"#,
                at: (4, 9),
                object: "Namespace Bookinfo",
                path: "metadata.name",
                reason: "`Bookinfo` is not a valid name",
            },
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: Namespace
metadata:
  name: bookinfo
  label:
    istio-injection: enabled
"#,
                at: (5, 3),
                object: "Namespace bookinfo",
                path: "metadata.label",
                reason: "unknown field `label`",
            },
            Reject {
                what: "wrong type",
                yaml: r#"apiVersion: {api}
kind: Namespace
metadata:
  name: bookinfo
  labels:
  - istio-injection=enabled
"#,
                at: (6, 5),
                object: "Namespace bookinfo",
                path: "metadata.labels",
                reason: "expected a mapping, found a list",
            },
        ],
    },
    Kind {
        kind: "Pod",
        served: &["v1"],
        unserved: "v1beta1",
        valid: POD,
        keys: &["Pod bookinfo/reviews-v1-5d8f7b9c4-x2x7k"],
        invalid: &[
            Reject {
                what: "bad IP",
                yaml: r#"apiVersion: {api}
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
status:
  podIP: 10.244.1.300
"#,
                at: (11, 10),
                object: "Pod bookinfo/reviews-v1",
                path: "status.podIP",
                reason: "invalid IP address syntax",
            },
            Reject {
                what: "port 0",
                yaml: r#"apiVersion: {api}
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  containers:
  - name: reviews
    ports:
    - containerPort: 0
"#,
                at: (10, 22),
                object: "Pod bookinfo/reviews-v1",
                path: "spec.containers[0].ports[0].containerPort",
                reason: "0 is not a port number (1-65535)",
            },
            Reject {
                what: "port out of range (wrong type)",
                yaml: r#"apiVersion: {api}
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  containers:
  - name: reviews
    ports:
    - containerPort: 70000
"#,
                at: (10, 22),
                object: "Pod bookinfo/reviews-v1",
                path: "spec.containers[0].ports[0].containerPort",
                reason: "expected an integer 0-65535, found `70000`",
            },
            Reject {
                what: "unknown top-level field",
                yaml: r#"apiVersion: {api}
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
specs:
  containers: []
"#,
                at: (6, 1),
                object: "Pod bookinfo/reviews-v1",
                path: "specs",
                reason: "unknown field `specs`",
            },
        ],
    },
    Kind {
        kind: "Service",
        served: &["v1"],
        unserved: "v1beta1",
        valid: SERVICE,
        keys: &["Service bookinfo/reviews"],
        invalid: &[
            Reject {
                what: "unnamed port among several (reported at the port)",
                yaml: r#"apiVersion: {api}
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
  - port: 9090
"#,
                at: (12, 5),
                object: "Service bookinfo/reviews",
                path: "spec.ports[1].name",
                reason: "with more than one port, every port needs a name",
            },
            Reject {
                what: "bad clusterIP",
                yaml: r#"apiVersion: {api}
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    app: reviews
  clusterIP: 10.96.0.300
  ports:
  - name: http
    port: 9080
"#,
                at: (9, 14),
                object: "Service bookinfo/reviews",
                path: "spec.clusterIP",
                reason: "clusterIP `10.96.0.300` is neither an IP address nor `None`",
            },
            Reject {
                what: "targetPort out of range",
                yaml: r#"apiVersion: {api}
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
    targetPort: 70000
"#,
                at: (12, 17),
                object: "Service bookinfo/reviews",
                path: "spec.ports[0].targetPort",
                reason: "targetPort 70000 is out of range (1-65535)",
            },
            Reject {
                what: "port 0",
                yaml: r#"apiVersion: {api}
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 0
"#,
                at: (11, 11),
                object: "Service bookinfo/reviews",
                path: "spec.ports[0].port",
                reason: "0 is not a port number (1-65535)",
            },
        ],
    },
    Kind {
        kind: "EndpointSlice",
        served: &["discovery.k8s.io/v1"],
        unserved: "discovery.k8s.io/v1beta1",
        valid: ENDPOINT_SLICE,
        keys: &["EndpointSlice bookinfo/external-db-1"],
        invalid: &[
            Reject {
                what: "invalid addressType enum",
                yaml: r#"apiVersion: {api}
kind: EndpointSlice
metadata:
  name: external-db-1
  namespace: bookinfo
  labels:
    kubernetes.io/service-name: external-db
addressType: IPv5
endpoints:
- addresses: [10.1.2.3]
"#,
                at: (8, 14),
                object: "EndpointSlice bookinfo/external-db-1",
                path: "addressType",
                reason: "`IPv5` is not one of `IPv4`, `IPv6`, `FQDN`",
            },
            Reject {
                what: "bad IPv4 address",
                yaml: r#"apiVersion: {api}
kind: EndpointSlice
metadata:
  name: external-db-1
  namespace: bookinfo
  labels:
    kubernetes.io/service-name: external-db
addressType: IPv4
endpoints:
- addresses: [10.1.2.300]
"#,
                at: (10, 15),
                object: "EndpointSlice bookinfo/external-db-1",
                path: "endpoints[0].addresses[0]",
                reason: "`10.1.2.300` is not an IPv4 address",
            },
            Reject {
                what: "bad port",
                yaml: r#"apiVersion: {api}
kind: EndpointSlice
metadata:
  name: external-db-1
  namespace: bookinfo
  labels:
    kubernetes.io/service-name: external-db
addressType: IPv4
endpoints:
- addresses: [10.1.2.3]
ports:
- name: tcp
  port: 70000
"#,
                at: (13, 9),
                object: "EndpointSlice bookinfo/external-db-1",
                path: "ports[0].port",
                reason: "70000 is not a port number (1-65535)",
            },
        ],
    },
    Kind {
        kind: "ServiceAccount",
        served: &["v1"],
        unserved: "v1beta1",
        valid: SERVICE_ACCOUNT,
        keys: &["ServiceAccount bookinfo/bookinfo-reviews"],
        invalid: &[
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  namespace: bookinfo
automountToken: false
"#,
                at: (6, 1),
                object: "ServiceAccount bookinfo/bookinfo-reviews",
                path: "automountToken",
                reason: "unknown field `automountToken`",
            },
            Reject {
                what: "invalid namespace",
                yaml: r#"apiVersion: {api}
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  namespace: Book_Info
"#,
                at: (5, 14),
                object: "ServiceAccount Book_Info/bookinfo-reviews",
                path: "metadata.namespace",
                reason: "`Book_Info` is not a valid namespace",
            },
        ],
    },
    Kind {
        kind: "Node",
        served: &["v1"],
        unserved: "v1beta1",
        valid: NODE,
        keys: &["Node node-1"],
        invalid: &[
            Reject {
                what: "unknown field",
                yaml: r#"apiVersion: {api}
kind: Node
metadata:
  name: node-1
  lables:
    kubernetes.io/hostname: node-1
"#,
                at: (5, 3),
                object: "Node node-1",
                path: "metadata.lables",
                reason: "unknown field `lables`",
            },
            Reject {
                what: "invalid name",
                yaml: r#"apiVersion: {api}
kind: Node
metadata:
  name: node_1
"#,
                at: (4, 9),
                object: "Node node_1",
                path: "metadata.name",
                reason: "`node_1` is not a valid name",
            },
        ],
    },
];

// === valid objects ===

// istio.io/latest/docs/reference/config/networking/virtual-service/
const VIRTUAL_SERVICE: &str = r#"apiVersion: {api}
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews.bookinfo.svc.cluster.local
  gateways:
  - mesh
  http:
  - name: canary
    match:
    - headers:
        end-user:
          exact: jason
      uri:
        prefix: /api/v1
    route:
    - destination:
        host: reviews
        subset: v2
        port:
          number: 9080
      weight: 90
    - destination:
        host: reviews
        subset: v3
      weight: 10
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream
    fault:
      delay:
        percentage:
          value: 0.1
        fixedDelay: 5s
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      allowMethods: [GET, POST]
      maxAge: 24h
    headers:
      request:
        set:
          x-canary: "true"
  - route:
    - destination:
        host: reviews
        subset: v1
---
apiVersion: {api}
kind: VirtualService
metadata:
  name: mongo
  namespace: backend
spec:
  hosts:
  - mongo.backend.svc.cluster.local
  tcp:
  - match:
    - port: 27017
      destinationSubnets: [10.96.0.0/12, 10.244.1.7]
    route:
    - destination:
        host: mongo.backend.svc.cluster.local
        port:
          number: 5555
"#;

// istio.io/latest/docs/reference/config/networking/destination-rule/
const DESTINATION_RULE: &str = r#"apiVersion: {api}
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
      http:
        http1MaxPendingRequests: 64
        maxRequestsPerConnection: 10
        h2UpgradePolicy: UPGRADE
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
    tls:
      mode: ISTIO_MUTUAL
    portLevelSettings:
    - port:
        number: 9080
      loadBalancer:
        consistentHash:
          httpCookie:
            name: user
            ttl: 0s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
"#;

// istio.io/latest/docs/reference/config/networking/gateway/
const ISTIO_GATEWAY: &str = r#"apiVersion: {api}
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - bookinfo/bookinfo.example.com
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - "*.example.com"
    tls:
      mode: SIMPLE
      credentialName: bookinfo-cert
      minProtocolVersion: TLSV1_2
  - port:
      number: 15443
      name: tls-passthrough
      protocol: TLS
    hosts:
    - "*"
    tls:
      mode: AUTO_PASSTHROUGH
"#;

// istio.io/latest/docs/reference/config/networking/service-entry/
const SERVICE_ENTRY: &str = r#"apiVersion: {api}
kind: ServiceEntry
metadata:
  name: external-api
  namespace: egress
spec:
  hosts:
  - api.example.com
  addresses:
  - 240.240.0.0/16
  ports:
  - number: 443
    name: https
    protocol: TLS
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: {api}
kind: ServiceEntry
metadata:
  name: legacy-db
  namespace: egress
spec:
  hosts:
  - db.legacy.internal
  ports:
  - number: 5432
    name: tcp-postgres
    protocol: TCP
    targetPort: 15432
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 192.168.10.5
    ports:
      tcp-postgres: 15432
    labels:
      app: legacy-db
    locality: us-east1/us-east1-b
"#;

// istio.io/latest/docs/reference/config/networking/workload-entry/
const WORKLOAD_ENTRY: &str = r#"apiVersion: {api}
kind: WorkloadEntry
metadata:
  name: details-vm
  namespace: bookinfo
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
  ports:
    http: 9080
  network: vm-network
  locality: us-east1/us-east1-b
  weight: 10
"#;

// istio.io/latest/docs/reference/config/security/peer_authentication/
const PEER_AUTHENTICATION: &str = r#"apiVersion: {api}
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: {api}
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: PERMISSIVE
  portLevelMtls:
    8080:
      mode: DISABLE
"#;

// istio.io/latest/docs/reference/config/security/authorization-policy/
const AUTHORIZATION_POLICY: &str = r#"apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["dev"]
    - source:
        ipBlocks: ["10.0.0.0/16", "192.168.1.7"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
        ports: ["8000"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: {api}
kind: AuthorizationPolicy
metadata:
  name: deny-blocked
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: ["foo"]
    when:
    - key: source.ip
      values: ["203.0.113.0/24"]
"#;

// istio.io/latest/docs/reference/config/security/request_authentication/
const REQUEST_AUTHENTICATION: &str = r#"apiVersion: {api}
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json"
    audiences: [bookstore-android.apps.example.com]
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-jwt-claim-foo
      claim: foo
"#;

// istio.io/latest/docs/reference/config/telemetry/
const TELEMETRY: &str = r#"apiVersion: {api}
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    randomSamplingPercentage: 10.0
    customTags:
      my_new_foo_tag:
        literal:
          value: "foo"
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
        mode: CLIENT
      tagOverrides:
        request_host:
          operation: REMOVE
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: response.code >= 400
"#;

// gateway-api.sigs.k8s.io/reference/spec/#gateway
const KUBE_GATEWAY: &str = r#"apiVersion: {api}
kind: Gateway
metadata:
  name: prod-web
  namespace: gateway
spec:
  gatewayClassName: istio
  addresses:
  - type: IPAddress
    value: 10.0.0.100
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoutes:
      namespaces:
        from: All
  - name: https
    hostname: "*.example.com"
    protocol: HTTPS
    port: 443
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        name: example-cert
  backendTLS:
    clientCertificateRef:
      kind: Secret
      name: gateway-client-cert
"#;

// gateway-api.sigs.k8s.io/reference/spec/#httproute
const HTTP_ROUTE: &str = r#"apiVersion: {api}
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  parentRefs:
  - name: prod-web
    namespace: gateway
    sectionName: http
  hostnames: ["bookinfo.example.com"]
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /productpage
      headers:
      - name: x-canary
        value: "true"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: my-added-header
          value: added-value
    backendRefs:
    - name: productpage
      port: 9080
      weight: 90
    - name: productpage-canary
      port: 9080
      weight: 10
    timeouts:
      request: 10s
  - matches:
    - path:
        type: RegularExpression
        value: /static/.*
    backendRefs:
    - name: static
      port: 80
"#;

const NAMESPACE: &str = r#"apiVersion: {api}
kind: Namespace
metadata:
  name: bookinfo
  labels:
    istio.io/dataplane-mode: ambient
    kubernetes.io/metadata.name: bookinfo
spec:
  finalizers:
  - kubernetes
status:
  phase: Active
"#;

const POD: &str = r#"apiVersion: {api}
kind: Pod
metadata:
  name: reviews-v1-5d8f7b9c4-x2x7k
  namespace: bookinfo
  labels:
    app: reviews
    version: v1
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: reviews-v1-5d8f7b9c4
    uid: 2b8a1c4e-0d1f-4a53-9a57-3f1c2b6d7e8f
    controller: true
spec:
  serviceAccountName: bookinfo-reviews
  nodeName: node-1
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
    imagePullPolicy: IfNotPresent
    ports:
    - containerPort: 9080
      name: http
      protocol: TCP
  restartPolicy: Always
status:
  phase: Running
  podIP: 10.244.1.5
  podIPs:
  - ip: 10.244.1.5
"#;

const SERVICE: &str = r#"apiVersion: {api}
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
  labels:
    app: reviews
    service: reviews
spec:
  type: ClusterIP
  clusterIP: 10.96.12.34
  clusterIPs: [10.96.12.34]
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
    targetPort: 9080
    protocol: TCP
    appProtocol: http
  - name: grpc
    port: 9090
    targetPort: grpc
  sessionAffinity: None
"#;

const ENDPOINT_SLICE: &str = r#"apiVersion: {api}
kind: EndpointSlice
metadata:
  name: external-db-1
  namespace: bookinfo
  labels:
    kubernetes.io/service-name: external-db
    endpointslice.kubernetes.io/managed-by: cluster-admins
addressType: IPv4
ports:
- name: tcp
  protocol: TCP
  port: 5432
  appProtocol: postgresql
endpoints:
- addresses:
  - 10.1.2.3
  conditions:
    ready: true
    serving: true
    terminating: false
  hostname: db-1
  nodeName: node-1
  zone: us-west2-a
  targetRef:
    kind: Pod
    name: db-1
    namespace: bookinfo
"#;

const SERVICE_ACCOUNT: &str = r#"apiVersion: {api}
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  namespace: bookinfo
  labels:
    account: reviews
automountServiceAccountToken: false
imagePullSecrets:
- name: registry
"#;

const NODE: &str = r#"apiVersion: {api}
kind: Node
metadata:
  name: node-1
  labels:
    kubernetes.io/hostname: node-1
    topology.kubernetes.io/zone: us-west2-a
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24]
status:
  addresses:
  - type: InternalIP
    address: 172.18.0.3
"#;

// === the checks ===

/// Validates a directory holding `text` as `file`, as `weft-control
/// validate` would.
fn validate_one(file: &str, text: &str) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(file), text).expect("write");
    validate_dir(dir.path(), "cluster.local", "istio-system").expect("directory readable")
}

fn file_name(kind: &str, api: &str, what: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    };
    format!("{}-{}-{}.yaml", clean(kind), clean(api), clean(what))
}

/// What differs between `e` and what `r` expects, if anything.
fn mismatch(e: &FileError, file: &str, r: &Reject) -> Option<String> {
    let got = (
        e.file.display().to_string(),
        (e.line, e.column),
        e.object.as_deref(),
        e.path.as_str(),
    );
    let want = (file.to_string(), r.at, Some(r.object), r.path);
    if got != want || !e.message.starts_with(r.reason) || e.message.is_empty() {
        return Some(format!(
            "got {got:?} `{}`, want {want:?} `{}…`",
            e.message, r.reason
        ));
    }
    let shown = format!(
        "{file}:{}:{}: {}: {}: {}",
        r.at.0, r.at.1, r.object, r.path, e.message
    );
    (e.to_string() != shown).then(|| format!("displayed as `{e}`, want `{shown}`"))
}

#[test]
fn every_kind_and_version_accepts_a_realistic_object() {
    let mut failures = Vec::new();
    for k in KINDS {
        for api in k.served {
            let text = k.valid.replace("{api}", api);
            let file = file_name(k.kind, api, "valid");
            let report = validate_one(&file, &text);
            if !report.errors.is_empty() || report.objects != k.keys.len() {
                failures.push(format!("{} {api}:\n{}", k.kind, report.to_text()));
                continue;
            }
            match parse_file(Path::new(&file), &text) {
                Ok(objects) => {
                    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
                    if keys != k.keys {
                        failures.push(format!("{} {api}: keys {keys:?}", k.kind));
                    }
                }
                Err(e) => failures.push(format!("{} {api}: {e}", k.kind)),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_kind_and_version_rejects_invalid_variants_at_the_field() {
    let mut failures = Vec::new();
    for k in KINDS {
        for api in k.served {
            for r in k.invalid {
                let text = r.yaml.replace("{api}", api);
                let file = file_name(k.kind, api, r.what);
                let case = format!("{} {api} ({})", k.kind, r.what);
                let report = validate_one(&file, &text);
                if report.objects != 0 {
                    failures.push(format!("{case}: accepted\n{}", report.to_text()));
                    continue;
                }
                let [error] = report.errors.as_slice() else {
                    failures.push(format!("{case}: want one error\n{}", report.to_text()));
                    continue;
                };
                if let Some(m) = mismatch(error, &file, r) {
                    failures.push(format!("{case}: {m}"));
                }
                // The server's parser reports the same error.
                match parse_file(Path::new(&file), &text) {
                    Ok(_) => failures.push(format!("{case}: parse_file accepted it")),
                    Err(e) if &e != error => {
                        failures.push(format!("{case}: parse_file says `{e}`, validate `{error}`"))
                    }
                    Err(_) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn versions_a_kind_is_not_served_as_are_rejected_at_api_version() {
    let mut failures = Vec::new();
    for k in KINDS {
        let text = k.valid.replace("{api}", k.unserved);
        let file = file_name(k.kind, k.unserved, "unserved");
        let report = validate_one(&file, &text);
        let case = format!("{} {}", k.kind, k.unserved);
        if report.objects != 0 || report.errors.len() != k.keys.len() {
            failures.push(format!("{case}:\n{}", report.to_text()));
            continue;
        }
        let e = &report.errors[0];
        let short = k.kind.split('.').next().unwrap_or(k.kind);
        let named_all = k
            .served
            .iter()
            .all(|v| e.message.contains(&format!("`{v}`")));
        let ok = (e.line, e.column) == (1, 13)
            && e.path == "apiVersion"
            && e.object.as_deref() == Some(k.keys[0])
            && e.message.starts_with(&format!("{short} is served as "))
            && e.message.ends_with(&format!("not `{}`", k.unserved))
            && named_all;
        if !ok {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
