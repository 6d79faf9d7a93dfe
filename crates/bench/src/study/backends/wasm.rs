//! The WebAssembly family: Limes in process (first cold, cold, warm), Limes through a
//! `limes serve` node, Wasmtime with its default configuration in process, and the `wasmtime`
//! CLI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use limes_runtime::{DirMount, Function, Policy, PoolConfig, Runtime, RuntimeConfig, WarmInstance};

use super::process::{Spawn, Unit, spawned};
use super::{Context, Measurement, have, ms};
use crate::process::{Server, find_on_path, free_port};
use crate::study::workload::Workload;

/// A Wasm-family backend.
pub enum Wasm {
    /// The original Limes: a new engine and a compile for every invocation.
    LimesFirstCold,
    /// A fresh instance from the AOT cache per invocation.
    LimesCold {
        runtime: Runtime,
        functions: Mutex<HashMap<&'static str, Function>>,
    },
    /// One instance per workload, reused.
    LimesWarm {
        runtime: Runtime,
        instances: tokio::sync::Mutex<HashMap<&'static str, WarmInstance>>,
    },
    /// Through a `limes serve` child process.
    LimesHttp {
        server: Server,
        client: reqwest::Client,
        deployed: tokio::sync::Mutex<Vec<&'static str>>,
    },
    /// `wasmtime run --invoke`, one process per invocation.
    WasmtimeCli { binary: PathBuf },
    /// Wasmtime's default `Config` in process: see [`super::defaults`].
    WasmtimeDefaults(super::defaults::Defaults),
}

fn policy(data: &Path) -> Policy {
    let dir = DirMount {
        host: data.into(),
        guest: "/data".into(),
        writable: true,
        anchor: None,
    };
    Policy {
        dirs: vec![dir],
        memory_limit: 512 << 20,
        ..Policy::default()
    }
}

fn small_pool() -> RuntimeConfig {
    RuntimeConfig {
        pool: PoolConfig {
            max_instances: 16,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::default()
    }
}

/// Detects `name` if it is of this family.
pub async fn detect(name: &str, ctx: &Context) -> Option<Result<Wasm, String>> {
    Some(match name {
        "limes-first-cold" => have(&ctx.wasm("noop")).map(|()| Wasm::LimesFirstCold),
        "limes-cold" | "limes-warm" => in_process(name, ctx),
        "limes-http" => http(ctx).await,
        "wasmtime-defaults" => super::defaults::Defaults::new(ctx).map(Wasm::WasmtimeDefaults),
        "wasmtime-cli" => find_on_path("wasmtime")
            .map(|binary| Wasm::WasmtimeCli { binary })
            .ok_or_else(|| {
                "no `wasmtime` on PATH (cargo install wasmtime-cli --version 48.0.8)".into()
            }),
        _ => return None,
    })
}

fn in_process(name: &str, ctx: &Context) -> Result<Wasm, String> {
    have(&ctx.wasm("noop"))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(ctx.scratch.join("aot")),
        ..small_pool()
    })
    .map_err(|e| e.to_string())?;
    Ok(if name == "limes-cold" {
        Wasm::LimesCold {
            runtime,
            functions: Mutex::default(),
        }
    } else {
        Wasm::LimesWarm {
            runtime,
            instances: Default::default(),
        }
    })
}

async fn http(ctx: &Context) -> Result<Wasm, String> {
    have(&ctx.limes)?;
    let port = free_port()?;
    let mut cmd = Command::new(&ctx.limes);
    // The workloads' data directory is the one host directory their manifests preopen.
    std::fs::create_dir_all(&ctx.data).map_err(|e| format!("{}: {e}", ctx.data.display()))?;
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(ctx.scratch.join("node"))
        .arg("--allow-host-dir")
        .arg(&ctx.data);
    let mut server = Server::start(cmd, port, "/healthz").await?;
    server.authorization = Some(crate::process::admin_bearer(&ctx.scratch.join("node"))?);
    Ok(Wasm::LimesHttp {
        server,
        client: reqwest::Client::new(),
        deployed: Default::default(),
    })
}

