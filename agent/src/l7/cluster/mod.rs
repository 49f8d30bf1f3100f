//! A destination's DestinationRule (`weft.route.v1.DestinationPolicy`)
//! applied: load balancing, connection-pool limits, outlier detection.
