//! A loaded function, and its invocations: a fresh store and instance each time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::host::{Host, MemoryLimitHit};
use crate::interrupt::Interrupted;
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

pub(crate) struct Prepared {
    pub pre: InstancePre<Host>,
    pub entry: Entry,
    digest: Digest,
    pub policy: Policy,
    /// Keeps the engines and the interrupt watch alive as long as any function can still run.
    runtime: Arc<RuntimeInner>,
}

/// What a function exports, which decides how it is invoked.
pub(crate) enum Entry {
    /// `component:run/run#run`: invoked with [`Function::invoke`].
    Run(ComponentExportIndex),
    /// `wasi:http/incoming-handler`: invoked with [`Function::handle_http`].
    Http(ProxyPre<Host>),
    /// `wasi:messaging/incoming-handler`: invoked with [`Function::handle_message`].
    Message(crate::messaging::MessagePre<Host>),
}

/// The kind of a function, from what its component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Exports `component:run/run`: `run(args: string) -> string`.
    Run,
    /// Exports `wasi:http/incoming-handler` (the `wasi:http/proxy` world).
    Http,
    /// Exports `wasi:messaging/incoming-handler` (the `wasi:messaging/messaging-core` world).
    Message,
}

impl FunctionKind {
    /// `run`, `http` or `message`.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionKind::Run => "run",
            FunctionKind::Http => "http",
            FunctionKind::Message => "message",
        }
    }
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
    /// Bytes of linear memory the instance had at the end: the guest's peak memory.
    pub memory: u64,
}

impl Function {
    pub(crate) fn new(
        pre: InstancePre<Host>,
        entry: Entry,
        digest: Digest,
        policy: Policy,
        runtime: Arc<RuntimeInner>,
    ) -> Self {
        Self {
            inner: Arc::new(Prepared {
                pre,
                entry,
                digest,
                policy,
                runtime,
            }),
        }
    }

    pub(crate) fn prepared(&self) -> &Prepared {
        &self.inner
    }

    /// Whether this is a `run`, an HTTP or a message function.
    pub fn kind(&self) -> FunctionKind {
        match self.inner.entry {
            Entry::Run(_) => FunctionKind::Run,
            Entry::Http(_) => FunctionKind::Http,
            Entry::Message(_) => FunctionKind::Message,
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

        let Entry::Run(run_export) = &self.inner.entry else {
            return Err(Error::WrongKind {
                expected: FunctionKind::Run,
                found: self.kind(),
            });
        };
        let work = async {
            let mut store = self.inner.new_store(cancel, deadline, &stdout, &stderr)?;
            let run = self
                .inner
                .instantiate_run(&mut store, run_export, &stderr)
                .await?;
            let cold_start = started.elapsed();
            let entered = Instant::now();
            let (result,) = run
                .call_async(&mut store, (args.to_owned(),))
                .await
                .map_err(|e| classify(explain(e, store.data()), policy, &stderr))?;
            Ok((
                result,
                cold_start,
                entered.elapsed(),
                store.data().limiter.used(),
            ))
        };

        // The interrupt watch stops guest code; these arms also stop a guest that is blocked in
        // the host (sleeping, waiting on a socket), where no interruption check runs.
        let (result, cold_start, execution, memory) = tokio::select! {
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
            memory,
        })
    }

