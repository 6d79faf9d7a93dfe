//! Does this host have hardware virtualization? `/dev/kvm` is no proof: under software
//! paravirtualization (PVM) KVM exists, but guest kernel code is emulated thousands of times
//! slower. The probe runs a short loop in guest ring 0 (real mode) and times it.

use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit};

/// Iterations of the probe's loop: about 0.1 ms on hardware, about a second under PVM.
pub const PROBE_ITERATIONS: u32 = 200_000;
/// A probe faster than this means guest ring 0 runs natively.
pub const HARDWARE_THRESHOLD: Duration = Duration::from_millis(20);

/// How a microVM can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceleration {
    /// KVM with hardware virtualization: microVM figures are comparable.
    Hardware,
    /// Only emulation (QEMU TCG): figures are labelled "emulated — not comparable".
    Emulated { reason: String },
}

/// The decision, from what was observed; separate from the probe so that it can be tested.
pub fn decide(
    dev_kvm: bool,
    cpu_flag: bool,
    probe: Option<Result<Duration, String>>,
) -> Acceleration {
    let flag_note = if cpu_flag {
        ""
    } else {
        "; the CPU shows no vmx/svm flag"
    };
    match (dev_kvm, probe) {
        (false, _) => Acceleration::Emulated {
            reason: format!("no /dev/kvm{flag_note}"),
        },
        (true, None) => Acceleration::Emulated {
            reason: format!("the KVM probe did not finish{flag_note}"),
        },
        (true, Some(Err(e))) => Acceleration::Emulated {
            reason: format!("the KVM probe failed: {e}{flag_note}"),
        },
        (true, Some(Ok(t))) if t >= HARDWARE_THRESHOLD => Acceleration::Emulated {
            reason: format!(
                "/dev/kvm runs guest ring-0 code slowly ({:.1} ms for {PROBE_ITERATIONS} loop iterations, \
                 hardware takes well under {} ms): software paravirtualization, not hardware{flag_note}",
                t.as_secs_f64() * 1e3,
                HARDWARE_THRESHOLD.as_millis()
            ),
        },
        (true, Some(Ok(_))) => Acceleration::Hardware,
    }
}

/// Probes this host: `/dev/kvm`, the CPU flags, and the ring-0 loop (with a 10 s limit).
pub fn detect() -> Acceleration {
    let dev_kvm = std::path::Path::new("/dev/kvm").exists();
    let cpu_flag = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
    });
    let probe = dev_kvm.then(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(probe_ring0(PROBE_ITERATIONS));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    });
    decide(dev_kvm, cpu_flag, probe.flatten())
}

/// Times `iterations` of `dec ecx; jnz` in a fresh VM's vCPU in real mode (CPL 0).
pub fn probe_ring0(iterations: u32) -> Result<Duration, String> {
    let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    const BASE: u64 = 0x1000;
    const SIZE: usize = 0x1000;
    // mov ecx, iterations; loop: dec ecx; jnz loop; hlt  (16-bit code, operand-size prefixes)
    let mut code = vec![0x66, 0xB9];
    code.extend_from_slice(&iterations.to_le_bytes());
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xFC, 0xF4]);
    // SAFETY: an anonymous private mapping, owned here and unmapped below; KVM only reads it.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if memory == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    let result = (|| {
        // SAFETY: `memory` is a fresh mapping of SIZE bytes and the code is shorter.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), memory.cast::<u8>(), code.len()) };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: BASE,
            memory_size: SIZE as u64,
            userspace_addr: memory as u64,
            flags: 0,
        };
        // SAFETY: the region stays mapped until after the VM is dropped at the end of this closure.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("set_user_memory_region: {e}"))?;
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("set_sregs: {e}"))?;
        let regs = kvm_bindings::kvm_regs {
            rip: BASE,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(|e| format!("set_regs: {e}"))?;
        let started = Instant::now();
        loop {
            match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
                VcpuExit::Hlt => return Ok(started.elapsed()),
                VcpuExit::Intr => continue,
                other => return Err(format!("unexpected exit {other:?}")),
            }
        }
    })();
    drop(vm);
    // SAFETY: mapped above with the same size; nothing refers to it any more.
    unsafe { libc::munmap(memory, SIZE) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_needs_a_fast_probe_not_just_dev_kvm() {
        assert_eq!(
            decide(true, true, Some(Ok(Duration::from_micros(150)))),
            Acceleration::Hardware
        );
        let slow = decide(true, false, Some(Ok(Duration::from_millis(900))));
        assert!(
            matches!(&slow, Acceleration::Emulated { reason } if reason.contains("paravirtualization") && reason.contains("vmx"))
        );
        assert!(
            matches!(decide(false, true, None), Acceleration::Emulated { reason } if reason.contains("no /dev/kvm"))
        );
        assert!(
            matches!(decide(true, true, Some(Err("EINVAL".into()))), Acceleration::Emulated { reason } if reason.contains("EINVAL"))
        );
        assert!(matches!(
            decide(true, true, None),
            Acceleration::Emulated { .. }
        ));
    }

    #[test]
    fn the_probe_on_this_host_gives_a_decision() {
        // Whatever this host is, detection must finish and explain itself.
        match detect() {
            Acceleration::Hardware => println!("this host: hardware virtualization"),
            Acceleration::Emulated { reason } => {
                assert!(!reason.is_empty());
                println!("this host: emulated ({reason})");
            }
        }
    }
}
