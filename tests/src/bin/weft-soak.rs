//! `weft-soak`: the simulated cluster under load for a long time, with an
//! agent upgrade, a control-plane restart and a config change on a
//! schedule (`cargo xtask soak`; see `weft_sim::soak`).

fn main() -> anyhow::Result<()> {
    weft_sim::soak::main()
}
