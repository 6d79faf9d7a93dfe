//! Boots the Hermit unikernel (`cargo xtask unikernel`) through our PVH loader under QEMU, and
//! restores it from a snapshot. On a host without hardware virtualization it runs under TCG.

use std::path::Path;

use limes_bench::study::backends::process::{Spawn, run};
use limes_bench::study::backends::{snapshot, unikernel};
use limes_bench::study::kvm;

/// The images, or `None` after saying why the test is skipped. `scripts/test` builds them and
/// sets `LIMES_REQUIRE_UNIKERNEL`, so there a missing piece fails instead.
fn images() -> Option<unikernel::Images> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = std::env::var_os("LIMES_UNIKERNEL_DIR")
        .map_or_else(|| root.join(unikernel::DIR), Into::into);
    let missing = if limes_bench::process::find_on_path("qemu-system-x86_64").is_none() {
        Some("qemu-system-x86_64 (apt-get install qemu-system-x86)".to_owned())
    } else if !found.join("workloads.hermit").exists() || !found.join("hermit-loader").exists() {
        Some(format!(
            "the images in {} (cargo xtask unikernel)",
            found.display()
        ))
    } else {
        None
    };
    match missing {
        Some(what) => {
            assert!(
                std::env::var_os("LIMES_REQUIRE_UNIKERNEL").is_none(),
                "the unikernel pieces are missing: {what}"
            );
            println!("SKIPPED: needs {what}");
            None
        }
        None => Some(unikernel::Images {
            loader: found.join("hermit-loader"),
            image: found.join("workloads.hermit"),
        }),
    }
}

#[test]
fn the_noop_and_mandelbrot_unikernels_boot_and_return_the_native_results() {
    let Some(images) = images() else { return };
    let accel = kvm::detect();
    for (workload, args) in [
        ("noop", ""),
        ("mandelbrot", "mode=noio size=32 iterations=50"),
    ] {
        let cmd = unikernel::qemu_command(&images, &accel, &format!("{workload} {args}"));
        let m = run(Spawn::new(cmd, unikernel::QEMU_VMM)).unwrap();
        assert_eq!(
            m.result,
            workloads::run(workload, args).unwrap(),
            "{workload}"
        );
        let cold = m.cold_ms.expect("the guest reported readiness");
        assert!(cold > 0.0 && cold <= m.e2e_ms);
        println!(
            "{workload}: boot to ready {cold:.0} ms, end to end {:.0} ms",
            m.e2e_ms
        );
    }
}

#[test]
fn a_failing_workload_is_an_error_not_a_result() {
    let Some(images) = images() else { return };
    let cmd = unikernel::qemu_command(&images, &kvm::detect(), "no-such-workload");
    let e = run(Spawn::new(cmd, unikernel::QEMU_VMM)).unwrap_err();
    assert!(e.contains("unknown workload"), "{e}");
}

#[test]
fn the_unikernel_with_io_uses_its_in_memory_file_system() {
    let Some(images) = images() else { return };
    let args = "mode=io size=32 dir=/tmp";
    let cmd = unikernel::qemu_command(&images, &kvm::detect(), &format!("image-processing {args}"));
    let m = run(Spawn::new(cmd, unikernel::QEMU_VMM)).unwrap();
    assert_eq!(
        m.result,
        workloads::run("image-processing", "mode=noio size=32").unwrap()
    );
}

#[test]
fn a_unikernel_restored_from_a_snapshot_answers_its_request() {
    let Some(images) = images() else { return };
    let accel = kvm::detect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unikernel.snapshot");
    snapshot::save(
        unikernel::qemu_command(&images, &accel, "@wait"),
        dir.path(),
        &file,
    )
    .unwrap();
    let args = "mode=noio size=16 iterations=20";
    let mut cmd = unikernel::qemu_command(&images, &accel, "@wait");
    let ready = snapshot::restore(&mut cmd, &file, dir.path());
    let vmm = unikernel::QEMU_VMM;
    let m = run(Spawn::restored(
        cmd,
        vmm,
        format!("mandelbrot {args}"),
        ready,
    ))
    .unwrap();
    assert_eq!(m.result, workloads::run("mandelbrot", args).unwrap());
    println!(
        "restored unikernel: cold start {:.0} ms",
        m.cold_ms.unwrap()
    );
}
