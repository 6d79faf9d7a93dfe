//! `hermit-loader`: boots a Hermit unikernel on a VMM that speaks PVH, the direct-boot ABI of
//! QEMU's `microvm` machine and of Firecracker.
//!
//! The VMM loads this loader as the kernel (`-kernel`, `kernel_image_path`) and the Hermit
//! application image as the initrd (`-initrd`, `initrd_path`). The loader enters long mode with
//! the first GiB identity-mapped, copies the image to where it may run, describes the machine in
//! a device tree (memory, command line) and jumps to Hermit's entry with the boot information
//! Hermit expects (`hermit-entry`). Hermit's own loader does the same but is not published on
//! crates.io, so the study carries this one.
//!
//! Only [`layout`] and [`fdt`] are plain logic; they build on the host too, for their tests.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod fdt;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod layout;

#[cfg(target_os = "none")]
mod boot;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "hermit-loader runs inside a VM, not on a host: build it with `cargo xtask unikernel`"
    );
    std::process::exit(2);
}
