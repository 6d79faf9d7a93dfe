//! Stopping a running guest through the memory map.
//!
//! Compiled guest code checks for interruption at every function entry and loop header, where
//! upstream Wasmtime compares the engine's epoch against the store's deadline and calls out on a
//! cold path. That call costs tight loops a third of their time (every value live across a loop
//! header must survive a possible call). Limes builds Wasmtime with a patch
//! (`patches/README.md`) that makes each check one load from the store's *interrupt page*,
//! whose address the store's epoch-deadline slot carries. This module owns those pages:
//!
//! - a [`Lease`] gives one store a readable page for as long as the store lives;
//! - the runtime's [`Watch`] thread makes the page unreadable once the lease's deadline passes
//!   or its cancellation token fires, so the guest's next check faults;
//! - a `SIGSEGV` handler, chained in front of Wasmtime's, shows Wasmtime a fault on a page the
//!   watch made unreadable as one at address 0, which Wasmtime turns into `Trap::Interrupt` (a
//!   fault at an address outside every linear memory would otherwise make it abort the process,
//!   rightly, as a possible escape; every other fault, a write into the region included, still
//!   reaches it unchanged);
//! - [`check_probes`] refuses to start a runtime whose compiled code does not probe the page (a
//!   build without the patch would compile epoch compares that never fire);
//! - the lease remembers why it fired ([`Interrupted`]), so the caller reports a timeout or a
//!   force stop rather than a bare trap.
//!
//! Nothing here yields: a guest runs until it returns or is stopped. The node keeps guests that
//! may run long off the threads that serve HTTP for that reason (see `limes-node`'s `guests`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Error;

/// Pages in the process's interrupt region, one per store alive at once: 16 384 pages are
/// 64 MiB of address space and no memory (every page maps the kernel's shared zero page).
const PAGES: usize = 16 * 1024;

/// Why the watch stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    /// Its cancellation token fired: a force stop.
    Cancelled,
    /// Its deadline passed.
    TimedOut,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupted::Cancelled => "cancelled",
            Interrupted::TimedOut => "timed out",
        })
    }
}

impl std::error::Error for Interrupted {}

/// The process's interrupt pages: one mapping, handed out page by page.
struct Region {
    base: usize,
    page: usize,
    free: Mutex<Free>,
}

struct Free {
    recycled: Vec<u32>,
    next: u32,
}

static REGION: OnceLock<Result<Region, String>> = OnceLock::new();

/// One bit per page, set while the watch holds it unreadable: the fault handler rewrites only
/// faults on these, so a stray access to any other page of the region keeps Wasmtime's verdict.
static PROTECTED: [AtomicU64; PAGES / 64] = [const { AtomicU64::new(0) }; PAGES / 64];

fn mark(index: u32, protected: bool) {
    let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
    if protected {
        PROTECTED[word].fetch_or(bit, Ordering::SeqCst);
    } else {
        PROTECTED[word].fetch_and(!bit, Ordering::SeqCst);
    }
}

fn marked(index: usize) -> bool {
    PROTECTED[index / 64].load(Ordering::SeqCst) & (1 << (index % 64)) != 0
}

fn region() -> Result<&'static Region, Error> {
    let region = REGION.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: a fresh anonymous mapping that nothing else refers to.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGES * page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "mapping the interrupt pages: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Region {
            base: base as usize,
            page,
            free: Mutex::new(Free {
                recycled: Vec::new(),
                next: 0,
            }),
        })
    });
    region.as_ref().map_err(|message| Error::Capacity {
        message: message.clone(),
    })
}

impl Region {
    /// The page of the region that `addr` falls in, if any.
    fn page_of(&self, addr: usize) -> Option<usize> {
        (addr >= self.base && addr < self.base + PAGES * self.page)
            .then(|| (addr - self.base) / self.page)
    }

    fn address(&self, index: u32) -> usize {
        self.base + index as usize * self.page
    }

