//! The backends of the study, each detected at start and measured the same way.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use limes_runtime::{DirMount, Function, Policy, PoolConfig, Runtime, RuntimeConfig, WarmInstance};

use super::kvm::Acceleration;
use super::microvm;
use super::workload::Workload;
use crate::process::{Server, find_on_path, free_port};

/// Every backend the study knows, in report order.
pub const ALL: &[&str] = &[
    "limes-first-cold",
    "limes-cold",
    "limes-warm",
    "limes-http",
    "wasmtime-cli",
    "native-process",
    "container",
    "microvm-qemu",
    "microvm-firecracker",
];

/// One measured invocation. Times are in milliseconds.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// From spawn or instantiate until the function is entered; `None` where the backend cannot
    /// tell (a CLI that reports nothing).
    pub cold_ms: Option<f64>,
    /// The function's own run.
    pub exec_ms: Option<f64>,
    /// From the request until the result is back.
    pub e2e_ms: f64,
    /// Peak RSS of the isolation unit in KiB: the process, the VMM, or for Limes the instance's
    /// linear memory.
    pub rss_kib: Option<u64>,
    /// What the function returned.
    pub result: String,
}

/// What the backends share: inputs, binaries and the host's abilities.
pub struct Context {
    /// Built guests (`NAME.wasm`) and `workload-native`.
    pub guests: PathBuf,
    /// The host directory every backend sees as `/data`.
    pub data: PathBuf,
    /// The `limes` binary, for `limes-http`.
    pub limes: PathBuf,
    /// Where to write initramfs images.
    pub scratch: PathBuf,
    /// What KVM can do here.
    pub accel: Acceleration,
}

impl Context {
    fn native(&self) -> PathBuf {
        self.guests.join("workload-native")
    }
    fn wasm(&self, workload: &str) -> PathBuf {
        self.guests.join(format!("{workload}.wasm"))
    }
}

