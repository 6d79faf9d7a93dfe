//! The Wasmtime engines behind a runtime.

use std::hash::{Hash, Hasher};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;
use crate::host::Host;
use crate::{Error, error::chain};

/// An engine with the linker that provides WASI to its components.
///
/// A runtime has up to two: a plain one, and a *metered* one for functions with a CPU budget.
/// Fuel metering is compiled into the code, costing every guest instruction; keeping it to its
/// own engine means functions without a budget do not pay for it.
pub(crate) struct Kernel {
    pub engine: Engine,
    pub linker: Linker<Host>,
    /// Names the compiled-code format: a cache entry is only valid for the same fingerprint.
    pub fingerprint: String,
}

impl Kernel {
    pub fn new(config: &RuntimeConfig, metered: bool) -> Result<Self, Error> {
        let pool = &config.pool;
        let mut pooling = PoolingAllocationConfig::default();
        let memories = pool.max_instances * pool.max_memories_per_component;
        pooling
            .total_component_instances(pool.max_instances)
            .total_core_instances(pool.max_instances * pool.max_core_instances_per_component)
            .total_memories(memories)
            .total_tables(pool.max_instances * pool.max_tables_per_component)
            .total_stacks(pool.max_instances)
            .max_core_instances_per_component(pool.max_core_instances_per_component)
            .max_memories_per_component(pool.max_memories_per_component)
            .max_tables_per_component(pool.max_tables_per_component)
            .max_memory_size(usize::try_from(pool.max_memory_size).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(pool.keep_resident)
            // Tables too: decommitting them with `madvise` costs a TLB shootdown on every core
            // per instance, which dominated the wasi:http path under concurrency.
            .table_keep_resident(pool.keep_resident)
            // Without PAGEMAP_SCAN (Linux 6.7+), reuse memsets the whole kept-resident prefix
            // of every memory: 1 MiB per instance, the largest cost of a no-op invocation. With
            // it, only the pages the guest dirtied are reset. `Auto` falls back where absent.
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            // With the project's patch this compiles interrupt-page probes, not epoch compares;
            // the engine's epoch never advances (see `interrupt`).
            .epoch_interruption(true)
            .consume_fuel(metered)
            // Copy-on-write images: instantiation maps the data segments instead of copying them.
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm).map_err(|e| Error::InvalidPolicy {
            message: format!(
                "cannot create the engine with this pool configuration: {}",
                chain(&e)
            ),
        })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| crate::kv::add_to_linker(&mut linker))
            .and_then(|()| crate::messaging::add_to_linker(&mut linker))
            .map_err(|e| Error::Link { message: chain(&e) })?;

        let fingerprint = fingerprint(&engine, metered);
        Ok(Self {
            engine,
            linker,
            fingerprint,
        })
    }
}

/// How compiled code checks for interruption. Wasmtime's own hash cannot tell the patched probe
/// from upstream's epoch compare, and code with the compare would never stop under Limes' watch.
const INTERRUPT_SCHEME: &str = "interrupt-page-probe-v1";

/// A short, stable name for everything that makes compiled code (in)compatible: Wasmtime's own
/// compatibility hash (version, target, compiler flags, tunables), the interruption scheme and
/// the metering flag.
fn fingerprint(engine: &Engine, metered: bool) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the full digest is read")
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    INTERRUPT_SCHEME.hash(&mut hasher);
    metered.hash(&mut hasher);
    let digest = hasher.0.finalize();
    format!(
        "{}-{}",
        if metered { "metered" } else { "plain" },
        hex::encode(&digest[..8])
    )
}
