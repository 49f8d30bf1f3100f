//! security.istio.io (PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication) and telemetry.istio.io (Telemetry).

use super::{ISTIO_SECURITY, ISTIO_TELEMETRY, Kind, Reject};

pub const KINDS: &[Kind] = &[
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
            Reject {
                what: "tag value weft cannot evaluate",
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
    - tagOverrides:
        request_host:
          value: "request.host == 'a'"
"#,
                at: (13, 18),
                object: "Telemetry istio-system/mesh-default",
                path: "spec.metrics[0].overrides[0].tagOverrides.request_host.value",
                reason: "`request.host == 'a'`: position 13: unexpected text after the value",
            },
            Reject {
                what: "tag name that is no Prometheus label",
                yaml: r#"apiVersion: {api}
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  metrics:
  - overrides:
    - tagOverrides:
        x-user:
          operation: REMOVE
"#,
                at: (11, 11),
                object: "Telemetry istio-system/mesh-default",
                path: "spec.metrics[0].overrides[0].tagOverrides.x-user",
                reason: "`x-user` is not a Prometheus label name",
            },
        ],
    },
];

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
        destination_port:
          value: string(destination.port)
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: response.code >= 400
"#;
