//! Project chores that need more than cargo: `cargo xtask guests` builds every guest function
//! into a Wasm component at `target/guests/NAME.wasm`, and the same workloads as a static native
//! binary, `target/guests/workload-native`, for the benchmark's native baselines;
//! `cargo xtask microvm-kernel` fetches the Linux microVM's kernel; `cargo xtask unikernel`
//! builds the same workloads as a Hermit unikernel (see `unikernel.rs`).
//!
//! Two toolchains can build them, tried in this order:
//! 1. a rustup toolchain with the `wasm32-wasip2` target installed: the normal way, used
//!    wherever it is available;
//! 2. Debian's `rustc-web` with `-Zbuild-std`, for machines where rustup cannot download the
//!    target. Missing Debian packages are installed (as root) before the build.

mod c;
mod debian;
mod python;
mod unikernel;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";
/// Rust flags of every guest build: Wasm SIMD (simd128), which Wasmtime supports by default, so
/// that the compiler can vectorize guests as it vectorizes the native baseline (SSE2).
const WASM_RUSTFLAGS: &str = "-C target-feature=+simd128";

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("guests") => build_guests(),
        Some("microvm-kernel") => {
            debian::fetch_cloud_kernel(&workspace_root().join("target/microvm"))
        }
        Some("unikernel") => unikernel::build(&workspace_root()),
        _ => {
            eprintln!(
                "usage: cargo xtask guests          build every guest into target/guests/NAME.wasm\n       \
                 cargo xtask microvm-kernel  fetch Debian's cloud kernel into target/microvm/\n       \
                 cargo xtask unikernel       build the Hermit unikernel and its loader into target/unikernel/"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

fn build_guests() -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/guests-build");
    let mut cargo = if rustup_has_target()? {
        eprintln!("building guests with rustup's {TARGET} target");
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "--release", "--target", TARGET])
            .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", WASM_RUSTFLAGS);
        cmd
    } else {
        eprintln!("rustup has no {TARGET} target; building guests with Debian's rustc-web");
        debian::ensure_toolchain()?;
        debian::cargo_build(TARGET)
    };
    cargo
        .current_dir(root.join("guests"))
        .arg("--target-dir")
        .arg(&target_dir);
    let status = cargo.status().context("running cargo for the guests")?;
    if !status.success() {
        bail!("building the guests failed ({status})");
    }
    let out = root.join("target/guests");
    collect(&target_dir.join(TARGET).join("release"), &out)?;
    for (language, built) in [
        ("Python", python::build(&root, &out)?),
        ("C", c::build(&root, &out)?),
    ] {
        if !built.is_empty() {
            eprintln!(
                "{language} guests in {}: {}",
                out.display(),
                built.join(", ")
            );
        }
    }
    build_native(&root)
}

/// The WIT world a guest in another language implements: the name in its directory's `world`
/// file, or `runnable` (the Rust guests' world) without one.
fn guest_world(dir: &Path) -> Result<String> {
    match std::fs::read_to_string(dir.join("world")) {
        Ok(name) => Ok(name.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("runnable".into()),
        Err(e) => Err(e).with_context(|| format!("reading {}/world", dir.display())),
    }
}

/// The guests written in another language: each directory `guests/PREFIX*` holding `file`, by
/// name (the directory's), sorted.
fn guest_dirs(root: &Path, prefix: &str, file: &str) -> Result<Vec<(String, PathBuf)>> {
    let guests = root.join("guests");
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(&guests).with_context(|| format!("reading {}", guests.display()))?
    {
        let dir = entry?.path();
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(prefix) && dir.join(file).is_file() {
            found.push((name, dir));
        }
    }
    found.sort();
    Ok(found)
}

/// Runs `cmd`, failing unless it exits with success.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}

/// Whether `output` exists and is newer than every one of `inputs`, so a build can be skipped.
fn fresh(output: &Path, inputs: &[&Path]) -> Result<bool> {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    for input in inputs {
        let changed = std::fs::metadata(input)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading {}", input.display()))?;
        if changed > built {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Builds `workload-native` statically linked, so that it runs as a microVM's `/init` and in an
/// empty container root with no libraries beside it.
fn build_native(root: &Path) -> Result<()> {
    let host = host_triple()?;
    let status = Command::new("cargo")
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "workload-native",
            "--target",
            &host,
        ])
        // With an explicit --target, RUSTFLAGS reach only the target's crates, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo for workload-native")?;
    if !status.success() {
        bail!("building workload-native failed ({status})");
    }
    let built = root
        .join("target")
        .join(&host)
        .join("release/workload-native");
    let dest = root.join("target/guests/workload-native");
    std::fs::copy(&built, &dest).with_context(|| format!("copying to {}", dest.display()))?;
    eprintln!("native baseline: {}", dest.display());
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")
}

/// Whether `rustup` is on PATH and lists `wasm32-wasip2` among the installed targets.
fn rustup_has_target() -> Result<bool> {
    match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) => Ok(out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).context("running rustup"),
    }
}

/// Copies `release/*.wasm` to `out/NAME.wasm`, turning cargo's `image_processing` back into the
/// crate's name, `image-processing`.
fn collect(release: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut built = Vec::new();
    for entry in
        std::fs::read_dir(release).with_context(|| format!("reading {}", release.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .replace('_', "-");
            let dest = out.join(format!("{name}.wasm"));
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying to {}", dest.display()))?;
            built.push(name);
        }
    }
    if built.is_empty() {
        bail!(
            "the guest build produced no .wasm files in {}",
            release.display()
        );
    }
    built.sort();
    eprintln!("guests in {}: {}", out.display(), built.join(", "));
    Ok(())
}
