fn main() {
    let obj = include_bytes!(concat!(env!("OUT_DIR"), "/weft"));
    println!("{}", obj.len());
}
