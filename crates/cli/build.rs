//! What `limes --version` tells besides the crate's version: the git revision built and the
//! Wasmtime version linked, so that a node's operator can say exactly what runs.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    println!("cargo:rustc-env=LIMES_GIT_REV={}", git_rev(&root));
    println!(
        "cargo:rustc-env=LIMES_WASMTIME_VERSION={}",
        wasmtime_version(&root.join("Cargo.lock")).unwrap_or_else(|| "unknown".into())
    );
}

/// The short revision of HEAD; `unknown` outside a git checkout.
fn git_rev(root: &Path) -> String {
    // Built again when HEAD moves (a checkout or a commit on the current branch).
    let head = root.join(".git/HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(branch) = text.trim().strip_prefix("ref: ")
    {
        println!(
            "cargo:rerun-if-changed={}",
            root.join(".git").join(branch).display()
        );
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if !rev.is_empty() => rev,
        _ => "unknown".into(),
    }
}

/// The version of the `wasmtime` package in the workspace's lock file.
fn wasmtime_version(lock: &Path) -> Option<String> {
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasmtime\"" {
            let version = lines.next()?.strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}
