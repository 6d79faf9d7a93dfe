//! `cargo xtask unikernel`: the study's workloads as a Hermit unikernel, and the PVH loader that
//! boots it, in `target/unikernel/`:
//! - `hermit-loader`: the loader (`crates/hermit-loader`), the VMM's kernel;
//! - `workloads.hermit`: `workload-native` linked against the Hermit kernel, the VMM's initrd.
//!
//! The Hermit kernel (crate `hermit-kernel`, pinned below) is built from its crates.io source
//! with Debian's `rustc-web`, as Hermit's own `xtask` would, which is not published. It takes
//! minutes, so its post-processed archive is kept in `target/unikernel/kernel-VERSION/` and reused
//! while the version stays the same. Facts behind each step: `shared/UNIKERNEL.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::debian;

/// 0.11.0 exactly: 0.13.0 on crates.io is a stub that refuses to compile.
const KERNEL_VERSION: &str = "0.11.0";
const HERMIT_TARGET: &str = "x86_64-unknown-hermit";
const LOADER_TARGET: &str = "x86_64-unknown-none";
/// Debian's LLVM tools that rewrite the kernel archive's symbols.
const LLVM_PACKAGE: &str = "llvm-22";
const NM: &str = "llvm-nm-22";
const OBJCOPY: &str = "llvm-objcopy-22";
/// Symbols the application links against (Hermit's system calls and entry points); every other
/// kernel symbol is renamed so it cannot clash with the application's own.
const KEPT: &[&str] = &["_start", "__bss_start", "mcount", "runtime_entry"];
const PREFIX: &str = "hermit_";
/// The ELF OS/ABI value "standalone", which the Hermit linker expects of the kernel's objects.
const OSABI_STANDALONE: u8 = 255;

pub fn build(root: &Path) -> Result<()> {
    debian::ensure_toolchain()?;
    if !on_path(NM) || !on_path(OBJCOPY) {
        debian::apt_install(&[LLVM_PACKAGE])?;
    }
    let out = root.join("target/unikernel");
    let kernel = kernel(&out)?;
    let loader = loader(root, &out)?;
    let image = application(root, &out, &kernel)?;
    eprintln!(
        "unikernel: loader {}, image {}",
        loader.display(),
        image.display()
    );
    Ok(())
}

