//! The microVM baselines: the static workload binary as `/init` of an initramfs, booted per
//! invocation by QEMU (`-M microvm`) or Firecracker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::kvm::Acceleration;

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
fn tsc_khz() -> Option<u64> {
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
    let binary =
        crate::process::find_on_path("firecracker").ok_or("no `firecracker` binary on PATH")?;
    if let Acceleration::Emulated { reason } = accel {
        return Err(format!("Firecracker needs hardware KVM: {reason}"));
    }
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
