//! The core kinds: Namespace, Pod, Service, EndpointSlice, ServiceAccount,
//! Node.

use super::{Kind, Reject};

pub const KINDS: &[Kind] = &[
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
