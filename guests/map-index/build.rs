//! Writes the embedded data: 200 000 places as `id,x,y` lines (about 4 MB), the same on every
//! build (a fixed xorshift seed), standing in for a map's place list.

use std::fmt::Write as _;

fn main() {
    let mut state: u64 = 0x6d61_705f_6461_7461;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut csv = String::with_capacity(4 << 20);
    for id in 0..200_000u32 {
        let x = (next() % 1_000_000) as f64 / 100.0;
        let y = (next() % 1_000_000) as f64 / 100.0;
        let _ = writeln!(csv, "{id},{x:.2},{y:.2}");
    }
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("places.csv");
    std::fs::write(out, csv).unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
