//! The unikernel family: the same workloads as a Hermit unikernel (`cargo xtask unikernel`),
//! booted by our PVH loader (`crates/hermit-loader`) per invocation under QEMU `-M microvm`
//! (`unikernel-qemu`) or Firecracker (`unikernel-firecracker`), or restored from a snapshot
//! (`unikernel-qemu-snapshot`, `unikernel-firecracker-snapshot`).
//!
//! The study's compared system runs Nanos unikernels on Firecracker; Nanos cannot be had here,
//! Hermit can (see `shared/UNIKERNEL.md`). Hermit has no disk on these machines (its virtio-fs
//! needs PCI), so the with-I/O modes use its in-memory file system: the guest writes the image
//! workload's input to `/tmp` before the timed run and the workloads write their output there.

use std::path::PathBuf;
use std::process::Command;

use super::process::{Spawn, Unit, spawned};
use super::{Context, Measurement, microvm, snapshot};
use crate::study::kvm::Acceleration;
use crate::study::workload::Workload;

/// Where `cargo xtask unikernel` puts the loader and the image.
pub const DIR: &str = "target/unikernel";
/// The guest's directory for the I/O modes: Hermit's in-memory file system.
const GUEST_DIR: &str = "/tmp";
/// A QEMU that boots Hermit: Hermit asks `isa-debug-exit` to end the VM, so a clean exit
/// arrives as status 3.
pub const QEMU_VMM: Unit = Unit::Vmm { clean_exit: 3 };

/// The loader and the image.
#[derive(Debug, Clone)]
pub struct Images {
    pub loader: PathBuf,
    pub image: PathBuf,
}

/// Finds them in `$LIMES_UNIKERNEL_DIR`, else [`DIR`].
pub fn find_images() -> Result<Images, String> {
    let dir =
        std::env::var_os("LIMES_UNIKERNEL_DIR").map_or_else(|| PathBuf::from(DIR), PathBuf::from);
    let images = Images {
        loader: dir.join("hermit-loader"),
        image: dir.join("workloads.hermit"),
    };
    for path in [&images.loader, &images.image] {
        if !path.exists() {
            return Err(format!(
                "{} is missing (run `cargo xtask unikernel`, or set LIMES_UNIKERNEL_DIR)",
                path.display()
            ));
        }
    }
    Ok(images)
}

/// A unikernel backend.
pub enum Unikernel {
    /// Booted per invocation by QEMU.
    Qemu(Images),
    /// Restored per invocation by QEMU from one snapshot taken on first use.
    QemuSnapshot {
        images: Images,
        snapshot: tokio::sync::OnceCell<PathBuf>,
    },
    /// Booted per invocation by Firecracker.
    Firecracker { binary: PathBuf, images: Images },
    /// Restored per invocation by Firecracker from one snapshot taken on first use.
    FirecrackerSnapshot {
        binary: PathBuf,
        images: Images,
        snapshot: tokio::sync::OnceCell<snapshot::firecracker::Files>,
    },
}

/// Detects `name` if it is of this family.
pub fn detect(
    name: &str,
    ctx: &Context,
    allow_emulated: bool,
) -> Option<Result<Unikernel, String>> {
    let qemu = || -> Result<Images, String> {
        super::qemu_usable(&ctx.accel, allow_emulated)?;
        find_images()
    };
    Some(match name {
        "unikernel-qemu" => qemu().map(Unikernel::Qemu),
        "unikernel-qemu-snapshot" => qemu().map(|images| Unikernel::QemuSnapshot {
            images,
            snapshot: Default::default(),
        }),
        "unikernel-firecracker" => firecracker(&ctx.accel)
            .map(|(binary, images)| Unikernel::Firecracker { binary, images }),
        "unikernel-firecracker-snapshot" => {
            firecracker(&ctx.accel).map(|(binary, images)| Unikernel::FirecrackerSnapshot {
                binary,
                images,
                snapshot: Default::default(),
            })
        }
        _ => return None,
    })
}

/// Firecracker's binary and the images, where Firecracker can run.
fn firecracker(accel: &Acceleration) -> Result<(PathBuf, Images), String> {
    // Firecracker boots PVH kernels, the loader, from 1.12 on.
    Ok((super::firecracker_usable(accel)?, find_images()?))
}

impl Unikernel {
    /// Whether this runs under QEMU (and so may be emulated).
    pub fn qemu(&self) -> bool {
        matches!(self, Unikernel::Qemu(_) | Unikernel::QemuSnapshot { .. })
    }

