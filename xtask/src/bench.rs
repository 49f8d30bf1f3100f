//! `cargo xtask bench`: weft against no mesh, side by side, on the
//! simulated cluster. (Being built: see the benchmarks issue.)

use anyhow::bail;

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    bail!("`cargo xtask bench` is not implemented yet")
}