impl Wasm {
    /// Whether invocations may overlap (the concurrency sweep).
    pub fn concurrent(&self) -> bool {
        !matches!(self, Wasm::LimesWarm { .. } | Wasm::LimesFirstCold)
    }

    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let args = w.guest_args("/data");
        match self {
            Wasm::LimesFirstCold => {
                let started = Instant::now();
                let runtime = Runtime::new(small_pool()).map_err(|e| e.to_string())?;
                let function = runtime
                    .load_file(ctx.wasm(w.name), policy(&ctx.data))
                    .map_err(|e| e.to_string())?;
                let loaded = started.elapsed();
                let i = function.invoke(&args).await.map_err(|e| e.to_string())?;
                Ok(measured(i, started, Some(loaded)))
            }
            Wasm::LimesCold { runtime, functions } => {
                let function = {
                    let mut table = functions.lock().unwrap_or_else(|p| p.into_inner());
                    match table.get(w.name) {
                        Some(f) => f.clone(),
                        None => {
                            let f = runtime
                                .load_file(ctx.wasm(w.name), policy(&ctx.data))
                                .map_err(|e| e.to_string())?;
                            table.insert(w.name, f.clone());
                            f
                        }
                    }
                };
                let started = Instant::now();
                let i = function.invoke(&args).await.map_err(|e| e.to_string())?;
                Ok(measured(i, started, None))
            }
            Wasm::LimesWarm { runtime, instances } => {
                let mut table = instances.lock().await;
                if !table.contains_key(w.name) {
                    let f = runtime
                        .load_file(ctx.wasm(w.name), policy(&ctx.data))
                        .map_err(|e| e.to_string())?;
                    table.insert(w.name, f.warm().await.map_err(|e| e.to_string())?);
                }
                let instance = table.get_mut(w.name).expect("inserted above");
                let started = Instant::now();
                let i = instance.invoke(&args).await.map_err(|e| e.to_string())?;
                Ok(measured(i, started, None))
            }
            Wasm::LimesHttp {
                server,
                client,
                deployed,
            } => through_node(server, client, deployed, w, &args, ctx).await,
            Wasm::WasmtimeDefaults(defaults) => defaults.invoke(w, ctx).await,
            Wasm::WasmtimeCli { binary } => {
                let mut cmd = Command::new(binary);
                cmd.arg("run")
                    .arg("--dir")
                    .arg(format!("{}::/data", ctx.data.display()));
                cmd.arg("--invoke")
                    .arg(format!("run({})", wave_string(&args)))
                    .arg(ctx.wasm(w.name));
                let mut m = spawned(Spawn::new(cmd, Unit::Process)).await?;
                m.result = m.result.trim().trim_matches('"').to_owned();
                Ok(m)
            }
        }
    }
}

async fn through_node(
    server: &Server,
    client: &reqwest::Client,
    deployed: &tokio::sync::Mutex<Vec<&'static str>>,
    w: &Workload,
    args: &str,
    ctx: &Context,
) -> Result<Measurement, String> {
    let authorization = server.authorization.clone().unwrap_or_default();
    {
        let mut deployed = deployed.lock().await;
        if !deployed.contains(&w.name) {
            let bytes = std::fs::read(ctx.wasm(w.name)).map_err(|e| e.to_string())?;
            let dir = format!("{}::/data", ctx.data.display());
            let r = client
                .put(server.url(&format!("/v1/functions/{}", w.name)))
                .header("authorization", &authorization)
                .query(&[
                    ("dir", dir.as_str()),
                    ("memory", "512MiB"),
                    ("max_concurrency", "64"),
                ])
                .body(bytes)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!(
                    "deploying {}: {}",
                    w.name,
                    r.text().await.unwrap_or_default()
                ));
            }
            deployed.push(w.name);
        }
    }
    let started = Instant::now();
    let r = client
        .post(server.url(&format!("/v1/functions/{}/invoke", w.name)))
        .header("authorization", &authorization)
        .body(args.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let header = |h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|us| us / 1e3)
    };
    let (cold_ms, exec_ms) = (
        header("x-limes-cold-start-us"),
        header("x-limes-execution-us"),
    );
    let ok = r.status().is_success();
    let result = r.text().await.map_err(|e| e.to_string())?;
    if !ok {
        return Err(result);
    }
    Ok(Measurement {
        cold_ms,
        exec_ms,
        e2e_ms: ms(started.elapsed()),
        work_ms: None,
        rss_kib: None,
        result,
    })
}

/// `args` as a WAVE string literal, for `wasmtime run --invoke`.
fn wave_string(args: &str) -> String {
    format!("\"{}\"", args.replace('\\', "\\\\").replace('"', "\\\""))
}

fn measured(
    i: limes_runtime::Invocation,
    started: Instant,
    load: Option<std::time::Duration>,
) -> Measurement {
    Measurement {
        cold_ms: Some(ms(load.unwrap_or_default() + i.cold_start)),
        exec_ms: Some(ms(i.execution)),
        e2e_ms: ms(started.elapsed()),
        work_ms: None,
        rss_kib: Some(i.memory / 1024),
        result: i.result,
    }
}