    pub async fn invoke(&self, w: &Workload, ctx: &Context) -> Result<Measurement, String> {
        let args = w.guest_args(GUEST_DIR);
        let request = format!("{} {args}", w.name);
        match self {
            Unikernel::Qemu(images) => {
                let cmd = qemu_command(images, &ctx.accel, &request);
                spawned(Spawn::new(cmd, QEMU_VMM)).await
            }
            Unikernel::QemuSnapshot { images, snapshot } => {
                let file = snapshot
                    .get_or_try_init(|| async {
                        let file = ctx.scratch.join("unikernel.snapshot");
                        let boot = qemu_command(images, &ctx.accel, "@wait");
                        let (scratch, to) = (ctx.scratch.clone(), file.clone());
                        tokio::task::spawn_blocking(move || snapshot::save(boot, &scratch, &to))
                            .await
                            .map_err(|e| e.to_string())??;
                        Ok::<_, String>(file)
                    })
                    .await?;
                let mut cmd = qemu_command(images, &ctx.accel, "@wait");
                let ready = snapshot::restore(&mut cmd, file, &ctx.scratch);
                let vmm = QEMU_VMM;
                spawned(Spawn::restored(cmd, vmm, request, ready)).await
            }
            Unikernel::Firecracker { binary, images } => {
                let config = ctx
                    .scratch
                    .join(format!("firecracker-unikernel-{}.json", w.key()));
                let body = firecracker_config(images, &request).to_string();
                std::fs::write(&config, body).map_err(|e| e.to_string())?;
                let mut cmd = Command::new(binary);
                cmd.arg("--no-api").arg("--config-file").arg(&config);
                // Untested here (no Firecracker, no hardware KVM); Firecracker exits 0 when the
                // guest shuts down.
                spawned(Spawn::new(cmd, Unit::Vmm { clean_exit: 0 })).await
            }
            Unikernel::FirecrackerSnapshot {
                binary,
                images,
                snapshot,
            } => {
                let files = snapshot
                    .get_or_try_init(|| async {
                        let files = snapshot::firecracker::Files {
                            state: ctx.scratch.join("unikernel.fc-state"),
                            memory: ctx.scratch.join("unikernel.fc-memory"),
                        };
                        let config = ctx.scratch.join("firecracker-unikernel-wait.json");
                        std::fs::write(&config, firecracker_config(images, "@wait").to_string())
                            .map_err(|e| e.to_string())?;
                        let (binary, scratch, to) =
                            (binary.clone(), ctx.scratch.clone(), files.clone());
                        tokio::task::spawn_blocking(move || {
                            snapshot::firecracker::save(&binary, &config, &scratch, &to)
                        })
                        .await
                        .map_err(|e| e.to_string())??;
                        Ok::<_, String>(files)
                    })
                    .await?;
                let (cmd, ready) = snapshot::firecracker::restore(binary, files, &ctx.scratch);
                let vmm = Unit::Vmm { clean_exit: 0 };
                spawned(Spawn::restored(cmd, vmm, request, ready)).await
            }
        }
    }
}

/// Hermit's command line: kernel arguments, then the application's after `--`. `-freq` gives
/// the TSC frequency in MHz, which Hermit cannot calibrate without a PIT.
fn command_line(request: &str) -> String {
    let freq = microvm::tsc_khz().map_or(String::new(), |khz| format!("-freq {} ", khz / 1000));
    format!("{freq}-- {request}")
}

/// QEMU `-M microvm` booting the loader with the image as its initrd: no PIT, PIC, ACPI or
/// option ROMs (Hermit needs none of them), and `isa-debug-exit` so the guest can end the VM.
pub fn qemu_command(images: &Images, accel: &Acceleration, request: &str) -> Command {
    let (accel_arg, cpu) = match accel {
        Acceleration::Hardware => ("kvm", "host"),
        // Hermit needs a CPU with the features it checks for; QEMU's `max` has them, but so
        // does a named model, which keeps TCG's output free of unsupported-feature warnings.
        Acceleration::Emulated { .. } => ("tcg,tb-size=16", "Skylake-Client"),
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,pit=off,pic=off,rtc=on,acpi=off",
        "-accel",
        accel_arg,
        "-cpu",
        cpu,
        "-smp",
        "1",
        "-m",
        "128M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel",
    ])
    .arg(&images.loader)
    .arg("-initrd")
    .arg(&images.image)
    .args(["-append", &command_line(request)]);
    cmd
}

/// A Firecracker (≥ 1.12, which boots PVH kernels) configuration: the loader as the kernel, the
/// image as the initrd.
pub fn firecracker_config(images: &Images, request: &str) -> serde_json::Value {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": images.loader,
            "initrd_path": images.image,
            "boot_args": command_line(request),
        },
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Images {
        Images {
            loader: "/u/hermit-loader".into(),
            image: "/u/workloads.hermit".into(),
        }
    }

    #[test]
    fn the_request_follows_the_double_dash() {
        assert!(command_line("mandelbrot size=8").ends_with("-- mandelbrot size=8"));
        let c = firecracker_config(&images(), "noop ");
        assert_eq!(c["boot-source"]["initrd_path"], "/u/workloads.hermit");
        assert_eq!(c["boot-source"]["kernel_image_path"], "/u/hermit-loader");
        assert!(
            c["boot-source"]["boot_args"]
                .as_str()
                .unwrap()
                .ends_with("-- noop ")
        );
    }

    #[test]
    fn qemu_boots_the_loader_with_the_image_as_initrd() {
        let accel = Acceleration::Emulated {
            reason: String::new(),
        };
        let args: Vec<String> = qemu_command(&images(), &accel, "noop")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(after("-kernel"), "/u/hermit-loader");
        assert_eq!(after("-initrd"), "/u/workloads.hermit");
        assert!(after("-accel").starts_with("tcg"));
        assert!(after("-device").starts_with("isa-debug-exit"));
    }
}
