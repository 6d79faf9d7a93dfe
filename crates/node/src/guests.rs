//! Where guests run: on threads of their own, apart from the threads that serve HTTP, or
//! inline when they are known to be short.
//!
//! A guest running on an HTTP thread holds up every request behind it on that thread, among
//! them the next urgent call on its way to the queue; under overload that made urgent p99 four
//! times its unloaded value (see `docs/results/overload/`). On their own threads, at a lower OS
//! priority for the shared slots, guests never delay the node's I/O.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::admission::Pool;

/// The threads guests run on, apart from the threads that serve HTTP: one per run slot for
/// each [`Pool`], those of the shared pool at a lower OS priority (nice 10, a CFS weight of
/// about a tenth).
pub struct GuestThreads {
    runtimes: Vec<tokio::runtime::Runtime>,
    /// Guests running inline on an HTTP thread now; see [`GuestThreads::try_inline`].
    inline: AtomicUsize,
}

/// Guests that may run inline on the HTTP threads at once. A guest does not yield while it
/// runs (the runtime stops it at its deadline, but never pauses it), so a function that was
/// short until now and suddenly loops holds its HTTP thread until its timeout; one at a time
/// leaves the other HTTP threads serving.
const INLINE_AT_ONCE: usize = 1;

/// A claim on running one guest inline; dropping it gives the claim back.
pub struct InlineClaim<'a>(&'a AtomicUsize);

impl Drop for InlineClaim<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The niceness of shared-slot guest threads.
const SHARED_NICE: i32 = 10;

fn guest_runtime(
    threads: usize,
    name: &str,
    nice: i32,
) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .on_thread_start(move || {
            if nice == 0 {
                return;
            }
            // Per-thread on Linux: setpriority with a thread id changes only that thread.
            // SAFETY: plain system calls on the calling thread's own id.
            let failed = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0
            };
            if failed {
                tracing::debug!("cannot lower the priority of a guest thread");
            }
        })
        .enable_all()
        .build()
}

impl GuestThreads {
    /// `threads` guest threads per pool.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        Ok(Self {
            runtimes: vec![
                guest_runtime(threads, "limes-urgent", 0)?,
                guest_runtime(threads, "limes-guest", SHARED_NICE)?,
            ],
            inline: AtomicUsize::new(0),
        })
    }

    /// Claims the right to run a guest inline on the calling HTTP thread, if fewer than
    /// [`INLINE_AT_ONCE`] do now.
    pub fn try_inline(&self) -> Option<InlineClaim<'_>> {
        self.inline
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < INLINE_AT_ONCE).then_some(n + 1)
            })
            .ok()
            .map(|_| InlineClaim(&self.inline))
    }

    /// Runs `work` on a thread of `pool` and waits for it; a panic there becomes `Err`.
    pub async fn run<T: Send + 'static>(
        &self,
        pool: Pool,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let runtime = self
            .runtimes
            .get(pool as usize)
            .ok_or("the guest threads have stopped")?;
        runtime
            .spawn(work)
            .await
            .map_err(|e| format!("a guest task failed: {e}"))
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropped from async code (a node's last reference may go anywhere): never block.
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// Guests that usually finish within this run on the thread that took their request: handing
/// them to a guest thread and back would cost more (two thread wake-ups, tens of µs on a
/// virtual machine) than running them. One at a time ([`INLINE_AT_ONCE`]), because a guest
/// that turns out long does not yield its thread.
pub const INLINE_BELOW: Duration = Duration::from_micros(200);

/// How long a function's invocations usually take, as a moving average; unknown at first.
#[derive(Debug, Default)]
pub struct RecentTime(AtomicU64);

impl RecentTime {
    /// Notes one invocation that took `took`.
    pub fn note(&self, took: Duration) {
        let sample = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample.max(1)
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new, Ordering::Relaxed);
    }

    /// Whether the next invocation may run inline: those of the function so far took less
    /// than [`INLINE_BELOW`], or it has not run yet. A first call is given the benefit of the
    /// doubt: most functions are short and a node with many functions makes many first calls.
    /// One that turns out long holds an HTTP thread until it ends; [`INLINE_AT_ONCE`] bounds how
    /// many such threads there are, whatever a tenant deploys.
    pub fn may_run_inline(&self) -> bool {
        let ns = self.0.load(Ordering::Relaxed);
        Duration::from_nanos(ns) < INLINE_BELOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_guest_at_a_time_may_run_inline() {
        let threads = GuestThreads::new(1).unwrap();
        let first = threads.try_inline().expect("nobody runs inline yet");
        assert!(threads.try_inline().is_none(), "a second inline guest");
        drop(first);
        assert!(threads.try_inline().is_some(), "the claim came back");
    }

    #[test]
    fn a_function_may_run_inline_until_it_is_known_to_be_long() {
        let recent = RecentTime::default();
        assert!(recent.may_run_inline(), "a first call");
        recent.note(Duration::from_micros(50));
        assert!(recent.may_run_inline());
        recent.note(Duration::from_secs(1));
        assert!(!recent.may_run_inline(), "after a long call");
    }
}
