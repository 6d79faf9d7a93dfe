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
//! - a `SIGSEGV` handler, chained in front of Wasmtime's, shows Wasmtime such a fault as one at
//!   address 0, which Wasmtime turns into `Trap::Interrupt` (a fault at an address outside every
//!   linear memory would otherwise make it abort the process, rightly, as a possible escape);
//! - the lease remembers why it fired ([`Interrupted`]), so the caller reports a timeout or a
//!   force stop rather than a bare trap.
//!
//! Nothing here yields: a guest runs until it returns or is stopped. The node keeps guests that
//! may run long off the threads that serve HTTP for that reason (see `limes-node`'s `guests`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
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
    fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.base + PAGES * self.page
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

    /// Makes a page unreadable (`readable = false`) or readable again.
    fn protect(&self, index: u32, readable: bool) {
        let prot = if readable {
            libc::PROT_READ
        } else {
            libc::PROT_NONE
        };
        // SAFETY: the page lies inside our own mapping; only its protection changes.
        let failed =
            unsafe { libc::mprotect(self.address(index) as *mut libc::c_void, self.page, prot) };
        if failed != 0 {
            // Only possible without memory for the split mapping; a guest that cannot be
            // stopped still ends at the node's outer timeout, so say it and go on.
            tracing::error!(
                error = %std::io::Error::last_os_error(),
                "cannot change the protection of an interrupt page"
            );
        }
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
            && region.contains(addr)
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
            region.protect(watched.page, false);
            watched.fired = Some(why);
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
            if w.fired.take().is_some()
                && let Ok(region) = region()
            {
                region.protect(w.page, true);
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
        if watched.fired.is_some() {
            region.protect(watched.page, true);
        }
        region.give_back(watched.page);
    }
}
