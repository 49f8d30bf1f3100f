//! gateway.networking.k8s.io: Gateway, HTTPRoute.

use super::{GATEWAY_API, Kind, Reject};

pub const KINDS: &[Kind] = &[
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
];

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
