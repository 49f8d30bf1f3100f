//! weft's control plane.
//!
//! ```text
//! config dir (YAML) ──► source::dir ──► Snapshot ──► model::build ──► Model
//!                                                                   │
//!            agents ◄── TLS :15012 ── xds (delta ADS) ◄─────────────┤
//!                                 └── ca::service (CSR → cert) ◄────┘ (authorizes by node)
//!                                      debug :15014 (/ready, /metrics, /debug/*)
//! ```
//!
//! Start it in-process with [`Server::start`]; `main.rs` is a thin CLI
//! over the same call.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod auth;
pub mod ca;
pub mod config;
pub mod debug;
pub mod kinds;
pub mod leader;
pub mod mesh;
pub mod metrics;
pub mod model;
mod server;
pub mod source;
pub mod spiffe;
pub mod validate;
pub mod xds;
pub mod yaml;

pub use auth::bootstrap_token;
pub use config::{CaSource, Config};
pub use server::{Server, ServerHandle, StartError};