    fn take(&self) -> Result<u32, Error> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = free.recycled.pop() {
            return Ok(index);
        }
        if (free.next as usize) < PAGES {
            free.next += 1;
            return Ok(free.next - 1);
        }
        Err(Error::Capacity {
            message: format!("more than {PAGES} guests are alive at once"),
        })
    }

    fn give_back(&self, index: u32) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.recycled.push(index);
    }

    /// Makes a page unreadable (`readable = false`) or readable again; false if the kernel
    /// refused (only possible without memory to split the mapping).
    fn protect(&self, index: u32, readable: bool) -> bool {
        let prot = if readable {
            libc::PROT_READ
        } else {
            // Marked first: the guest may fault the moment the page goes.
            mark(index, true);
            libc::PROT_NONE
        };
        // SAFETY: the page lies inside our own mapping; only its protection changes.
        let failed =
            unsafe { libc::mprotect(self.address(index) as *mut libc::c_void, self.page, prot) };
        if failed != 0 {
            tracing::error!(
                error = %std::io::Error::last_os_error(),
                readable,
                "cannot change the protection of an interrupt page"
            );
            return false;
        }
        if readable {
            mark(index, false);
        }
        true
    }
}

/// The previous `SIGSEGV` action (Wasmtime's), to which every fault is passed on.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Chains the fault handler in front of Wasmtime's. Call after the first engine exists
/// (creating it installs Wasmtime's handlers), before any guest runs.
fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: plain `sigaction` calls; the handler only reads statics set before it is
        // installed and calls the handler it replaced.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
            action.sa_sigaction = on_fault as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut previous) != 0 {
                panic!(
                    "reading the SIGSEGV handler: {}",
                    std::io::Error::last_os_error()
                );
            }
            let _ = PREVIOUS.set(previous);
            if libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()) != 0 {
                panic!(
                    "installing the SIGSEGV handler: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// The head of `siginfo_t` for a memory fault, as the kernel lays it out.
#[repr(C)]
struct FaultInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    addr: *mut libc::c_void,
}

extern "C" fn on_fault(
    signum: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let mut copy: libc::siginfo_t;
    let mut info = info;
    // SAFETY: the kernel passes a valid `siginfo_t` for SIGSEGV; we read its fault address and
    // hand a modified copy, on our own stack, to the previous handler.
    unsafe {
        let addr = (*info).si_addr() as usize;
        if let Some(Ok(region)) = REGION.get()
            && region.page_of(addr).is_some_and(marked)
        {
            // A probe of an unreadable interrupt page: Wasmtime accepts a fault at address 0
            // in wasm code as a trap, with the probe's trap code, `Interrupt`.
            copy = *info;
            (*(&raw mut copy).cast::<FaultInfo>()).addr = std::ptr::null_mut();
            info = &raw mut copy;
        }
        let Some(previous) = PREVIOUS.get() else {
            return;
        };
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            handler(signum, info, context);
        } else if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
            // Nobody else handles it: restore the default and let the fault happen again.
            libc::sigaction(signum, previous, std::ptr::null_mut());
        } else {
            let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            handler(signum);
        }
    }
}

/// The guests of one runtime that may need stopping, and the thread that stops them.
pub(crate) struct Watch {
    inner: Arc<WatchInner>,
}

struct WatchInner {
    watched: Mutex<HashMap<u64, Watched>>,
    next: AtomicU64,
}

struct Watched {
    page: u32,
    deadline: Instant,
    cancel: CancellationToken,
    fired: Option<Interrupted>,
}

