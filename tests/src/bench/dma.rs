//! Holding `/dev/cpu_dma_latency` at 0 for the whole run. On these 2-vCPU
//! VMs an idle vCPU's wake-up adds roughly 20 µs per hop, which would swamp
//! request latencies; with the PM QoS request at 0 the vCPUs do not enter
//! deep idle states. The kernel keeps the request while the file is open.

use std::fs::{File, OpenOptions};
use std::io::Write;

use anyhow::{Context, Result};

const DEVICE: &str = "/dev/cpu_dma_latency";

/// The open device; dropping it releases the request.
#[derive(Debug)]
pub struct DmaLatency {
    _file: File,
}

impl DmaLatency {
    /// Opens the device and writes a 32-bit 0.
    pub fn hold_zero() -> Result<DmaLatency> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .with_context(|| format!("opening {DEVICE}"))?;
        file.write_all(&0i32.to_ne_bytes())
            .with_context(|| format!("writing 0 to {DEVICE}"))?;
        Ok(DmaLatency { _file: file })
    }
}
