//! Shared helpers of the runtime's integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use limes_runtime::{Function, Policy, Runtime, RuntimeConfig};

/// The path of a guest built by `cargo xtask guests`. The guests are part of the test command
/// in the README, so a missing one is a failure, not a skip.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest `{name}` is not built ({}); run `cargo xtask guests` first",
        path.display()
    );
    path
}

/// A component assembled from a `.wat` file under `tests/wat`.
pub fn wat(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wat")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One runtime for all tests of a binary, as on a node: tests share its engine and pool.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("runtime"))
}

/// Loads a guest with a policy into the shared runtime.
pub fn load(name: &str, policy: Policy) -> Function {
    runtime()
        .load_file(guest(name), policy)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}
