//! Boots a real microVM: the static workload binary as `/init`, under QEMU. On a host without
//! hardware virtualization it runs under TCG, which takes a few seconds.

use std::path::Path;

use limes_bench::study::backends::process::{Spawn, Unit, run};
use limes_bench::study::backends::{microvm, snapshot};
use limes_bench::study::kvm::{self, Acceleration};

#[test]
fn a_microvm_boots_the_workload_as_init_and_powers_off() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let native = root.join("target/guests/workload-native");
    let kernel = root.join(microvm::KERNEL_PATH);
    let qemu = limes_bench::process::find_on_path("qemu-system-x86_64");
    if !native.exists() || !kernel.exists() || qemu.is_none() {
        // scripts/test installs all three and sets LIMES_REQUIRE_MICROVM, so there a missing
        // piece fails the test rather than skipping it.
        assert!(
            std::env::var_os("LIMES_REQUIRE_MICROVM").is_none(),
            "the microVM pieces are missing"
        );
        println!(
            "SKIPPED: needs {} (cargo xtask guests), {} (cargo xtask microvm-kernel) and qemu-system-x86_64",
            native.display(),
            kernel.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("initrd.cpio");
    microvm::write_initramfs(&initramfs, &native, &[]).unwrap();
    let accel = kvm::detect();
    let args = "mode=noio size=32 iterations=50";
    let qemu = microvm::qemu_command(&kernel, &initramfs, &accel, "mandelbrot", args);
    let m = run(Spawn::new(qemu, Unit::Vmm { clean_exit: 0 })).unwrap();
    assert_eq!(m.result, workloads::run("mandelbrot", args).unwrap());
    let cold = m.cold_ms.expect("the guest reported readiness");
    assert!(cold > 0.0 && cold <= m.e2e_ms);
    if let Acceleration::Emulated { reason } = accel {
        println!("booted under emulation ({reason}): cold start {cold:.0} ms — not comparable");
    }
}

#[test]
fn a_microvm_restored_from_a_snapshot_takes_its_request_and_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let native = root.join("target/guests/workload-native");
    let kernel = root.join(microvm::KERNEL_PATH);
    if !native.exists()
        || !kernel.exists()
        || limes_bench::process::find_on_path("qemu-system-x86_64").is_none()
    {
        assert!(
            std::env::var_os("LIMES_REQUIRE_MICROVM").is_none(),
            "the microVM pieces are missing"
        );
        println!("SKIPPED: needs workload-native, the microVM kernel and qemu-system-x86_64");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("initrd.cpio");
    microvm::write_initramfs(&initramfs, &native, &[]).unwrap();
    let accel = kvm::detect();
    let file = dir.path().join("vm.snapshot");
    let boot = microvm::qemu_command(&kernel, &initramfs, &accel, "@wait", "");
    snapshot::save(boot, dir.path(), &file).unwrap();
    // Two restores of one snapshot, two different requests.
    for size in [16, 24] {
        let args = format!("mode=noio size={size} iterations=20");
        let mut cmd = microvm::qemu_command(&kernel, &initramfs, &accel, "@wait", "");
        let ready = snapshot::restore(&mut cmd, &file, dir.path());
        let vmm = Unit::Vmm { clean_exit: 0 };
        let m = run(Spawn::restored(
            cmd,
            vmm,
            format!("mandelbrot {args}"),
            ready,
        ))
        .unwrap();
        assert_eq!(m.result, workloads::run("mandelbrot", &args).unwrap());
        println!("restored: cold start {:.0} ms", m.cold_ms.unwrap());
    }
}
