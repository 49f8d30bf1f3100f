//! `weft-bench` (run by `cargo xtask bench`): weft against no mesh, side by
//! side, on one simulated cluster. `--help` for the options; see
//! `docs/PERFORMANCE.md`.

fn main() -> anyhow::Result<()> {
    weft_sim::bench::main()
}