impl Watch {
    /// Starts the watch thread, which checks every `tick`. Call once the runtime's first engine
    /// exists. The thread ends within a tick of the last `Watch` and lease going away.
    pub fn start(tick: Duration) -> Result<Self, Error> {
        region()?;
        install_handler();
        let inner = Arc::new(WatchInner {
            watched: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let weak: Weak<WatchInner> = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("limes-watch".into())
            .spawn(move || {
                while let Some(inner) = weak.upgrade() {
                    inner.check(Instant::now());
                    drop(inner);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| Error::io("starting the interrupt watch thread", e))?;
        Ok(Self { inner })
    }

    /// A page for one store, watched until the lease drops: made unreadable at `deadline` or
    /// when `cancel` fires.
    pub fn lease(&self, deadline: Instant, cancel: &CancellationToken) -> Result<Lease, Error> {
        let region = region()?;
        let page = region.take()?;
        let key = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().insert(
            key,
            Watched {
                page,
                deadline,
                cancel: cancel.clone(),
                fired: None,
            },
        );
        Ok(Lease {
            watch: self.inner.clone(),
            key,
            address: region.address(page),
        })
    }
}

impl WatchInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, now: Instant) {
        let Ok(region) = region() else { return };
        for watched in self.lock().values_mut() {
            if watched.fired.is_some() {
                continue;
            }
            let why = if watched.cancel.is_cancelled() {
                Interrupted::Cancelled
            } else if now >= watched.deadline {
                Interrupted::TimedOut
            } else {
                continue;
            };
            // Fired only once the page is gone; otherwise tried again at the next tick.
            if region.protect(watched.page, false) {
                watched.fired = Some(why);
            }
        }
    }
}

/// One store's interrupt page; see the module's documentation. Dropping it returns the page.
pub(crate) struct Lease {
    watch: Arc<WatchInner>,
    key: u64,
    address: usize,
}

impl Lease {
    /// The value for `Store::set_epoch_deadline`: with an engine epoch that never advances, the
    /// deadline slot holds exactly this, the page's address, which compiled code probes.
    pub fn slot(&self) -> u64 {
        self.address as u64
    }

    /// Why the page was made unreadable, if it was.
    pub fn fired(&self) -> Option<Interrupted> {
        self.watch.lock().get(&self.key).and_then(|w| w.fired)
    }

    /// Watches the same store for another call: a new deadline, and a readable page again if
    /// an earlier call was stopped.
    pub fn rearm(&self, deadline: Instant) {
        let mut watched = self.watch.lock();
        if let Some(w) = watched.get_mut(&self.key) {
            if w.fired.is_some()
                && let Ok(region) = region()
                && region.protect(w.page, true)
            {
                w.fired = None;
            }
            w.deadline = deadline;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(watched) = self.watch.lock().remove(&self.key) else {
            return;
        };
        let Ok(region) = region() else { return };
        if (watched.fired.is_some() || marked(watched.page as usize))
            && !region.protect(watched.page, true)
        {
            // Kept out of use: another store given it would stop at its first check.
            return;
        }
        region.give_back(watched.page);
    }
}

/// A module exporting `f`, a function with nothing in it: `(module (func (export "f")))`.
const EMPTY_FUNCTION: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
    0x03, 0x02, 0x01, 0x00, // functions: one of type 0
    0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // exports: "f" = function 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: no locals, end
];

/// Checks that `engine` compiles interruption checks as probes of the interrupt page: a
/// function entered with its store's page already unreadable must stop with
/// `Trap::Interrupt`. Code from Wasmtime's unpatched compiler compares the engine's epoch, which
/// never advances here, against the page's address, and returns; a runtime built so could never
/// stop a guest, so it refuses to start (say, a build of `limes-runtime` outside this workspace,
/// without its `[patch.crates-io]`).
///
/// What it checks is a property of the build, so it runs once per process: a process that
/// makes runtimes over and over (the benchmark's compile-per-call backend) pays for it once.
pub(crate) fn check_probes(engine: &wasmtime::Engine, watch: &Watch) -> Result<(), Error> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| probe_once(engine, watch))
        .clone()
        .map_err(|message| Error::InvalidPolicy { message })
}

fn probe_once(engine: &wasmtime::Engine, watch: &Watch) -> Result<(), String> {
    let refuse = |why: String| {
        format!(
            "guests could not be stopped: {why} (Limes must be built with the Wasmtime patch in \
             patches/, which the workspace's [patch.crates-io] applies)"
        )
    };
    let module = wasmtime::Module::new(engine, EMPTY_FUNCTION)
        .map_err(|e| refuse(format!("compiling the probe check: {e}")))?;
    let cancel = CancellationToken::new();
    let lease = watch
        .lease(Instant::now() + Duration::from_secs(3600), &cancel)
        .map_err(|e| refuse(format!("leasing an interrupt page: {e}")))?;
    cancel.cancel();
    watch.inner.check(Instant::now());
    if lease.fired().is_none() {
        return Err(refuse(
            "the interrupt page could not be made unreadable".into(),
        ));
    }
    let mut store = wasmtime::Store::new(engine, ());
    store.set_epoch_deadline(lease.slot());
    let call = async {
        let instance = wasmtime::Instance::new_async(&mut store, &module, &[]).await?;
        let f = instance.get_typed_func::<(), ()>(&mut store, "f")?;
        f.call_async(&mut store, ()).await
    };
    // Nothing in it awaits anything: it finishes within one poll, whatever its outcome.
    let mut call = std::pin::pin!(call);
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(e))
            if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) =>
        {
            Ok(())
        }
        Poll::Ready(Err(e)) => Err(refuse(format!("the probe check failed otherwise: {e}"))),
        Poll::Ready(Ok(())) => Err(refuse(
            "compiled code does not probe the interrupt page".into(),
        )),
        Poll::Pending => Err(refuse("the probe check did not finish".into())),
    }
}
