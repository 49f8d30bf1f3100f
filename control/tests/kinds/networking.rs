//! networking.istio.io: VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry.

use super::{ISTIO_NETWORKING, Kind, Reject};

pub const KINDS: &[Kind] = &[
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
            Reject {
                what: "redirect to nowhere",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{redirect: {redirectCode: 302}}]
"#,
                at: (6, 21),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].redirect",
                reason: "redirects nowhere: set `uri`",
            },
            Reject {
                what: "redirect uri with prefixRewrite",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{redirect: {uri: /a, prefixRewrite: /b}}]
"#,
                at: (6, 21),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].redirect",
                reason: "`uri` and `prefixRewrite` are mutually exclusive",
            },
            Reject {
                what: "redirect scheme",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{redirect: {scheme: ftp}}]
"#,
                at: (6, 30),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].redirect.scheme",
                reason: "`ftp` is not a redirect scheme (`http` or `https`)",
            },
            Reject {
                what: "redirect code",
                yaml: r#"apiVersion: {api}
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{redirect: {uri: /a, redirectCode: 400}}]
"#,
                at: (6, 45),
                object: "VirtualService bookinfo/reviews",
                path: "spec.http[0].redirect.redirectCode",
                reason: "400 is not a redirect status Envoy sends (301, 302, 303, 307, 308)",
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
];

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
