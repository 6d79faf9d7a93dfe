//! The process family: the static workload binary spawned per invocation, bare
//! (`native-process`) or in fresh namespaces (`container`); and the line protocol every
//! spawned backend (processes, VMMs) is read with.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Context, Measurement, ms};
use crate::process::find_on_path;
use crate::study::workload::Workload;

/// A process-family backend.
pub enum Process {
    /// The static binary, spawned per invocation.
    Native,
    /// The static binary in fresh namespaces (bubblewrap) per invocation.
    Container { bwrap: PathBuf },
}

/// Detects `name` if it is of this family.
pub fn detect(name: &str, ctx: &Context) -> Option<Result<Process, String>> {
    Some(match name {
        "native-process" => super::have(&ctx.native()).map(|()| Process::Native),
        "container" => container(ctx),
        _ => return None,
    })
}

fn container(ctx: &Context) -> Result<Process, String> {
    super::have(&ctx.native())?;
    let bwrap = find_on_path("bwrap").ok_or("no `bwrap` on PATH (apt-get install bubblewrap)")?;
    let probe = Command::new(&bwrap)
        .args(["--unshare-all", "--ro-bind"])
        .arg(ctx.native())
        .args(["/w", "/w", "noop"])
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(Process::Container { bwrap }),
        Ok(o) => Err(format!(
            "bwrap cannot create namespaces here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running bwrap: {e}")),
    }
}

impl Process {
    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let mut cmd = match self {
            Process::Native => {
                let mut cmd = Command::new(ctx.native());
                cmd.arg(w.name)
                    .arg(w.guest_args(&ctx.data.to_string_lossy()));
                cmd
            }
            Process::Container { bwrap } => {
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
                .args(["/data", "/workload", w.name, &w.guest_args("/data")]);
                cmd
            }
        };
        cmd.stdin(Stdio::null());
        spawned(Spawn::new(cmd, Unit::Process)).await
    }
}

/// What a spawned backend's isolation unit is, which decides its RSS and its clean exit.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// A process: its own RSS report is right (`wait4`'s includes the forked parent's pages);
    /// it exits 0.
    Process,
    /// A VMM, whose RSS is the VM's cost; it exits with `clean_exit` when the guest is done.
    Vmm { clean_exit: i32 },
}

/// One spawn of a backend's command.
pub struct Spawn {
    pub cmd: Command,
    pub unit: Unit,
    /// A request line to write to the guest's console once `ready_for_input` returns, for
    /// guests restored from a snapshot.
    pub input: Option<String>,
    pub ready_for_input: Option<Ready>,
}

/// What a restore must wait for before the guest can take its request.
pub type Ready = Box<dyn FnOnce() -> Result<(), String> + Send>;

impl Spawn {
    pub fn new(cmd: Command, unit: Unit) -> Self {
        Self {
            cmd,
            unit,
            input: None,
            ready_for_input: None,
        }
    }

    /// A VM restored from a snapshot: `request` goes to its console once `ready` returns.
    pub fn restored(cmd: Command, unit: Unit, request: String, ready: Ready) -> Self {
        Self {
            cmd,
            unit,
            input: Some(request),
            ready_for_input: Some(ready),
        }
    }
}

/// [`run`] on a blocking thread.
pub async fn spawned(spawn: Spawn) -> Result<Measurement, String> {
    tokio::task::spawn_blocking(move || run(spawn))
        .await
        .map_err(|e| e.to_string())?
}

/// Spawns the command and reads the workload's line protocol (see `workload-native`) as it
/// arrives: the host's clock at `limes-ready` ends the cold start.
pub fn run(spawn: Spawn) -> Result<Measurement, String> {
    let Spawn {
        mut cmd,
        unit,
        input,
        ready_for_input,
    } = spawn;
    let program = cmd.get_program().to_string_lossy().into_owned();
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(line) = input {
        let fed = ready_for_input
            .map_or(Ok(()), |ready| ready())
            .and_then(|()| {
                let stdin = child.stdin.as_mut().ok_or("no stdin")?;
                stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| stdin.flush())
                    .map_err(|e| format!("writing the request: {e}"))
            });
        if let Err(e) = fed {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
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
    drop(child.stdin.take());
    let (status, rss_kib) = wait4(child.id() as libc::pid_t)?;
    let e2e_ms = ms(started.elapsed());
    if let Some(e) = error {
        return Err(e);
    }
    let clean = match unit {
        Unit::Process => 0,
        Unit::Vmm { clean_exit } => clean_exit,
    };
    // A CLI without the protocol (wasmtime) prints its result as the last plain line.
    let result = result.or_else(|| other.last().cloned().filter(|_| status == clean));
    match result {
        Some(result) if status == clean => Ok(Measurement {
            cold_ms: ready.map(ms),
            exec_ms: exec,
            e2e_ms,
            work_ms: None,
            rss_kib: Some(match unit {
                Unit::Vmm { .. } => rss_kib,
                Unit::Process => reported_rss.unwrap_or(rss_kib),
            }),
            result,
        }),
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
