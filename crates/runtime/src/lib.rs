//! The Limes runtime: runs functions, which are WebAssembly components, each invocation in a
//! fresh, isolated instance with real limits.
//!
//! The API follows Wasmtime's shape: a [`RuntimeConfig`] makes a [`Runtime`], which loads a
//! component with its [`Policy`] into a [`Function`], which is invoked any number of times.
//!
//! ```no_run
//! # async fn demo() -> Result<(), limes_runtime::Error> {
//! use limes_runtime::{Policy, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig { cache_dir: Some("/var/cache/limes".into()), ..Default::default() })?;
//! let sort = runtime.load_file("sort.wasm", Policy::default())?;
//! assert_eq!(sort.invoke("b,a").await?.result, "[a,b]");
//! # Ok(()) }
//! ```
//!
//! Why it starts in microseconds:
//! - compilation happens once per artifact and engine, and is kept in an on-disk AOT cache
//!   ([`CacheStats`] counts hits and compiles);
//! - linking happens once per function (`InstancePre`);
//! - instances come from a pooling allocator with copy-on-write memory images;
//! - one watch thread enforces every timeout and force stop by making the guest's interrupt page
//!   unreadable ([`interrupt`](crate::interrupt)), so no invocation starts a thread or a timer
//!   task of its own, and running guest code pays one load per loop for being stoppable.

mod cache;
mod config;
mod dirs;
mod engine;
mod error;
mod function;
mod host;
mod http;
mod interrupt;
pub mod kv;
pub mod messaging;
mod output;
mod policy;
mod preinit;
mod signature;

use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use cache::{CacheStats, Digest};
pub use config::{PoolConfig, RuntimeConfig};
pub use dirs::Anchor;
pub use error::Error;
pub use function::{Function, FunctionKind, Invocation, WarmInstance};
pub use http::{HttpBody, HttpInvocation};
pub use kv::{KvLimits, KvPolicy};
pub use output::Output;
pub use policy::{DirMount, NetworkPolicy, Policy};
pub use preinit::{INIT_INTERFACE, INIT_TIMEOUT, has_init};
pub use signature::{RUN_FUNCTION, RUN_INTERFACE};
pub use tokio_util::sync::CancellationToken;

use cache::AotCache;
use engine::Kernel;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Loads functions and owns what they share: engines, the AOT cache and the interrupt watch.
///
/// Cheap to clone. Functions keep the runtime's engines alive, so a function stays runnable
/// (and its timeout enforced) even after every `Runtime` handle is dropped.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    config: RuntimeConfig,
    plain: Kernel,
    /// Created on the first function with a fuel budget; most nodes never need it.
    metered: OnceLock<Kernel>,
    cache: AotCache,
    pub(crate) watch: interrupt::Watch,
    /// Where guests' key-value stores live.
    pub(crate) kv: Arc<dyn kv::KvBackend>,
    /// Where guests' messages go.
    pub(crate) messaging: Arc<dyn messaging::MessagingBackend>,
}

impl Runtime {
    /// Creates the engine, opens (or creates) the cache directory and starts the interrupt watch.
    pub fn new(config: RuntimeConfig) -> Result<Self, Error> {
        Self::with_kv(config, Arc::new(kv::MemoryKv::default()))
    }

    /// A runtime whose guests keep their key-value stores in `kv` (the node passes its durable
    /// store; [`Runtime::new`] keeps them in memory, for as long as the process lives).
    pub fn with_kv(config: RuntimeConfig, kv: Arc<dyn kv::KvBackend>) -> Result<Self, Error> {
        Self::with_backends(config, kv, Arc::new(messaging::NoBroker))
    }

    /// A runtime whose guests keep their stores in `kv` and publish their messages through
    /// `messaging`.
    pub fn with_backends(
        config: RuntimeConfig,
        kv: Arc<dyn kv::KvBackend>,
        messaging: Arc<dyn messaging::MessagingBackend>,
    ) -> Result<Self, Error> {
        // The engine first: creating it installs Wasmtime's fault handlers, which the watch's
        // own handler goes in front of.
        let plain = Kernel::new(&config, false)?;
        let watch = interrupt::Watch::start(config.stop_tick)?;
        // Once per process: a build without the probing compiler could never stop a guest.
        interrupt::check_probes(&plain.engine, &watch)?;
        let inner = Arc::new(RuntimeInner {
            plain,
            metered: OnceLock::new(),
            cache: AotCache::new(config.cache_dir.clone())?,
            watch,
            kv,
            messaging,
            config,
        });
        Ok(Self { inner })
    }

