//! The Debian route for guests: `rustc-web` builds std for `wasm32-wasip2` from source.
//!
//! Follows `shared/GUESTS.md`. No version is pinned: Debian moves `rustc-web` with security
//! updates, so the linker package is read off the `rust-lld` link at install time.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev",
    "rust-web-src",
    "rust-web-llvm",
    "wasi-libc",
];
const RUSTC: &str = "/usr/bin/rustc";
const CARGO: &str = "/usr/bin/cargo";
const RUST_LLD: &str = "/usr/bin/rust-lld";
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";

/// Installs whatever part of the toolchain is missing.
pub fn ensure_toolchain() -> Result<()> {
    let complete = |p: &str| Path::new(p).exists();
    if !(complete(RUSTC)
        && complete(CARGO)
        && complete(&format!("{WASI_LIBC}/crt1-reactor.o"))
        && complete("/usr/lib/rustlib/src/rust/library/Cargo.lock")
        && rustc_knows_target()?)
    {
        apt_install(PACKAGES)?;
    }
    // `rust-lld` links to a versioned `lld-NN` that rust-web-llvm does not depend on.
    if !Path::new(RUST_LLD).exists() {
        let target = std::fs::read_link(RUST_LLD)
            .with_context(|| format!("{RUST_LLD} is missing; is rust-web-llvm installed?"))?;
        let package = target
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !package.starts_with("lld-") {
            bail!(
                "{RUST_LLD} points at {}, not an lld-NN binary",
                target.display()
            );
        }
        apt_install(&[&package])?;
    }
    Ok(())
}

fn rustc_knows_target() -> Result<bool> {
    let Ok(out) = Command::new(RUSTC)
        .args(["--print", "target-list"])
        .output()
    else {
        return Ok(false);
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == super::TARGET))
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!("installing {}", packages.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        bail!(
            "missing Debian packages; as root run: apt-get install -y {}",
            packages.join(" ")
        );
    }
    for args in [
        vec!["update", "-qq"],
        [&["install", "-y", "-qq"][..], packages].concat(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// `cargo build --release` with Debian's compiler for `target`, building the library crates
/// `std_crates` (e.g. `core,alloc`) from source.
pub fn cargo_build_std(target: &str, std_crates: &str) -> Command {
    let mut cmd = Command::new(CARGO);
    cmd.args(["build", "--release", "--target", target])
        .arg(format!("-Zbuild-std={std_crates}"))
        // Without RUSTC, Debian's cargo finds rustup's rustc on PATH, which has no std source.
        .env("RUSTC", RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// `cargo build` with Debian's compiler, building std for the Wasm `target` from source.
pub fn cargo_build(target: &str) -> Command {
    let mut cmd = cargo_build_std(target, "std,panic_abort");
    // Guests are libraries (reactors); link against Debian's wasi-libc, not a bundled one.
    cmd.env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        format!(
            "{} -C link-self-contained=no -L native={WASI_LIBC} \
             -C link-arg={WASI_LIBC}/crt1-reactor.o",
            super::WASM_RUSTFLAGS
        ),
    );
    cmd
}

/// Fetches the kernel of Debian's `linux-image-cloud-amd64` into `dir/vmlinuz`, for the
/// benchmark's QEMU microVM. Only the package file is downloaded and unpacked; nothing is
/// installed on the host.
pub fn fetch_cloud_kernel(dir: &Path) -> Result<()> {
    let dest = dir.join("vmlinuz");
    if dest.exists() {
        eprintln!("kernel already at {}", dest.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let depends = Command::new("apt-cache")
        .args(["depends", "linux-image-cloud-amd64"])
        .output()?;
    let package = String::from_utf8_lossy(&depends.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").map(str::to_owned))
        .context("apt-cache knows no linux-image-cloud-amd64 (run apt-get update)")?;
    let status = Command::new("apt-get")
        .current_dir(dir)
        .args(["download", &package])
        .status()?;
    if !status.success() {
        bail!("apt-get download {package} failed ({status})");
    }
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("the download left no .deb")?;
    let unpacked = dir.join("unpacked");
    let status = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()?;
    if !status.success() {
        bail!("dpkg -x {} failed ({status})", deb.display());
    }
    let kernel = std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the package has no /boot/vmlinuz-*")?;
    std::fs::copy(&kernel, &dest)?;
    std::fs::remove_dir_all(&unpacked)?;
    std::fs::remove_file(&deb)?;
    eprintln!(
        "kernel {} at {}",
        kernel.file_name().unwrap_or_default().to_string_lossy(),
        dest.display()
    );
    Ok(())
}
