//! The Linux microVM family: the static workload binary as `/init` of an initramfs, booted per
//! invocation by QEMU (`-M microvm`) or Firecracker (`microvm-qemu`, `microvm-firecracker`), or
//! restored per invocation from a snapshot taken after boot (`microvm-qemu-snapshot`,
//! `microvm-firecracker-snapshot`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{Spawn, Unit, spawned};
use super::{Context, Measurement, have, snapshot};
use crate::study::kvm::Acceleration;
use crate::study::workload::Workload;

/// A Linux microVM backend.
pub enum Microvm {
    /// Booted per invocation by QEMU.
    Qemu { kernel: PathBuf },
    /// Restored per invocation by QEMU from a snapshot per initramfs, taken on first use.
    QemuSnapshot {
        kernel: PathBuf,
        snapshots: tokio::sync::Mutex<HashMap<PathBuf, PathBuf>>,
    },
    /// Booted per invocation by Firecracker.
    Firecracker { binary: PathBuf, kernel: PathBuf },
    /// Restored per invocation by Firecracker from a snapshot per initramfs.
    FirecrackerSnapshot {
        binary: PathBuf,
        kernel: PathBuf,
        snapshots: tokio::sync::Mutex<HashMap<PathBuf, snapshot::firecracker::Files>>,
    },
}

/// Detects `name` if it is of this family.
pub fn detect(name: &str, ctx: &Context, allow_emulated: bool) -> Option<Result<Microvm, String>> {
    let qemu = || -> Result<PathBuf, String> {
        have(&ctx.native())?;
        super::qemu_usable(&ctx.accel, allow_emulated)?;
        find_kernel()
    };
    Some(match name {
        "microvm-qemu" => qemu().map(|kernel| Microvm::Qemu { kernel }),
        "microvm-qemu-snapshot" => qemu().map(|kernel| Microvm::QemuSnapshot {
            kernel,
            snapshots: Default::default(),
        }),
        "microvm-firecracker" => firecracker_setup(&ctx.accel)
            .map(|(binary, kernel)| Microvm::Firecracker { binary, kernel }),
        "microvm-firecracker-snapshot" => {
            firecracker_setup(&ctx.accel).map(|(binary, kernel)| Microvm::FirecrackerSnapshot {
                binary,
                kernel,
                snapshots: Default::default(),
            })
        }
        _ => return None,
    })
}

