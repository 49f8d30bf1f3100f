//! `weft-bench-load`: the benchmarks' load generators and servers, run
//! inside the simulated cluster's pods by `weft-bench`.

fn main() -> anyhow::Result<()> {
    weft_sim::bench::load::main()
}
