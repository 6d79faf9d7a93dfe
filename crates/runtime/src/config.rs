//! How a [`Runtime`](crate::Runtime) is set up: its instance pool, how often it looks for guests
//! to stop and where the AOT cache lives. The defaults are sized for a small edge node (2 cores, a few GiB of RAM).

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of the on-disk AOT cache. `None` keeps compiled code in memory only, so every
    /// new process compiles again.
    pub cache_dir: Option<PathBuf>,
    /// The pooling allocator's sizes.
    pub pool: PoolConfig,
    /// How often the runtime's interrupt watch looks for guests past their deadline or
    /// force-stopped. A guest running its own code stops within one tick of either.
    ///
    /// Default 1 ms: a force stop must land within 100 ms, and one wake-up a millisecond costs a
    /// thread well under 1 % of one core.
    pub stop_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pool: PoolConfig::default(),
            stop_tick: Duration::from_millis(1),
        }
    }
}

/// Sizes of the pooling instance allocator.
///
/// The pool reserves every slot up front (as virtual address space, not RAM), which is what makes
/// a fresh instance cost microseconds: starting one claims a slot and maps the component's
/// copy-on-write memory image into it, with no `mmap` or page-zeroing on the hot path.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Instances alive at once, across all functions of one engine. An invocation past this
    /// fails with [`Error::Capacity`](crate::Error::Capacity).
    ///
    /// Default 256: a 2-core node cannot usefully run more at once, and each slot costs only
    /// address space until used.
    pub max_instances: u32,
    /// The largest linear memory any one function may have, in bytes. A policy's memory limit is
    /// capped at this.
    ///
    /// Default 1 GiB: far beyond what an edge function should need, well within the RAM of a
    /// small node, and a bound on what one misbehaving guest can take.
    pub max_memory_size: u64,
    /// Core instances inside one component. A `wasm32-wasip2` component holds its module plus the
    /// WASI adapter and a few shims.
    ///
    /// Default 32: room for components composed of several modules.
    pub max_core_instances_per_component: u32,
    /// Linear memories inside one component (module and adapter each may have one).
    ///
    /// Default 4.
    pub max_memories_per_component: u32,
    /// Tables inside one component (the shims use several).
    ///
    /// Default 16.
    pub max_tables_per_component: u32,
    /// Bytes of each memory slot kept resident and zeroed by `memset` on reuse rather than
    /// returned to the kernel with `madvise`; small guests then reuse hot pages.
    ///
    /// Default 1 MiB: covers the stack and heap that a typical small function touches.
    pub keep_resident: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_size: 1 << 30,
            max_core_instances_per_component: 32,
            max_memories_per_component: 4,
            max_tables_per_component: 16,
            keep_resident: 1 << 20,
        }
    }
}