impl Microvm {
    /// Whether this runs under QEMU (and so may be emulated).
    pub fn qemu(&self) -> bool {
        matches!(self, Microvm::Qemu { .. } | Microvm::QemuSnapshot { .. })
    }

    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let initramfs = initramfs(ctx, w)?;
        let args = w.guest_args("/data");
        let vmm = Unit::Vmm { clean_exit: 0 };
        match self {
            Microvm::Qemu { kernel } => {
                let cmd = qemu_command(kernel, &initramfs, &ctx.accel, w.name, &args);
                spawned(Spawn::new(cmd, vmm)).await
            }
            Microvm::QemuSnapshot { kernel, snapshots } => {
                let file = {
                    let mut snapshots = snapshots.lock().await;
                    match snapshots.get(&initramfs) {
                        Some(file) => file.clone(),
                        None => {
                            let file = initramfs.with_extension("snapshot");
                            let boot = qemu_command(kernel, &initramfs, &ctx.accel, "@wait", "");
                            let (scratch, to) = (ctx.scratch.clone(), file.clone());
                            tokio::task::spawn_blocking(move || {
                                snapshot::save(boot, &scratch, &to)
                            })
                            .await
                            .map_err(|e| e.to_string())??;
                            snapshots.insert(initramfs.clone(), file.clone());
                            file
                        }
                    }
                };
                let mut cmd = qemu_command(kernel, &initramfs, &ctx.accel, "@wait", "");
                let ready = snapshot::restore(&mut cmd, &file, &ctx.scratch);
                let request = format!("{} {args}", w.name);
                spawned(Spawn::restored(cmd, vmm, request, ready)).await
            }
            Microvm::Firecracker { binary, kernel } => {
                let config = ctx.scratch.join(format!("firecracker-{}.json", w.key()));
                let body = firecracker_config(kernel, &initramfs, w.name, &args).to_string();
                std::fs::write(&config, body).map_err(|e| e.to_string())?;
                let mut cmd = Command::new(binary);
                cmd.arg("--no-api").arg("--config-file").arg(&config);
                spawned(Spawn::new(cmd, vmm)).await
            }
            Microvm::FirecrackerSnapshot {
                binary,
                kernel,
                snapshots,
            } => {
                let files = {
                    let mut snapshots = snapshots.lock().await;
                    match snapshots.get(&initramfs) {
                        Some(files) => files.clone(),
                        None => {
                            let files = snapshot::firecracker::Files {
                                state: initramfs.with_extension("fc-state"),
                                memory: initramfs.with_extension("fc-memory"),
                            };
                            let config = initramfs.with_extension("fc-wait.json");
                            let body = firecracker_config(kernel, &initramfs, "@wait", "");
                            std::fs::write(&config, body.to_string()).map_err(|e| e.to_string())?;
                            let (binary, scratch, to) =
                                (binary.clone(), ctx.scratch.clone(), files.clone());
                            tokio::task::spawn_blocking(move || {
                                snapshot::firecracker::save(&binary, &config, &scratch, &to)
                            })
                            .await
                            .map_err(|e| e.to_string())??;
                            snapshots.insert(initramfs.clone(), files.clone());
                            files
                        }
                    }
                };
                let (cmd, ready) = snapshot::firecracker::restore(binary, &files, &ctx.scratch);
                let request = format!("{} {args}", w.name);
                spawned(Spawn::restored(cmd, vmm, request, ready)).await
            }
        }
    }
}

/// The initramfs for `w`, built once: the image workload's input goes into `/data`.
fn initramfs(ctx: &Context, w: &Workload) -> Result<PathBuf, String> {
    let path = ctx.scratch.join(format!("initramfs-{}.cpio", w.key()));
    if !path.exists() {
        let input = std::fs::read(ctx.data.join("input.png")).unwrap_or_default();
        write_initramfs(&path, &ctx.native(), &[("input.png", input)])
            .map_err(|e| e.to_string())?;
    }
    Ok(path)
}

/// Where `cargo xtask microvm-kernel` puts the Debian cloud kernel.
pub const KERNEL_PATH: &str = "target/microvm/vmlinuz";

/// Finds a guest kernel for QEMU: `$LIMES_MICROVM_KERNEL`, else [`KERNEL_PATH`].
pub fn find_kernel() -> Result<PathBuf, String> {
    let path = std::env::var_os("LIMES_MICROVM_KERNEL")
        .map_or_else(|| PathBuf::from(KERNEL_PATH), PathBuf::from);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "no guest kernel at {} (run `cargo xtask microvm-kernel`, or set LIMES_MICROVM_KERNEL)",
            path.display()
        ))
    }
}

/// Writes a newc initramfs: `/init` (the static workload binary), `/dev/console`, `/data` with
/// `extra` files inside it.
pub fn write_initramfs(out: &Path, init: &Path, extra: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    use cpio::newc::{Builder, ModeFileType, trailer};
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let init_bytes = std::fs::read(init)?;
    let mut ino = 1;
    let mut entry = |name: &str,
                     mode: u32,
                     body: &[u8],
                     rdev: Option<(u32, u32)>,
                     w: &mut std::io::BufWriter<std::fs::File>|
     -> std::io::Result<()> {
        let mut b = Builder::new(name).ino(ino).mode(mode).nlink(1);
        if let Some((major, minor)) = rdev {
            b = b
                .rdev_major(major)
                .rdev_minor(minor)
                .set_mode_file_type(ModeFileType::Char);
        }
        ino += 1;
        let mut writer = b.write(&mut *w, body.len() as u32);
        writer.write_all(body)?;
        writer.finish()?;
        Ok(())
    };
    entry("dev", 0o040755, &[], None, &mut file)?;
    entry("dev/console", 0o020600, &[], Some((5, 1)), &mut file)?;
    entry("data", 0o040755, &[], None, &mut file)?;
    entry("init", 0o100755, &init_bytes, None, &mut file)?;
    for (name, body) in extra {
        entry(&format!("data/{name}"), 0o100644, body, None, &mut file)?;
    }
    trailer(&mut file)?;
    file.flush()
}

