//! The backends of the study, each detected at start and measured the same way. One file per
//! family: [`wasm`] (Limes and the `wasmtime` CLI), [`defaults`] (Wasmtime's default `Config`
//! in process, the reference for Limes' own configuration), [`process`] (native and container, and the
//! line protocol every spawned backend speaks), [`microvm`] (Linux microVMs), [`unikernel`]
//! (Hermit); [`snapshot`] saves and restores the guests of the last two (QEMU and Firecracker).

pub mod defaults;
pub mod microvm;
pub mod process;
pub mod snapshot;
pub mod unikernel;
pub mod wasm;

use std::path::{Path, PathBuf};

use super::kvm::Acceleration;
use super::workload::Workload;

/// Every backend the study knows, in report order.
pub const ALL: &[&str] = &[
    "limes-first-cold",
    "limes-cold",
    "limes-warm",
    "limes-http",
    "wasmtime-defaults",
    "wasmtime-cli",
    "native-process",
    "container",
    "microvm-qemu",
    "microvm-qemu-snapshot",
    "microvm-firecracker",
    "microvm-firecracker-snapshot",
    "unikernel-qemu",
    "unikernel-qemu-snapshot",
    "unikernel-firecracker",
    "unikernel-firecracker-snapshot",
];

/// One measured invocation. Times are in milliseconds.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// From spawn or instantiate until the function is entered; `None` where the backend cannot
    /// tell (a CLI that reports nothing).
    pub cold_ms: Option<f64>,
    /// The function's own run, as the host saw it.
    pub exec_ms: Option<f64>,
    /// The work as the workload timed it, by the clock of wherever it ran (`timed=1`): the same
    /// section on every backend, without what the backend adds around the function.
    pub work_ms: Option<f64>,
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
    /// Where to write initramfs images and snapshots.
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

/// `Ok` if `path` exists, else why the backend needs it.
fn have(path: &Path) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing (run `cargo xtask guests`)",
            path.display()
        ))
    }
}

/// `Ok` if QEMU may run here: it is installed, and where only emulation (TCG) is possible the
/// user allowed it.
fn qemu_usable(accel: &Acceleration, allow_emulated: bool) -> Result<(), String> {
    crate::process::find_on_path("qemu-system-x86_64")
        .ok_or("no qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    match accel {
        Acceleration::Emulated { reason } if !allow_emulated => Err(format!(
            "only emulation (TCG) is possible here: {reason}; pass --allow-emulated to run it anyway"
        )),
        _ => Ok(()),
    }
}

/// The `firecracker` binary, where Firecracker can run: on PATH, with hardware KVM.
fn firecracker_usable(accel: &Acceleration) -> Result<PathBuf, String> {
    let binary =
        crate::process::find_on_path("firecracker").ok_or("no `firecracker` binary on PATH")?;
    if let Acceleration::Emulated { reason } = accel {
        return Err(format!("Firecracker needs hardware KVM: {reason}"));
    }
    Ok(binary)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A ready backend.
pub enum Backend {
    Wasm(wasm::Wasm),
    Process(process::Process),
    Microvm(microvm::Microvm),
    Unikernel(unikernel::Unikernel),
}

/// Detects `name`: a ready backend, or why it is unavailable.
pub async fn detect(name: &str, ctx: &Context, allow_emulated: bool) -> Result<Backend, String> {
    if let Some(b) = wasm::detect(name, ctx).await {
        return b.map(Backend::Wasm);
    }
    if let Some(b) = process::detect(name, ctx) {
        return b.map(Backend::Process);
    }
    if let Some(b) = microvm::detect(name, ctx, allow_emulated) {
        return b.map(Backend::Microvm);
    }
    if let Some(b) = unikernel::detect(name, ctx, allow_emulated) {
        return b.map(Backend::Unikernel);
    }
    Err(format!(
        "unknown backend {name:?}; known: {}",
        ALL.join(", ")
    ))
}

impl Backend {
    /// Whether figures of this backend come from emulation and are not comparable.
    pub fn emulated(&self, accel: &Acceleration) -> bool {
        let qemu = match self {
            Backend::Microvm(m) => m.qemu(),
            Backend::Unikernel(u) => u.qemu(),
            Backend::Wasm(_) | Backend::Process(_) => false,
        };
        qemu && matches!(accel, Acceleration::Emulated { .. })
    }

    /// Whether invocations may overlap (the concurrency sweep).
    pub fn concurrent(&self) -> bool {
        match self {
            Backend::Wasm(w) => w.concurrent(),
            Backend::Process(_) => true,
            Backend::Microvm(_) | Backend::Unikernel(_) => false,
        }
    }

    /// Runs one invocation of `w`.
    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let mut m = match self {
            Backend::Wasm(b) => b.invoke(w, ctx).await,
            Backend::Process(b) => b.invoke(w, ctx).await,
            Backend::Microvm(b) => b.invoke(w, ctx).await,
            Backend::Unikernel(b) => b.invoke(w, ctx).await,
        }?;
        // Every backend runs the workload with `timed=1`; what it measured is split off here,
        // once for all, so that results compare as before.
        let (result, work_ns) = workloads::split_timing(&m.result);
        m.work_ms = work_ns.map(|ns| ns as f64 / 1e6);
        m.result = result.to_owned();
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the study lists is one some family detects (a missing arm once reported
    /// `microvm-firecracker-snapshot` as unknown).
    #[tokio::test]
    async fn every_listed_backend_is_known_to_a_family() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            guests: dir.path().join("guests"),
            data: dir.path().join("data"),
            limes: dir.path().join("limes"),
            scratch: dir.path().into(),
            accel: Acceleration::Emulated {
                reason: "test".into(),
            },
        };
        for name in ALL {
            if let Err(why) = detect(name, &ctx, false).await {
                assert!(!why.contains("unknown backend"), "{name}: {why}");
            }
        }
        let unknown = detect("nonsense", &ctx, false).await.err().unwrap();
        assert!(unknown.contains("unknown backend"));
    }
}