fn policy(data: &Path) -> Policy {
    let dir = DirMount {
        host: data.into(),
        guest: "/data".into(),
        writable: true,
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

/// A ready backend.
pub enum Backend {
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
    /// The static binary, spawned per invocation.
    NativeProcess,
    /// The static binary in fresh namespaces (bubblewrap) per invocation.
    Container { bwrap: PathBuf },
    /// The static binary as `/init`, booted per invocation by QEMU.
    MicrovmQemu { kernel: PathBuf },
    /// The same under Firecracker.
    MicrovmFirecracker { binary: PathBuf, kernel: PathBuf },
}

/// Detects `name`: a ready backend, or why it is unavailable.
pub async fn detect(name: &str, ctx: &Context, allow_emulated: bool) -> Result<Backend, String> {
    let have = |path: &Path| {
        if path.exists() {
            Ok(())
        } else {
            Err(format!(
                "{} is missing (run `cargo xtask guests`)",
                path.display()
            ))
        }
    };
    match name {
        "limes-first-cold" => have(&ctx.wasm("noop")).map(|()| Backend::LimesFirstCold),
        "limes-cold" | "limes-warm" => {
            have(&ctx.wasm("noop"))?;
            let cache = ctx.scratch.join("aot");
            let runtime = Runtime::new(RuntimeConfig {
                cache_dir: Some(cache),
                ..small_pool()
            })
            .map_err(|e| e.to_string())?;
            Ok(if name == "limes-cold" {
                Backend::LimesCold {
                    runtime,
                    functions: Mutex::default(),
                }
            } else {
                Backend::LimesWarm {
                    runtime,
                    instances: Default::default(),
                }
            })
        }
        "limes-http" => {
            have(&ctx.limes)?;
            let port = free_port()?;
            let mut cmd = Command::new(&ctx.limes);
            // The workloads' data directory is the one host directory their manifests preopen.
            std::fs::create_dir_all(&ctx.data)
                .map_err(|e| format!("{}: {e}", ctx.data.display()))?;
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(ctx.scratch.join("node"))
                .arg("--allow-host-dir")
                .arg(&ctx.data);
            let mut server = Server::start(cmd, port, "/healthz").await?;
            server.authorization = Some(crate::process::admin_bearer(&ctx.scratch.join("node"))?);
            Ok(Backend::LimesHttp {
                server,
                client: reqwest::Client::new(),
                deployed: Default::default(),
            })
        }
        "wasmtime-cli" => find_on_path("wasmtime")
            .map(|binary| Backend::WasmtimeCli { binary })
            .ok_or_else(|| {
                "no `wasmtime` on PATH (cargo install wasmtime-cli --version 48.0.8)".into()
            }),
        "native-process" => have(&ctx.native()).map(|()| Backend::NativeProcess),
        "container" => {
            have(&ctx.native())?;
            let bwrap =
                find_on_path("bwrap").ok_or("no `bwrap` on PATH (apt-get install bubblewrap)")?;
            let probe = Command::new(&bwrap)
                .args(["--unshare-all", "--ro-bind"])
                .arg(ctx.native())
                .args(["/w", "/w", "noop"])
                .output();
            match probe {
                Ok(o) if o.status.success() => Ok(Backend::Container { bwrap }),
                Ok(o) => Err(format!(
                    "bwrap cannot create namespaces here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("running bwrap: {e}")),
            }
        }
        "microvm-qemu" => {
            have(&ctx.native())?;
            find_on_path("qemu-system-x86_64")
                .ok_or("no qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
            let kernel = microvm::find_kernel()?;
            if let Acceleration::Emulated { reason } = &ctx.accel {
                if !allow_emulated {
                    return Err(format!(
                        "only emulation (TCG) is possible here: {reason}; pass --allow-emulated to run it anyway"
                    ));
                }
            }
            Ok(Backend::MicrovmQemu { kernel })
        }
        "microvm-firecracker" => {
            let (binary, kernel) = microvm::firecracker_setup(&ctx.accel)?;
            Ok(Backend::MicrovmFirecracker { binary, kernel })
        }
        other => Err(format!(
            "unknown backend {other:?}; known: {}",
            ALL.join(", ")
        )),
    }
}

impl Backend {
    /// Whether figures of this backend come from emulation and are not comparable.
    pub fn emulated(&self, accel: &Acceleration) -> bool {
        matches!(self, Backend::MicrovmQemu { .. })
            && matches!(accel, Acceleration::Emulated { .. })
    }

    /// Whether invocations may overlap (the concurrency sweep).
    pub fn concurrent(&self) -> bool {
        !matches!(
            self,
            Backend::LimesWarm { .. }
                | Backend::LimesFirstCold
                | Backend::MicrovmQemu { .. }
                | Backend::MicrovmFirecracker { .. }
        )
    }

    /// Runs one invocation of `w`.
    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let args = w.guest_args("/data");
        match self {
            Backend::LimesFirstCold => {
                let started = Instant::now();
                let runtime = Runtime::new(small_pool()).map_err(|e| e.to_string())?;
                let function = runtime
                    .load_file(ctx.wasm(w.name), policy(&ctx.data))
                    .map_err(|e| e.to_string())?;
                let loaded = started.elapsed();
                let i = function.invoke(&args).await.map_err(|e| e.to_string())?;
                Ok(in_process(i, started, Some(loaded)))
            }
            Backend::LimesCold { runtime, functions } => {
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
                Ok(in_process(i, started, None))
            }
            Backend::LimesWarm { runtime, instances } => {
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
                Ok(in_process(i, started, None))
            }
            Backend::LimesHttp {
                server,
                client,
                deployed,
            } => {
                {
                    let mut deployed = deployed.lock().await;
                    if !deployed.contains(&w.name) {
                        let bytes = std::fs::read(ctx.wasm(w.name)).map_err(|e| e.to_string())?;
                        let dir = format!("{}::/data", ctx.data.display());
                        let url = server.url(&format!("/v1/functions/{}", w.name));
                        let r = client
                            .put(url)
                            .header(
                                "authorization",
                                server.authorization.clone().unwrap_or_default(),
                            )
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
                let url = server.url(&format!("/v1/functions/{}/invoke", w.name));
                let r = client
                    .post(url)
                    .header(
                        "authorization",
                        server.authorization.clone().unwrap_or_default(),
                    )
                    .body(args)
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
                    rss_kib: None,
                    result,
                })
            }
            Backend::WasmtimeCli { binary } => {
                let mut cmd = Command::new(binary);
                cmd.arg("run")
                    .arg("--dir")
                    .arg(format!("{}::/data", ctx.data.display()));
                cmd.arg("--invoke")
                    .arg(format!("run({})", wave_string(&args)))
                    .arg(ctx.wasm(w.name));
                let mut m = blocking(cmd).await?;
                m.result = m.result.trim().trim_matches('"').to_owned();
                Ok(m)
            }
            Backend::NativeProcess => {
                let mut cmd = Command::new(ctx.native());
                cmd.arg(w.name)
                    .arg(w.guest_args(&ctx.data.to_string_lossy()));
                blocking(cmd).await
            }
            Backend::Container { bwrap } => {
                let mut cmd = Command::new(bwrap);
                cmd.args([
                    "--unshare-all",
                    "--die-with-parent",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--ro-bind",
                ])
                .arg(ctx.native())
                .arg("/workload")
                .arg("--bind")
                .arg(&ctx.data)
                .args(["/data", "/workload", w.name, &args]);
                blocking(cmd).await
            }
            Backend::MicrovmQemu { kernel } => {
                let initramfs = initramfs(ctx, w)?;
                blocking_vmm(microvm::qemu_command(
                    kernel, &initramfs, &ctx.accel, w.name, &args,
                ))
                .await
            }
            Backend::MicrovmFirecracker { binary, kernel } => {
                let initramfs = initramfs(ctx, w)?;
                let config = ctx.scratch.join(format!("firecracker-{}.json", w.key()));
                let body =
                    microvm::firecracker_config(kernel, &initramfs, w.name, &args).to_string();
                std::fs::write(&config, body).map_err(|e| e.to_string())?;
                let mut cmd = Command::new(binary);
                cmd.arg("--no-api").arg("--config-file").arg(&config);
                blocking_vmm(cmd).await
            }
        }
    }
}

/// `args` as a WAVE string literal, for `wasmtime run --invoke`.
fn wave_string(args: &str) -> String {
    format!("\"{}\"", args.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The initramfs for `w`, built once: the image workload's input goes into `/data`.
fn initramfs(ctx: &Context, w: &Workload) -> Result<PathBuf, String> {
    let path = ctx.scratch.join(format!("initramfs-{}.cpio", w.key()));
    if !path.exists() {
        let input = std::fs::read(ctx.data.join("input.png")).unwrap_or_default();
        microvm::write_initramfs(&path, &ctx.native(), &[("input.png", input)])
            .map_err(|e| e.to_string())?;
    }
    Ok(path)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn in_process(
    i: limes_runtime::Invocation,
    started: Instant,
    load: Option<std::time::Duration>,
) -> Measurement {
    Measurement {
        cold_ms: Some(ms(load.unwrap_or_default() + i.cold_start)),
        exec_ms: Some(ms(i.execution)),
        e2e_ms: ms(started.elapsed()),
        rss_kib: Some(i.memory / 1024),
        result: i.result,
    }
}

async fn blocking(cmd: Command) -> Result<Measurement, String> {
    tokio::task::spawn_blocking(move || run_process(cmd, false))
        .await
        .map_err(|e| e.to_string())?
}

/// As [`blocking`], for a VMM, whose own RSS is the isolation unit's.
async fn blocking_vmm(cmd: Command) -> Result<Measurement, String> {
    tokio::task::spawn_blocking(move || run_process(cmd, true))
        .await
        .map_err(|e| e.to_string())?
}

/// Spawns `cmd` and reads the workload's line protocol (see `workload-native`) as it arrives:
/// the host's clock at `limes-ready` ends the cold start. Peak RSS is the workload's own report,
/// or for a VMM (`vmm`) the VMM's from `wait4`.
pub fn run_process(mut cmd: Command, vmm: bool) -> Result<Measurement, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut ready, mut exec, mut result, mut error, mut other) =
        (None, None, None, None, Vec::new());
    let mut reported_rss = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if line.ends_with("limes-ready") {
            ready.get_or_insert(started.elapsed());
        } else if let Some(ns) = line.strip_prefix("limes-exec-ns ") {
            exec = ns.trim().parse::<f64>().ok().map(|ns| ns / 1e6);
        } else if let Some(r) = line.strip_prefix("limes-result") {
            result = Some(r.strip_prefix(' ').unwrap_or(r).to_owned());
        } else if let Some(kib) = line.strip_prefix("limes-rss-kib ") {
            reported_rss = kib.trim().parse::<u64>().ok();
        } else if let Some(e) = line.strip_prefix("limes-error ") {
            error = Some(e.to_owned());
        } else if other.len() < 20 {
            other.push(line.to_owned());
        }
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let (status, rss_kib) = wait4(child.id() as libc::pid_t)?;
    let e2e_ms = ms(started.elapsed());
    if let Some(e) = error {
        return Err(e);
    }
    // A CLI without the protocol (wasmtime) prints its result as the last plain line.
    let result = result.or_else(|| other.last().cloned().filter(|_| status == 0));
    match result {
        Some(result) if status == 0 => {
            // A VM's isolation unit is the VMM process; otherwise the workload's own report is
            // right, and wait4's figure includes the forked parent's pages.
            let rss = if vmm {
                rss_kib
            } else {
                reported_rss.unwrap_or(rss_kib)
            };
            Ok(Measurement {
                cold_ms: ready.map(ms),
                exec_ms: exec,
                e2e_ms,
                rss_kib: Some(rss),
                result,
            })
        }
        _ => Err(format!(
            "{program} exited with status {status}: {}{}",
            stderr.trim(),
            other.join(" | ")
        )),
    }
}

/// Waits for `pid`, returning its exit status and peak RSS in KiB.
fn wait4(pid: libc::pid_t) -> Result<(i32, u64), String> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped (std's Child was never waited on).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, usage.ru_maxrss as u64))
}
