//! Start-up benchmark of the runtime, the figures behind SPECIFICATION.md:
//! - cold start of the no-op function (fresh store and instance from the AOT cache, up to entry);
//! - the same measured the original Limes way (engine, compile and instantiate per invocation),
//!   as the baseline for the ratio;
//! - first compilation of the no-op, and a load that hits the on-disk cache.
//!
//! Run with `cargo bench -p limes-runtime --bench startup` after `cargo xtask guests`.
//! `LIMES_BENCH_ITERATIONS` sets the number of cold starts (default 20000).

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use limes_runtime::{Policy, PoolConfig, Runtime, RuntimeConfig};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

fn main() {
    let noop_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/noop.wasm");
    let Ok(noop) = std::fs::read(&noop_path) else {
        eprintln!(
            "SKIPPED: {} is missing; run `cargo xtask guests` first",
            noop_path.display()
        );
        return;
    };
    let iterations: u64 = std::env::var("LIMES_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = |pool| RuntimeConfig {
        cache_dir: Some(cache.path().into()),
        pool,
        ..RuntimeConfig::default()
    };

    // First compilation: a fresh runtime each time, and a fresh cache dir so nothing is reused.
    let mut compile = histogram();
    for _ in 0..10 {
        let fresh = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(fresh.path().into()),
            ..config(small_pool())
        })
        .unwrap();
        runtime.load(&noop, Policy::default()).unwrap();
        record(&mut compile, runtime.cache_stats().compile_time);
    }

    // A restart: a new runtime on a warm cache dir deserializes instead of compiling.
    Runtime::new(config(small_pool()))
        .unwrap()
        .load(&noop, Policy::default())
        .unwrap();
    let mut cached_load = histogram();
    for _ in 0..10 {
        let runtime = Runtime::new(config(small_pool())).unwrap();
        let started = Instant::now();
        runtime.load(&noop, Policy::default()).unwrap();
        record(&mut cached_load, started.elapsed());
        assert_eq!(
            runtime.cache_stats().compiles,
            0,
            "a warm cache must not compile"
        );
    }

    // Cold starts from the AOT cache.
    let runtime = Runtime::new(config(PoolConfig::default())).unwrap();
    let function = runtime.load(&noop, Policy::default()).unwrap();
    let (mut cold, mut exec) = (histogram(), histogram());
    rt.block_on(async {
        for i in 0..iterations + 1000 {
            let invocation = function.invoke("").await.unwrap();
            if i >= 1000 {
                record(&mut cold, invocation.cold_start);
                record(&mut exec, invocation.execution);
            }
        }
    });

    // The original Limes: a new engine and a JIT compile for every cold start.
    let mut original = histogram();
    rt.block_on(async {
        for _ in 0..20 {
            let started = Instant::now();
            original_limes_cold_start(&noop).await;
            record(&mut original, started.elapsed());
        }
    });

    println!("limes-runtime start-up benchmark (no-op function, {iterations} cold starts)");
    report("cold start (AOT cache, pooled instance)", &cold);
    report("execution of run()", &exec);
    report("first compilation", &compile);
    report("load from a warm on-disk cache", &cached_load);
    report(
        "original Limes cold start (engine + compile + instantiate)",
        &original,
    );
    println!(
        "ratio original/limes cold start at p50: {:.0}x",
        original.value_at_quantile(0.5) as f64 / cold.value_at_quantile(0.5) as f64
    );
}

struct Plain {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What the original Limes did per cold start, up to the entry of `run`.
async fn original_limes_cold_start(wasm: &[u8]) {
    let engine = Engine::default();
    let component = Component::new(&engine, wasm).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let mut store = Store::new(
        &engine,
        Plain {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let instance = linker
        .instantiate_async(&mut store, &component)
        .await
        .unwrap();
    let iface = component
        .get_export_index(None, "component:run/run")
        .unwrap();
    let run = component.get_export_index(Some(&iface), "run").unwrap();
    instance
        .get_typed_func::<(&str,), (String,)>(&mut store, &run)
        .unwrap();
}

fn small_pool() -> PoolConfig {
    PoolConfig {
        max_instances: 4,
        ..PoolConfig::default()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos() as u64);
}

fn report(what: &str, h: &Histogram<u64>) {
    let us = |ns: u64| ns as f64 / 1e3;
    println!(
        "{what:<60} p50 {:>10.1} µs  p99 {:>10.1} µs  min {:>10.1} µs  (n={})",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.min()),
        h.len()
    );
}
