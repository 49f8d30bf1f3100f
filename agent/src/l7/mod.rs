//! L7: HTTP in the node proxy. Connections a pod's app makes to a Service
//! port declared HTTP (Istio's protocol selection) are terminated here:
//! each request is routed with the service's VirtualService routes
//! ([`route`]), balanced over the destination's endpoints with its
//! DestinationRule ([`cluster`]), and sent over pooled HBONE.

pub mod cluster;
pub mod route;
