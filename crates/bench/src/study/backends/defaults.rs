//! `wasmtime-defaults`: the same component run in process by Wasmtime with its *default*
//! `Config`: no pooling allocator, no epoch interruption, no fuel, no memory limits, WASI
//! linked synchronously. It is the reference for what Limes' own configuration costs: Limes
//! execution over this backend's is one ratio of the report. Each invocation gets a fresh
//! store and instance, from a component compiled once, as `limes-cold` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use limes_runtime::{RUN_FUNCTION, RUN_INTERFACE};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Context, Measurement, have, ms};
use crate::study::workload::Workload;

/// One instance's state: WASI and its resources, nothing else.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A component compiled and linked, ready to instantiate.
#[derive(Clone)]
struct Loaded {
    pre: InstancePre<State>,
    run: ComponentExportIndex,
}

/// The backend.
pub struct Defaults {
    engine: Engine,
    linker: Linker<State>,
    loaded: Mutex<HashMap<&'static str, Loaded>>,
}

impl Defaults {
    /// An engine with `Config::default()` and WASI 0.2 linked.
    pub fn new(ctx: &Context) -> Result<Self, String> {
        have(&ctx.wasm("noop"))?;
        let engine = Engine::new(&Config::default()).map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            linker,
            loaded: Mutex::default(),
        })
    }

    fn load(&self, name: &'static str, path: &Path) -> Result<Loaded, String> {
        let mut table = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = table.get(name) {
            return Ok(loaded.clone());
        }
        let component = Component::from_file(&self.engine, path).map_err(|e| e.to_string())?;
        let interface = component
            .get_export_index(None, RUN_INTERFACE)
            .ok_or_else(|| format!("{name} exports no {RUN_INTERFACE}"))?;
        let run = component
            .get_export_index(Some(&interface), RUN_FUNCTION)
            .ok_or_else(|| format!("{name} exports no {RUN_INTERFACE}#{RUN_FUNCTION}"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| e.to_string())?;
        let loaded = Loaded { pre, run };
        table.insert(name, loaded.clone());
        Ok(loaded)
    }

    /// One invocation of `w`, on a blocking thread (the calls are synchronous).
    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let loaded = self.load(w.name, &ctx.wasm(w.name))?;
        let (engine, data, args) = (self.engine.clone(), ctx.data.clone(), w.guest_args("/data"));
        tokio::task::spawn_blocking(move || run(&engine, &loaded, &data, &args))
            .await
            .map_err(|e| e.to_string())?
    }
}

/// Instantiates `loaded` with `data` preopened at `/data` and calls `run(args)`, timed as Limes
/// times it: cold start until the function is entered, execution until it returns.
fn run(
    engine: &Engine,
    loaded: &Loaded,
    data: &PathBuf,
    args: &str,
) -> Result<Measurement, String> {
    let started = Instant::now();
    let mut wasi = WasiCtxBuilder::new();
    wasi.preopened_dir(data, "/data", FsPerms::ReadWrite)
        .map_err(|e| e.to_string())?;
    let state = State {
        wasi: wasi.build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(engine, state);
    let instance = loaded
        .pre
        .instantiate(&mut store)
        .map_err(|e| e.to_string())?;
    let func = instance
        .get_typed_func::<(&str,), (String,)>(&mut store, &loaded.run)
        .map_err(|e| e.to_string())?;
    let entered = Instant::now();
    let (result,) = func.call(&mut store, (args,)).map_err(|e| e.to_string())?;
    let execution = entered.elapsed();
    Ok(Measurement {
        cold_ms: Some(ms(entered - started)),
        exec_ms: Some(ms(execution)),
        e2e_ms: ms(started.elapsed()),
        work_ms: None,
        rss_kib: None,
        result,
    })
}