fn on_path(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The post-processed `libhermit.a`'s directory, built unless this version's is there.
fn kernel(out: &Path) -> Result<PathBuf> {
    let dir = out.join(format!("kernel-{KERNEL_VERSION}"));
    let archive = dir.join("lib/libhermit.a");
    if archive.exists() {
        eprintln!(
            "hermit kernel {KERNEL_VERSION}: cached at {}",
            archive.display()
        );
        return Ok(archive.parent().expect("a file has a parent").into());
    }
    let source = dir.join("src");
    if source.exists() {
        std::fs::remove_dir_all(&source)?;
    }
    copy_dir(&fetch_kernel_source(out)?, &source)?;
    patch_kernel_source(&source)?;
    eprintln!("building the hermit kernel {KERNEL_VERSION} (a few minutes)");
    let mut cargo = debian::cargo_build_std(LOADER_TARGET, "core,alloc");
    cargo
        .current_dir(&source)
        .args([
            "-Zbuild-std-features=compiler-builtins-mem",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(dir.join("build"))
        // As Hermit's own build does.
        .env("RUSTFLAGS", "-Zmutable-noalias=no")
        .env("HERMIT_LOG_LEVEL_FILTER", "Warn");
    run(&mut cargo, "the hermit kernel build")?;
    let built = dir.join(format!("build/{LOADER_TARGET}/release/libhermit.a"));
    std::fs::create_dir_all(archive.parent().expect("a file has a parent"))?;
    let renamed = dir.join("libhermit.renamed.a");
    rename_symbols(&built, &renamed)?;
    let mut bytes = std::fs::read(&renamed)?;
    mark_standalone(&mut bytes)?;
    // Written last and whole: its presence means the cache is complete.
    let partial = archive.with_extension("a.partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, &archive)?;
    std::fs::remove_file(&renamed)?;
    Ok(archive.parent().expect("a file has a parent").into())
}

/// Downloads (through cargo, checksummed) `hermit-kernel` and returns its source directory.
fn fetch_kernel_source(out: &Path) -> Result<PathBuf> {
    let fetch = out.join("fetch");
    std::fs::create_dir_all(fetch.join("src"))?;
    std::fs::write(
        fetch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch-hermit-kernel\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\nhermit-kernel = {{ version = \"={KERNEL_VERSION}\", default-features = false }}\n\
             [workspace]\n"
        ),
    )?;
    std::fs::write(fetch.join("src/lib.rs"), "")?;
    let metadata = Command::new("cargo")
        .current_dir(&fetch)
        .args(["metadata", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata for hermit-kernel failed: {}",
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "hermit-kernel")
        .and_then(|p| p["manifest_path"].as_str())
        .context("cargo metadata lists no hermit-kernel")?;
    Ok(Path::new(manifest)
        .parent()
        .context("a manifest has a directory")?
        .into())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// What the published 0.11.0 source needs to build with today's Debian compiler, outside its
/// own repository: no pinned nightly, no repository cargo config, `#[unsafe(naked)]` (required
/// since rustc 1.88), and a workspace of its own.
fn patch_kernel_source(source: &Path) -> Result<()> {
    let _ = std::fs::remove_file(source.join("rust-toolchain.toml"));
    let _ = std::fs::remove_dir_all(source.join(".cargo"));
    let mut manifest = std::fs::read_to_string(source.join("Cargo.toml"))?;
    manifest.push_str("\n[workspace]\n");
    std::fs::write(source.join("Cargo.toml"), manifest)?;
    patch_naked(&source.join("src"))
}

fn patch_naked(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            patch_naked(&path)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            if text.contains("#[naked]") {
                std::fs::write(&path, text.replace("#[naked]", "#[unsafe(naked)]"))?;
            }
        }
    }
    Ok(())
}

/// Prefixes every defined global symbol of `archive` except the system calls (`sys_*`) and
/// [`KEPT`], so that the kernel's copies of `core` and `alloc` do not clash with the
/// application's.
fn rename_symbols(archive: &Path, out: &Path) -> Result<()> {
    let nm = Command::new(NM)
        .args(["--defined-only", "--extern-only", "--just-symbol-name"])
        .arg(archive)
        .output()
        .with_context(|| format!("running {NM}"))?;
    if !nm.status.success() {
        bail!("{NM} failed: {}", String::from_utf8_lossy(&nm.stderr));
    }
    let symbols: HashSet<&str> = std::str::from_utf8(&nm.stdout)?
        .lines()
        .map(str::trim)
        // nm prints "member.o:" headers and blank lines between members.
        .filter(|s| !s.is_empty() && !s.ends_with(':'))
        .filter(|s| !s.starts_with("sys_") && !KEPT.contains(s))
        .collect();
    let mut map: Vec<String> = symbols.iter().map(|s| format!("{s} {PREFIX}{s}")).collect();
    map.sort();
    let map_file = out.with_extension("syms");
    std::fs::write(&map_file, map.join("\n") + "\n")?;
    run(
        Command::new(OBJCOPY)
            .arg(format!("--redefine-syms={}", map_file.display()))
            .arg(archive)
            .arg(out),
        OBJCOPY,
    )?;
    std::fs::remove_file(&map_file)?;
    Ok(())
}

/// Sets the OS/ABI byte of every ELF member of the archive in `bytes` to "standalone".
fn mark_standalone(bytes: &mut [u8]) -> Result<()> {
    let ranges: Vec<(u64, u64)> = {
        let archive = object::read::archive::ArchiveFile::parse(&*bytes)
            .map_err(|e| anyhow::anyhow!("reading the kernel archive: {e}"))?;
        archive
            .members()
            .filter_map(|m| m.ok().map(|m| m.file_range()))
            .collect()
    };
    let mut marked = 0;
    for (offset, size) in ranges {
        let member = &mut bytes[offset as usize..(offset + size) as usize];
        if member.starts_with(b"\x7fELF") && member.len() > 7 {
            member[7] = OSABI_STANDALONE;
            marked += 1;
        }
    }
    if marked == 0 {
        bail!("the kernel archive has no ELF members");
    }
    Ok(())
}

/// Builds the PVH loader for bare metal and copies it to `out/hermit-loader`.
fn loader(root: &Path, out: &Path) -> Result<PathBuf> {
    let target_dir = out.join("loader-build");
    let mut cargo = debian::cargo_build_std(LOADER_TARGET, "core,alloc");
    cargo
        .current_dir(root)
        .args([
            "-p",
            "hermit-loader",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // A fixed address (lld's default, 2 MiB): PVH loads segments where they say and enters
        // in 32-bit mode, before any relocation could be applied.
        .env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", env_name(LOADER_TARGET)),
            "-C relocation-model=static",
        );
    run(&mut cargo, "the hermit-loader build")?;
    let dest = out.join("hermit-loader");
    std::fs::copy(
        target_dir.join(format!("{LOADER_TARGET}/release/hermit-loader")),
        &dest,
    )?;
    Ok(dest)
}

/// Builds `workload-native` for Hermit, linked against the kernel in `kernel`, and copies it to
/// `out/workloads.hermit`.
fn application(root: &Path, out: &Path, kernel: &Path) -> Result<PathBuf> {
    let target_dir = out.join("app-build");
    let mut cargo = debian::cargo_build_std(HERMIT_TARGET, "std,panic_abort");
    cargo
        .current_dir(root)
        .args([
            "-p",
            "workload-native",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Read by workload-native's build script, which links the kernel when the target is
        // Hermit.
        .env("LIMES_HERMIT_KERNEL_DIR", kernel);
    run(&mut cargo, "the hermit application build")?;
    let dest = out.join("workloads.hermit");
    std::fs::copy(
        target_dir.join(format!("{HERMIT_TARGET}/release/workload-native")),
        &dest,
    )?;
    Ok(dest)
}

/// `x86_64-unknown-none` as cargo's environment spells it: `X86_64_UNKNOWN_NONE`.
fn env_name(target: &str) -> String {
    target.to_uppercase().replace('-', "_")
}