    /// Hands `message` to a message function's `incoming-handler` in a fresh instance, under its
    /// timeout. The handler's own error becomes [`Error::Trap`] with its words; the
    /// [`Invocation`]'s `result` is empty.
    pub async fn handle_message(
        &self,
        message: crate::messaging::Message,
    ) -> Result<Invocation, Error> {
        let policy = &self.inner.policy;
        let started = Instant::now();
        let deadline = started + policy.timeout;
        let stdout = Capture::new(policy.output_limit);
        let stderr = Capture::new(policy.output_limit);
        let Entry::Message(pre) = &self.inner.entry else {
            return Err(Error::WrongKind {
                expected: FunctionKind::Message,
                found: self.kind(),
            });
        };
        let cancel = CancellationToken::new();
        let work = async {
            let mut store = self.inner.new_store(&cancel, deadline, &stdout, &stderr)?;
            let guest = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(explain(e, store.data()), policy, &stderr))?;
            let handle = store
                .data_mut()
                .table()
                .push(message)
                .map_err(|e| Error::Trap {
                    message: e.to_string(),
                })?;
            let cold_start = started.elapsed();
            let entered = Instant::now();
            let answered = guest
                .wasi_messaging_incoming_handler()
                .call_handle(&mut store, handle)
                .await
                .map_err(|e| classify(explain(e, store.data()), policy, &stderr))?;
            if let Err(e) = answered {
                return Err(Error::Trap {
                    message: format!(
                        "the message handler failed: {}",
                        crate::messaging::describe(&e)
                    ),
                });
            }
            Ok((cold_start, entered.elapsed(), store.data().limiter.used()))
        };
        let (cold_start, execution, memory) = tokio::select! {
            biased;
            outcome = work => outcome?,
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(Error::Timeout { limit: policy.timeout })
            }
        };
        Ok(Invocation {
            result: String::new(),
            stdout: stdout.take(),
            stderr: stderr.take(),
            cold_start,
            execution,
            memory,
        })
    }

    /// An instance to call again and again: no cold start after the first, and no isolation
    /// between the calls. For benchmarks, and for functions known to keep no state.
    pub async fn warm(&self) -> Result<WarmInstance, Error> {
        let Entry::Run(run_export) = &self.inner.entry else {
            return Err(Error::WrongKind {
                expected: FunctionKind::Run,
                found: self.kind(),
            });
        };
        let policy = &self.inner.policy;
        let stdout = Capture::new(policy.output_limit);
        let stderr = Capture::new(policy.output_limit);
        let mut store = self.inner.new_store(
            &CancellationToken::new(),
            Instant::now() + policy.timeout,
            &stdout,
            &stderr,
        )?;
        let run = self
            .inner
            .instantiate_run(&mut store, run_export, &stderr)
            .await?;
        Ok(WarmInstance {
            function: self.clone(),
            store,
            run,
            stdout,
            stderr,
        })
    }
}

/// An instance kept between calls; see [`Function::warm`].
pub struct WarmInstance {
    function: Function,
    store: Store<Host>,
    run: wasmtime::component::TypedFunc<(String,), (String,)>,
    stdout: Capture,
    stderr: Capture,
}

impl WarmInstance {
    /// Calls `run` on the kept instance, under the function's timeout. After an error the
    /// instance may be unusable; make a new one.
    pub async fn invoke(&mut self, args: &str) -> Result<Invocation, Error> {
        let policy = &self.function.inner.policy;
        let entered = Instant::now();
        self.store.data().interrupt.rearm(entered + policy.timeout);
        let outcome = self
            .run
            .call_async(&mut self.store, (args.to_owned(),))
            .await;
        let (result,) =
            outcome.map_err(|e| classify(explain(e, self.store.data()), policy, &self.stderr))?;
        Ok(Invocation {
            result,
            stdout: self.stdout.take(),
            stderr: self.stderr.take(),
            cold_start: Duration::ZERO,
            execution: entered.elapsed(),
            memory: self.store.data().limiter.used(),
        })
    }
}

impl Prepared {
    /// Instantiates the function in `store` and returns its `run`.
    async fn instantiate_run(
        &self,
        store: &mut Store<Host>,
        run_export: &ComponentExportIndex,
        stderr: &Capture,
    ) -> Result<wasmtime::component::TypedFunc<(String,), (String,)>, Error> {
        let instance = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| classify(explain(e, store.data()), &self.policy, stderr))?;
        instance
            .get_typed_func::<(String,), (String,)>(&mut *store, run_export)
            .map_err(|e| classify(e, &self.policy, stderr))
    }

    /// A fresh store for one invocation, with the policy's limits and an interrupt page that the
    /// runtime's watch makes unreadable at the deadline or when `cancel` fires.
    pub(crate) fn new_store(
        &self,
        cancel: &CancellationToken,
        deadline: Instant,
        stdout: &Capture,
        stderr: &Capture,
    ) -> Result<Store<Host>, Error> {
        let policy = &self.policy;
        let interrupt = self.runtime.watch.lease(deadline, cancel)?;
        let host = Host::new(
            policy,
            stdout,
            stderr,
            interrupt,
            &self.runtime.kv,
            &self.runtime.messaging,
        )?;
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.limiter);
        if let Some(fuel) = policy.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| Error::InvalidPolicy { message: chain(&e) })?;
        }
        store.set_epoch_deadline(store.data().interrupt.slot());
        Ok(store)
    }
}

/// Names why an interrupted guest stopped, which its store's interrupt lease recorded: a bare
/// `Trap::Interrupt` becomes [`Interrupted`], which [`classify`] reports as a timeout or a force
/// stop.
pub(crate) fn explain(error: wasmtime::Error, host: &Host) -> wasmtime::Error {
    match (error.downcast_ref::<Trap>(), host.interrupt.fired()) {
        (Some(Trap::Interrupt), Some(why)) => wasmtime::Error::new(why),
        _ => error,
    }
}

/// Turns a Wasmtime failure into the error a user should see.
pub(crate) fn classify(error: wasmtime::Error, policy: &Policy, stderr: &Capture) -> Error {
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
