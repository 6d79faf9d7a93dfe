//! The per-invocation host state: the guest's WASI context and its memory limiter.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::interrupt::Lease;
use crate::kv::{KvBackend, KvCtx, KvCtxView, KvView};
use crate::messaging::{MessagingBackend, MessagingCtx, MessagingCtxView, MessagingView};
use crate::output::Capture;
use crate::{Error, Policy};

/// The data of one invocation's `Store`.
pub(crate) struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outgoing: NoOutgoingHttp,
    kv: KvCtx,
    messaging: MessagingCtx,
    pub limiter: MemoryLimiter,
    /// The store's interrupt page, watched until the store drops.
    pub interrupt: Lease,
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// Outgoing `wasi:http` requests are refused: a function reaches the network only through
/// `wasi:sockets`, where the connect allowlist applies. (Wasmtime's default would let any guest
/// send HTTP anywhere.)
struct NoOutgoingHttp;

/// What `WasiHttpHooks::send_request` returns: the response, and a future for the body's end.
type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
)>;

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _body_done: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl KvView for Host {
    fn kv(&mut self) -> KvCtxView<'_> {
        KvCtxView {
            ctx: &self.kv,
            table: &mut self.table,
        }
    }
}

impl MessagingView for Host {
    fn messaging(&mut self) -> MessagingCtxView<'_> {
        MessagingCtxView {
            ctx: &self.messaging,
            table: &mut self.table,
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host {
    /// The instance's resources, where a host hands a guest its handles.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Builds the guest's WASI world from its policy.
    pub fn new(
        policy: &Policy,
        stdout: &Capture,
        stderr: &Capture,
        interrupt: Lease,
        kv: &Arc<dyn KvBackend>,
        messaging: &Arc<dyn MessagingBackend>,
    ) -> Result<Self, Error> {
        let mut wasi = WasiCtxBuilder::new();
        // File operations run on the invoking thread instead of a round trip through tokio's
        // blocking pool for each one: a guest's small reads and writes then cost microseconds,
        // not a thread hand-off each. It must be set before the dirs are preopened.
        wasi.allow_blocking_current_thread(true);
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&policy.env)
            .args(&policy.args);
        for dir in &policy.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            let invalid = |e: &dyn std::fmt::Display| Error::InvalidPolicy {
                message: format!("cannot preopen {}: {e}", dir.host.display()),
            };
            match &dir.anchor {
                Some(anchor) => {
                    let relative = anchor.relative(&dir.host).ok_or_else(|| {
                        invalid(&format_args!("not below {}", anchor.path().display()))
                    })?;
                    // Resolved again now, beneath the held-open anchor: whatever changed
                    // below it since the last instantiation cannot lead elsewhere.
                    let fd = anchor.open_beneath(relative).map_err(|e| invalid(&e))?;
                    wasi.preopened_dir(crate::dirs::fd_path(&fd), &dir.guest, perms)
                        .map_err(|e| invalid(&e))?;
                }
                None => {
                    wasi.preopened_dir(&dir.host, &dir.guest, perms)
                        .map_err(|e| invalid(&e))?;
                }
            }
        }
        if policy.network.is_enabled() {
            let network = Arc::new(policy.network.clone());
            wasi.allow_tcp(true)
                .allow_udp(true)
                .socket_addr_check(move |addr, used_for| {
                    let allowed = network.allows(addr, used_for);
                    Box::pin(async move { allowed })
                });
        } else {
            wasi.allow_tcp(false).allow_udp(false);
        }
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outgoing: NoOutgoingHttp,
            kv: KvCtx::new(kv.clone(), &policy.kv),
            messaging: MessagingCtx::new(messaging.clone(), &policy.messaging),
            limiter: MemoryLimiter::new(policy.memory_limit),
            interrupt,
        })
    }
}

/// Caps the total linear memory of one instance.
///
/// Past the limit it fails the growth with an error rather than letting `memory.grow` return
/// -1: a Rust guest would turn -1 into an anonymous `unreachable` trap, while the error reaches
/// the host intact and becomes [`Error::MemoryLimit`].
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
}

/// The error a guest's memory growth fails with; see [`MemoryLimiter`].
#[derive(Debug)]
pub(crate) struct MemoryLimitHit {
    pub limit: u64,
    pub requested: u64,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit of {} bytes reached", self.limit)
    }
}

impl std::error::Error for MemoryLimitHit {}

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        Self { limit, used: 0 }
    }

    /// Bytes of linear memory the instance has now: its peak, as Wasm memories never shrink.
    pub fn used(&self) -> u64 {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.used - current as u64 + desired as u64;
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                limit: self.limit,
                requested,
            }));
        }
        self.used = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's per-table element limit already.
        Ok(desired <= 1_000_000)
    }
}
