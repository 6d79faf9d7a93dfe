//! Built for Hermit (`cargo xtask unikernel`), the workloads link against the Hermit kernel,
//! whose archive's directory the xtask passes in `LIMES_HERMIT_KERNEL_DIR`.

fn main() {
    println!("cargo:rerun-if-env-changed=LIMES_HERMIT_KERNEL_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("hermit") {
        let Ok(dir) = std::env::var("LIMES_HERMIT_KERNEL_DIR") else {
            panic!(
                "building for Hermit needs LIMES_HERMIT_KERNEL_DIR; use `cargo xtask unikernel`"
            );
        };
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-lib=static=hermit");
    }
}
