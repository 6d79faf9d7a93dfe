//! Loading: bad inputs get typed errors, and the AOT cache compiles each artifact once.

mod common;

use common::{guest, runtime, wat};
use limes_runtime::{Error, Policy, PoolConfig, Runtime, RuntimeConfig};

#[test]
fn a_missing_file_is_not_found() {
    let err = runtime()
        .load_file("/no/such/function.wasm", Policy::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_wasm_is_rejected() {
    let err = runtime()
        .load(b"#!/bin/sh\necho hi\n", Policy::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotWasm { .. }), "{err:?}");
    assert_eq!(err.kind(), "not-wasm");
}

#[test]
fn a_core_module_is_not_a_component() {
    let err = runtime()
        .load(&wat("core-module"), Policy::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotAComponent), "{err:?}");
    assert!(err.to_string().contains("wasm-tools component new"));
}

#[test]
fn a_component_without_the_export_is_rejected() {
    let err = runtime()
        .load(&wat("no-export"), Policy::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::MissingExport { export } if export == "component:run/run"),
        "{err:?}"
    );
}

#[test]
fn a_wrong_signature_is_named() {
    let err = runtime()
        .load(&wat("wrong-signature"), Policy::default())
        .err()
        .unwrap();
    match err {
        Error::WrongSignature { found, .. } => assert_eq!(found, "func(n: u32) -> u32"),
        other => panic!("expected wrong-signature, got {other:?}"),
    }
}

#[test]
fn a_truncated_component_is_invalid() {
    let bytes = std::fs::read(guest("echo")).unwrap();
    let err = runtime()
        .load(&bytes[..bytes.len() / 2], Policy::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err:?}");
}

#[test]
fn a_policy_with_a_missing_dir_is_rejected() {
    let policy = Policy {
        dirs: vec!["/no/such/dir::/data".parse().unwrap()],
        ..Policy::default()
    };
    let err = runtime().load_file(guest("echo"), policy).err().unwrap();
    assert!(matches!(err, Error::InvalidPolicy { .. }), "{err:?}");
}

fn small_runtime(cache: &std::path::Path) -> Runtime {
    let pool = PoolConfig {
        max_instances: 4,
        ..PoolConfig::default()
    };
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.into()),
        pool,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn the_aot_cache_compiles_once_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let first = small_runtime(cache.path());
    first.load_file(guest("sort"), Policy::default()).unwrap();
    assert_eq!(first.cache_stats().compiles, 1);

    // The same artifact again in the same process: served from memory.
    first.load_file(guest("sort"), Policy::default()).unwrap();
    let stats = first.cache_stats();
    assert_eq!((stats.compiles, stats.memory_hits), (1, 1));
    drop(first);

    // A new process on the same cache dir: deserialized, never compiled.
    let second = small_runtime(cache.path());
    let sort = second.load_file(guest("sort"), Policy::default()).unwrap();
    let stats = second.cache_stats();
    assert_eq!((stats.compiles, stats.disk_hits), (0, 1), "{stats:?}");
    assert_eq!(sort.invoke("c,b,a").await.unwrap().result, "[a,b,c]");
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_replaced_not_trusted() {
    let cache = tempfile::tempdir().unwrap();
    small_runtime(cache.path())
        .load_file(guest("echo"), Policy::default())
        .unwrap();
    for entry in walk(cache.path()) {
        std::fs::write(entry, b"garbage").unwrap();
    }
    let runtime = small_runtime(cache.path());
    let echo = runtime.load_file(guest("echo"), Policy::default()).unwrap();
    let stats = runtime.cache_stats();
    assert_eq!(
        (stats.rejected_entries, stats.compiles),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(echo.invoke("fine").await.unwrap().result, "fine");
}

#[tokio::test]
async fn metered_and_plain_code_are_cached_apart() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = small_runtime(cache.path());
    runtime.load_file(guest("echo"), Policy::default()).unwrap();
    runtime
        .load_file(
            guest("echo"),
            Policy {
                fuel: Some(1 << 30),
                ..Policy::default()
            },
        )
        .unwrap();
    assert_eq!(runtime.cache_stats().compiles, 2);
    assert_eq!(walk(cache.path()).len(), 2);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}

/// The study's Wasm workloads are built with 128-bit SIMD (`simd128`, from `cargo xtask
/// guests`), as the report's comparison with native assumes: a build without it would lose the
/// vectorized Mandelbrot lanes silently.
#[test]
fn the_workloads_are_built_with_simd128() {
    for name in ["mandelbrot", "image-processing"] {
        let bytes = std::fs::read(common::guest(name)).unwrap();
        let mut simd = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            if let Ok(wasmparser::Payload::CodeSectionEntry(body)) = payload {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    let op = format!("{:?}", ops.read().unwrap());
                    if op.starts_with("V128") || op.contains("x4") || op.contains("x2") {
                        simd += 1;
                    }
                }
            }
        }
        assert!(simd > 0, "{name}.wasm has no SIMD instruction");
    }
}
