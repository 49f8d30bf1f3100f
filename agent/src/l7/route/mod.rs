//! A service's VirtualService routes (`weft.route.v1.RouteConfig`),
//! compiled for matching requests.
