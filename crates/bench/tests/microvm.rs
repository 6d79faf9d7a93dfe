//! Boots a real microVM: the static workload binary as `/init`, under QEMU. On a host without
//! hardware virtualization it runs under TCG, which takes a few seconds.

use std::path::Path;

use limes_bench::study::backends::run_process;
use limes_bench::study::kvm::{self, Acceleration};
use limes_bench::study::microvm;

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
    let m = run_process(qemu, true).unwrap();
    assert_eq!(m.result, workloads::run("mandelbrot", args).unwrap());
    let cold = m.cold_ms.expect("the guest reported readiness");
    assert!(cold > 0.0 && cold <= m.e2e_ms);
    if let Acceleration::Emulated { reason } = accel {
        println!("booted under emulation ({reason}): cold start {cold:.0} ms — not comparable");
    }
}