    /// The configuration this runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Counters of the AOT cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Loads a function from a component file. See [`Runtime::load`].
    pub fn load_file(&self, path: impl AsRef<Path>, policy: Policy) -> Result<Function, Error> {
        let path = path.as_ref();
        let wasm = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_owned(),
            },
            _ => Error::io(format!("reading {}", path.display()), e),
        })?;
        self.load(&wasm, policy)
    }

    /// Loads a function from component bytes: validates them, compiles them unless the cache
    /// has them, checks the export (`component:run/run#run`, or `wasi:http/incoming-handler` for
    /// an HTTP function) and links the imports.
    ///
    /// Compiling blocks the calling thread (tens of milliseconds for a small component); async
    /// callers should load on a blocking thread.
    pub fn load(&self, wasm: &[u8], policy: Policy) -> Result<Function, Error> {
        check_header(wasm)?;
        self.check_policy(&policy)?;
        let kernel = self.kernel(policy.fuel.is_some())?;
        let digest = Digest::of(wasm);
        let component = self.inner.cache.get_or_compile(kernel, digest, wasm)?;
        let run = signature::find_run(&component);
        let pre = kernel
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Link {
                message: error::chain(&e),
            })?;
        let entry = match run {
            Ok(run) => function::Entry::Run(run),
            // Not a run function: it may be an HTTP one.
            Err(Error::MissingExport { export }) => match ProxyPre::new(pre.clone()) {
                Ok(proxy) => function::Entry::Http(proxy),
                // Nor HTTP: it may handle messages.
                Err(_) => match messaging::MessagePre::new(pre.clone()) {
                    Ok(handler) => function::Entry::Message(handler),
                    Err(_) => return Err(Error::MissingExport { export }),
                },
            },
            Err(other) => return Err(other),
        };
        Ok(Function::new(
            pre,
            entry,
            digest,
            policy,
            self.inner.clone(),
        ))
    }

    pub(crate) fn kernel(&self, metered: bool) -> Result<&Kernel, Error> {
        if !metered {
            return Ok(&self.inner.plain);
        }
        if let Some(kernel) = self.inner.metered.get() {
            return Ok(kernel);
        }
        let kernel = Kernel::new(&self.inner.config, true)?;
        // Two first loads may race to create it; either engine is as good as the other.
        Ok(self.inner.metered.get_or_init(|| kernel))
    }

    pub(crate) fn check_policy(&self, policy: &Policy) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidPolicy { message });
        let max = self.inner.config.pool.max_memory_size;
        if policy.memory_limit > max {
            return invalid(format!(
                "memory limit {} bytes exceeds this node's maximum of {max} bytes",
                policy.memory_limit
            ));
        }
        if policy.timeout.is_zero() {
            return invalid("the timeout must be longer than zero".into());
        }
        for dir in &policy.dirs {
            if !dir.host.is_dir() {
                return invalid(format!(
                    "{} is not a directory on this host",
                    dir.host.display()
                ));
            }
            if !dir.guest.starts_with('/') {
                return invalid(format!("guest path {:?} must be absolute", dir.guest));
            }
        }
        Ok(())
    }
}

/// Tells a component from a core module from something that is not Wasm at all, before the
/// compiler sees it, so that each gets its own error.
pub(crate) fn check_header(wasm: &[u8]) -> Result<(), Error> {
    if wasmparser::Parser::is_component(wasm) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(wasm) {
        Err(Error::NotAComponent)
    } else if wasm.starts_with(b"\0asm") {
        Err(Error::NotWasm {
            reason: "unknown WebAssembly version or layer".into(),
        })
    } else {
        Err(Error::NotWasm {
            reason: "the \\0asm magic number is missing".into(),
        })
    }
}
