//! Pre-initialization: run a function's initialization step once and keep the state it leaves
//! as a new component (Wizer), so that every invocation starts initialized.
//!
//! A function declares the step by exporting [`INIT_INTERFACE`] (`limes_guest::init!` does it).
//! The step runs under the function's own policy (memory limit, preopened directories,
//! environment), with [`INIT_TIMEOUT`] instead of its per-call timeout; what it leaves in linear
//! memory and globals is written into the new component's data segments. The new component
//! still exports the step; a node never runs it again (it keeps the initialized version apart).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::Store;

use crate::function::{classify, explain};
use crate::host::Host;
use crate::output::Capture;
use crate::{Error, Policy, Runtime, check_header, error::chain};

/// The interface a function exports to declare an initialization step.
pub const INIT_INTERFACE: &str = "component:run/init";
/// Its one function, as Wizer names it.
const INIT_FUNCTION: &str = "component:run/init.init";
/// How long the step may run: it runs once, at deploy, and may do what a thousand calls would
/// otherwise each repeat, so it gets longer than a call; but a deploy must end.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `wasm` is a component that exports [`INIT_INTERFACE`]. Anything unreadable is not
/// (loading it reports why).
pub fn has_init(wasm: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            // Only the outermost component's exports are the function's.
            Ok(Payload::ComponentExportSection(exports)) if depth == 0 => {
                if exports
                    .into_iter()
                    .any(|e| e.is_ok_and(|e| e.name.name == INIT_INTERFACE))
                {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

impl Runtime {
    /// Runs the initialization step of `wasm` under `policy` and returns the initialized
    /// component. [`Error::MissingExport`] if it declares none; a trap, a timeout or the memory
    /// limit is the error an invocation would get, with what the guest said on stderr.
    ///
    /// Compiles the component (instrumented), so it takes as long as a first load and more;
    /// async callers should expect seconds for a large component.
    pub async fn preinit(&self, wasm: &[u8], policy: &Policy) -> Result<Vec<u8>, Error> {
        check_header(wasm)?;
        self.check_policy(policy)?;
        if !has_init(wasm) {
            return Err(Error::MissingExport {
                export: INIT_INTERFACE.into(),
            });
        }
        let kernel = self.kernel(policy.fuel.is_some())?;
        let stdout = Capture::new(policy.output_limit);
        let stderr = Capture::new(policy.output_limit);
        let interrupt = self
            .inner
            .watch
            .lease(Instant::now() + INIT_TIMEOUT, &CancellationToken::new())?;
        // No key-value store during the step: a handle it kept would not survive the snapshot,
        // and what it wrote would happen once, at deploy, not per instance.
        let policy = Policy {
            kv: crate::KvPolicy::default(),
            ..policy.clone()
        };
        let host = Host::new(
            &policy,
            &stdout,
            &stderr,
            interrupt,
            &self.inner.kv,
            &self.inner.messaging,
        )?;
        let mut store = Store::new(&kernel.engine, host);
        store.limiter(|host| &mut host.limiter);
        if let Some(fuel) = policy.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| Error::InvalidPolicy { message: chain(&e) })?;
        }
        store.set_epoch_deadline(store.data().interrupt.slot());
        let mut wizer = wasmtime_wizer::Wizer::new();
        wizer.init_func(INIT_FUNCTION);
        let linker = &kernel.linker;
        let outcome = wizer
            .run_component(&mut store, wasm, async |store, component| {
                linker.instantiate_async(store, component).await
            })
            .await;
        match outcome {
            Ok((snapshot, _)) => Ok(snapshot),
            Err(e) => {
                let init_policy = Policy {
                    timeout: INIT_TIMEOUT,
                    ..policy.clone()
                };
                Err(
                    match classify(explain(e, store.data()), &init_policy, &stderr) {
                        Error::Trap { message } => Error::Trap {
                            message: format!("the initialization step failed: {message}"),
                        },
                        other => other,
                    },
                )
            }
        }
    }
}