/// The TSC frequency in kHz, which the guest must be told under TCG: without it the kernel's TSC
/// calibration hangs in a sizeable share of boots.
pub(super) fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// The QEMU command that boots `kernel` with `initramfs`, running `workload args` as `/init`.
pub fn qemu_command(
    kernel: &Path,
    initramfs: &Path,
    accel: &Acceleration,
    workload: &str,
    args: &str,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let (accel_arg, cpu) = match accel {
        Acceleration::Hardware => ("kvm", "host,-arch-capabilities"),
        Acceleration::Emulated { .. } => ("tcg,tb-size=16", "max"),
    };
    let mut append = String::from("console=ttyS0 quiet panic=-1 reboot=t");
    if let Some(khz) = tsc_khz() {
        append.push_str(&format!(" tsc_early_khz={khz}"));
    }
    append.push_str(&format!(" -- {workload} {args}"));
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on",
        "-accel",
        accel_arg,
        "-cpu",
        cpu,
    ])
    .args([
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-kernel",
    ])
    .arg(kernel)
    .arg("-initrd")
    .arg(initramfs)
    .args(["-append", &append]);
    cmd
}

/// A Firecracker configuration (for `firecracker --no-api --config-file`) that boots `vmlinux`
/// (an uncompressed ELF kernel, supplied by the user) with the same initramfs.
pub fn firecracker_config(
    vmlinux: &Path,
    initramfs: &Path,
    workload: &str,
    args: &str,
) -> serde_json::Value {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": vmlinux,
            "initrd_path": initramfs,
            "boot_args": format!("console=ttyS0 reboot=k panic=-1 pci=off quiet -- {workload} {args}"),
        },
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
    })
}

/// Whether Firecracker can run here: a `firecracker` binary, hardware KVM, and a vmlinux in
/// `$LIMES_FIRECRACKER_KERNEL`.
pub fn firecracker_setup(accel: &Acceleration) -> Result<(PathBuf, PathBuf), String> {
    let binary = super::firecracker_usable(accel)?;
    let kernel = std::env::var_os("LIMES_FIRECRACKER_KERNEL")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .ok_or("set LIMES_FIRECRACKER_KERNEL to an uncompressed vmlinux")?;
    Ok((binary, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_holds_init_console_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init-bin");
        std::fs::write(&init, b"\x7fELF fake").unwrap();
        let out = dir.path().join("initrd.cpio");
        write_initramfs(&out, &init, &[("input.png", vec![1, 2, 3])]).unwrap();
        let mut reader = std::fs::File::open(&out).unwrap();
        let mut names = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            names.push((
                entry.entry().name().to_owned(),
                entry.entry().mode(),
                entry.entry().rdev_major(),
            ));
            reader = entry.finish().unwrap();
        }
        assert!(names.contains(&("init".into(), 0o100755, 0)));
        assert!(
            names
                .iter()
                .any(|(n, _, major)| n == "dev/console" && *major == 5)
        );
        assert!(names.iter().any(|(n, ..)| n == "data/input.png"));
    }

    #[test]
    fn firecracker_config_boots_the_workload() {
        let c = firecracker_config(Path::new("/k/vmlinux"), Path::new("/i.cpio"), "noop", "");
        assert!(
            c["boot-source"]["boot_args"]
                .as_str()
                .unwrap()
                .ends_with("-- noop ")
        );
        assert_eq!(c["machine-config"]["vcpu_count"], 1);
    }

    #[test]
    fn qemu_uses_tcg_when_emulated() {
        let cmd = qemu_command(
            Path::new("k"),
            Path::new("i"),
            &Acceleration::Emulated {
                reason: String::new(),
            },
            "noop",
            "",
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().any(|a| a.starts_with("tcg")));
    }
}
