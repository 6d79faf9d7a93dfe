//! A loaded function, and its invocations: a fresh store and instance each time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::host::{Host, MemoryLimitHit};
use crate::output::{Capture, Output};
use crate::{Digest, Error, Policy, RuntimeInner, error::chain};

/// A function ready to run: compiled, linked and checked, with its policy.
///
/// Cheap to clone; clones share the compiled code. Each invocation gets its own store and
/// instance, so invocations are isolated from each other and may run concurrently.
#[derive(Clone)]
pub struct Function {
    inner: Arc<Prepared>,
}

struct Prepared {
    pre: InstancePre<Host>,
    run: ComponentExportIndex,
    digest: Digest,
    policy: Policy,
    /// Keeps the engines' ticker alive as long as any function can still run.
    _runtime: Arc<RuntimeInner>,
}

/// The outcome of a successful invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// What `run` returned.
    pub result: String,
    /// What the guest wrote to stdout, up to the policy's bound.
    pub stdout: Output,
    /// What the guest wrote to stderr, up to the policy's bound.
    pub stderr: Output,
    /// From the start of the invocation until the guest's `run` could be entered: the store, the
    /// WASI context and the instance.
    pub cold_start: Duration,
    /// The call of `run` itself.
    pub execution: Duration,
}

/// Why the epoch callback stopped a guest.
#[derive(Debug)]
enum Interrupted {
    Cancelled,
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

impl Function {
    pub(crate) fn new(
        pre: InstancePre<Host>,
        run: ComponentExportIndex,
        digest: Digest,
        policy: Policy,
        runtime: Arc<RuntimeInner>,
    ) -> Self {
        Self {
            inner: Arc::new(Prepared {
                pre,
                run,
                digest,
                policy,
                _runtime: runtime,
            }),
        }
    }

    /// The SHA-256 of the artifact this function was loaded from.
    pub fn digest(&self) -> Digest {
        self.inner.digest
    }

    /// The policy every invocation runs under.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Runs the function once with `args`.
    pub async fn invoke(&self, args: &str) -> Result<Invocation, Error> {
        self.invoke_with(args, &CancellationToken::new()).await
    }

    /// Runs the function once with `args`; cancelling `cancel` from anywhere force-stops it
    /// with [`Error::Cancelled`].
    pub async fn invoke_with(
        &self,
        args: &str,
        cancel: &CancellationToken,
    ) -> Result<Invocation, Error> {
        let policy = &self.inner.policy;
        let started = Instant::now();
        let deadline = started + policy.timeout;
        let stdout = Capture::new(policy.output_limit);
        let stderr = Capture::new(policy.output_limit);

        let work = async {
            let mut store = Store::new(
                self.inner.pre.engine(),
                Host::new(policy, &stdout, &stderr)?,
            );
            store.limiter(|host| &mut host.limiter);
            if let Some(fuel) = policy.fuel {
                store
                    .set_fuel(fuel)
                    .map_err(|e| Error::InvalidPolicy { message: chain(&e) })?;
            }
            // Check once a tick: a force stop or the deadline ends the guest at its next check,
            // and in between the guest yields so that other invocations on this thread run.
            let token = cancel.clone();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if token.is_cancelled() {
                    Err(wasmtime::Error::new(Interrupted::Cancelled))
                } else if Instant::now() >= deadline {
                    Err(wasmtime::Error::new(Interrupted::TimedOut))
                } else {
                    Ok(UpdateDeadline::Yield(1))
                }
            });
            let classify = |e| classify(e, policy, &stderr);
            let instance = self
                .inner
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(classify)?;
            let run = instance
                .get_typed_func::<(&str,), (String,)>(&mut store, &self.inner.run)
                .map_err(classify)?;
            let cold_start = started.elapsed();
            let entered = Instant::now();
            let (result,) = run
                .call_async(&mut store, (args,))
                .await
                .map_err(classify)?;
            Ok((result, cold_start, entered.elapsed()))
        };

        // The epoch callback stops guest code; these arms also stop a guest that is blocked in
        // the host (sleeping, waiting on a socket), where no epoch check runs.
        let (result, cold_start, execution) = tokio::select! {
            biased;
            outcome = work => outcome?,
            () = cancel.cancelled() => return Err(Error::Cancelled),
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(Error::Timeout { limit: policy.timeout })
            }
        };
        Ok(Invocation {
            result,
            stdout: stdout.take(),
            stderr: stderr.take(),
            cold_start,
            execution,
        })
    }
}

/// Turns a Wasmtime failure into the error a user should see.
fn classify(error: wasmtime::Error, policy: &Policy, stderr: &Capture) -> Error {
    if let Some(why) = error.downcast_ref::<Interrupted>() {
        return match why {
            Interrupted::Cancelled => Error::Cancelled,
            Interrupted::TimedOut => Error::Timeout {
                limit: policy.timeout,
            },
        };
    }
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return Error::MemoryLimit {
            limit: hit.limit,
            requested: hit.requested,
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Error::Trap {
            message: format!("the guest exited with status {}", exit.0),
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Error::Capacity {
            message: chain(&error),
        };
    }
    let message = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            return Error::FuelExhausted {
                budget: policy.fuel.unwrap_or(0),
            };
        }
        Some(trap) => trap.to_string(),
        None => chain(&error),
    };
    Error::Trap {
        message: with_guest_words(message, stderr),
    }
}

/// Appends what the guest last said on stderr (a panic message, typically) to a trap message.
fn with_guest_words(message: String, stderr: &Capture) -> String {
    const TAIL: usize = 1024;
    let text = stderr.take().text();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let said = said.join(" | ");
    if said.is_empty() {
        return message;
    }
    let start = said.len().saturating_sub(TAIL);
    let start = (start..said.len())
        .find(|&i| said.is_char_boundary(i))
        .unwrap_or(0);
    format!("{message}; guest stderr: {}", &said[start..])
}
