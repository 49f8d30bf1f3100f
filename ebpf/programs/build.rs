//! Rebuild the programs when bpf-linker changes: it is the linker that turns
//! the crate's bitcode into BPF bytecode.

fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
