//! The seam to the kernel: network namespaces, socket options, netlink,
//! mounts. Everything above this module is ordinary async Rust; everything
//! that needs root or a particular kernel feature is here, and its errors
//! say which call failed and why.

pub mod mounts;
pub mod netlink;
pub mod netns;
pub mod sockopt;

pub use netns::Netns;
