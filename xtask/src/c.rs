//! C guests: each `guests/c-NAME/` holding `.c` files becomes `target/guests/c-NAME.wasm`.
//!
//! The steps are the ones a C developer would take by hand, with the tools in Rust crates where
//! there is one: wit-bindgen's C generator writes the bindings of `guests/wit/run.wit` (a header,
//! their C side, and an object carrying the component's type); Debian's clang 22 compiles them
//! with the app against Debian's wasi-libc into a core module (WASI preview 1, reactor model);
//! wit-component wraps that module and Wasmtime's preview-1 adapter into a component, as
//! `wasm-tools component new --adapt` does.
//!
//! A machine without apt (or where the packages cannot be installed) skips the C guests with the
//! reason, and so do their tests (unless `LIMES_REQUIRE_C` is set, as `scripts/test` does).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use wit_bindgen_core::wit_parser::Resolve;

const CLANG: &str = "/usr/bin/clang-22";
/// Debian's wasi-libc keeps its headers and libraries under the multiarch name `wasm32-wasi`.
const WASI_SYSROOT: &str = "/usr";
const WASM_BUILTINS: &str = "/usr/lib/llvm-22/lib/clang/22/lib/wasi/libclang_rt.builtins-wasm32.a";
const PACKAGES: &[&str] = &[
    "clang-22",
    "lld-22",
    "wasi-libc",
    "libclang-rt-22-dev-wasm32",
];

/// Builds every C guest that is older than its sources; returns the names built or kept.
pub fn build(root: &Path, out: &Path) -> Result<Vec<String>> {
    let guests = super::guest_dirs(root, "c-", "main.c")?;
    if guests.is_empty() {
        return Ok(Vec::new());
    }
    if let Err(e) = ensure_toolchain() {
        eprintln!("skipping the C guests: {e:#}");
        return Ok(Vec::new());
    }
    let wit = root.join("guests/wit");
    let world_file = wit.join("run.wit");
    let mut built = Vec::new();
    for (name, dir) in guests {
        let dest = out.join(format!("{name}.wasm"));
        let mut sources = c_files(&dir)?;
        let inputs: Vec<&Path> = sources
            .iter()
            .map(|p| p.as_path())
            .chain([world_file.as_path()])
            .collect();
        if super::fresh(&dest, &inputs)? {
            built.push(name);
            continue;
        }
        eprintln!("building {name} with clang 22 and wasi-libc");
        let work = root.join("target/c-build").join(&name);
        std::fs::create_dir_all(&work)?;
        let bindings = bindings(&wit, &super::guest_world(&dir)?, &work)?;
        sources.extend(bindings);
        let core = work.join("core.wasm");
        super::run(
            Command::new(CLANG)
                .args([
                    "--target=wasm32-wasi",
                    "-Wno-deprecated",
                    "-mexec-model=reactor",
                    "-O2",
                ])
                .args(["-Wall", "-Werror", "--sysroot", WASI_SYSROOT, "-I"])
                .arg(&work)
                .args(&sources)
                .arg(WASM_BUILTINS)
                .arg("-o")
                .arg(&core),
        )
        .with_context(|| format!("building {}", dir.display()))?;
        componentize(&core, &dest)?;
        built.push(name);
    }
    Ok(built)
}

fn ensure_toolchain() -> Result<()> {
    let present = [CLANG, WASM_BUILTINS, "/usr/lib/wasm32-wasi/crt1-reactor.o"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !present {
        super::debian::apt_install(PACKAGES)?;
    }
    Ok(())
}

fn c_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "c") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Writes the C bindings of the world into `work`; returns the files to compile and link.
fn bindings(wit: &Path, world: &str, work: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(wit)?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    let mut link = Vec::new();
    for (name, contents) in files.iter() {
        let path = work.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        if !name.ends_with(".h") {
            link.push(path);
        }
    }
    Ok(link)
}

/// Wraps a WASI preview 1 core module into a component, adapting its imports to preview 2.
fn componentize(core: &Path, dest: &Path) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()?;
    std::fs::write(dest, component).with_context(|| format!("writing {}", dest.display()))
}
