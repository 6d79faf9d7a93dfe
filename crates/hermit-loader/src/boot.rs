//! The machine side: PVH entry, long mode, the copy of the image and the jump into Hermit.
//!
//! PVH enters [`pvh_start32`] in 32-bit protected mode, paging off, with `ebx` holding the
//! guest-physical address of the start info. Everything the loader needs (stacks, page tables,
//! heap, boot information, device tree) is a static of its own image, below where the
//! application is placed, so Hermit's page allocator never hands it out while it is in use.

use core::fmt::Write;
use core::mem::MaybeUninit;
use core::ops::Range;

use hermit_entry::boot_info::{BootInfo, HardwareInfo, PlatformInfo, RawBootInfo};
use hermit_entry::elf::KernelObject;
use pvh::start_info::{MemmapTableEntry, ModlistEntry, StartInfo};

use crate::{fdt, layout};

pvh::xen_elfnote_phys32_entry!(pvh_start32);

/// The loader's own stack.
const STACK_SIZE: usize = 64 << 10;
/// Hermit's boot stack: its `_start` takes `rsp` as the stack's base and adds its
/// `KERNEL_STACK_SIZE` (32 KiB) to it.
const HERMIT_STACK_SIZE: usize = 32 << 10;
/// Room for the device tree and the ELF parser's allocations.
const HEAP_SIZE: usize = 256 << 10;
/// COM1, which QEMU's microvm and Firecracker both emulate.
const SERIAL: u16 = 0x3f8;
/// QEMU's `isa-debug-exit` device (the command lines map it here); a write of `v` ends QEMU
/// with status `2v + 1`.
const DEBUG_EXIT: u16 = 0xf4;

#[repr(C, align(4096))]
struct Aligned<const N: usize>([u8; N]);

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

static mut STACK: Aligned<STACK_SIZE> = Aligned([0; STACK_SIZE]);
static mut HERMIT_STACK: Aligned<HERMIT_STACK_SIZE> = Aligned([0; HERMIT_STACK_SIZE]);
static mut PML4: PageTable = PageTable([0; 512]);
static mut PDPT: PageTable = PageTable([0; 512]);
static mut PD: PageTable = PageTable([0; 512]);

/// Null, 64-bit code (selector 0x08), data (0x10).
static GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

#[repr(C, packed)]
struct Gdtr {
    limit: u16,
    base: &'static [u64; 3],
}
static GDTR: Gdtr = Gdtr {
    limit: (size_of::<[u64; 3]>() - 1) as u16,
    base: &GDT,
};

/// The PVH entry: identity-map the first GiB with 2 MiB pages, enable PAE and long mode, load
/// a GDT with a 64-bit code segment and far-return into [`rust_start`] with the start info's
/// address as its argument.
#[unsafe(naked)]
unsafe extern "C" fn pvh_start32() -> ! {
    core::arch::naked_asm!(
        ".code32",
        "cli",
        "mov esp, offset {stack}",
        "add esp, {stack_size}",
        // PD: 512 entries of 2 MiB, present | writable | huge.
        "mov edi, offset {pd}",
        "mov eax, 0x83",
        "mov ecx, 512",
        "2:",
        "mov dword ptr [edi], eax",
        "mov dword ptr [edi + 4], 0",
        "add eax, 0x200000",
        "add edi, 8",
        "loop 2b",
        "mov eax, offset {pd}",
        "or eax, 3",
        "mov dword ptr [{pdpt}], eax",
        "mov eax, offset {pdpt}",
        "or eax, 3",
        "mov dword ptr [{pml4}], eax",
        "mov eax, offset {pml4}",
        "mov cr3, eax",
        // CR4.PAE, then EFER.LME, then CR0.PG | CR0.PE.
        "mov eax, cr4",
        "or eax, 1 << 5",
        "mov cr4, eax",
        "mov ecx, 0xc0000080",
        "rdmsr",
        "or eax, 1 << 8",
        "wrmsr",
        "mov eax, cr0",
        "or eax, (1 << 31) | 1",
        "mov cr0, eax",
        "lgdt [{gdtr}]",
        "mov ax, 0x10",
        "mov ds, ax",
        "mov es, ax",
        "mov fs, ax",
        "mov gs, ax",
        "mov ss, ax",
        "mov edi, ebx",
        "mov eax, 0x08",
        "push eax",
        "mov eax, offset {rust_start}",
        "push eax",
        "retf",
        ".code64",
        stack = sym STACK,
        stack_size = const STACK_SIZE,
        pd = sym PD,
        pdpt = sym PDPT,
        pml4 = sym PML4,
        gdtr = sym GDTR,
        rust_start = sym rust_start,
    );
}

/// The native ELF entry, which PVH does not use; `linux-loader` (Firecracker) insists that one
/// exists.
#[unsafe(no_mangle)]
#[unsafe(naked)]
unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!("2: hlt", "jmp 2b");
}

unsafe extern "C" {
    /// The end of the loader's image (lld defines it).
    static _end: u8;
}

/// Reads a `T` at guest-physical `addr`, which the first GiB's identity map makes a valid
/// address. Unaligned: QEMU 7.2 puts the module list on a 4-byte boundary.
unsafe fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: the caller passes an address the VMM filled in with a `T`.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

extern "C" fn rust_start(start_info: u32) -> ! {
    match boot(u64::from(start_info)) {
        Ok(never) => match never {},
        Err(e) => fail(format_args!("{e}")),
    }
}

fn boot(start_info: u64) -> Result<core::convert::Infallible, alloc::string::String> {
    use alloc::format;
    // SAFETY: PVH hands over a start info at this address.
    let info: StartInfo = unsafe { read(start_info) };
    if info.magic != pvh::start_info::START_MAGIC_VALUE {
        return Err(format!("no PVH start info (magic {:#x})", info.magic));
    }
    if info.nr_modules == 0 {
        return Err("no application image: pass it as the initrd".into());
    }
    // SAFETY: nr_modules > 0 entries start at modlist_paddr.
    let module: ModlistEntry = unsafe { read(info.modlist_paddr) };
    let initrd = module.paddr..module.paddr + module.size;
    let cmdline = if info.cmdline_paddr == 0 {
        ""
    } else {
        // SAFETY: a NUL-terminated string the VMM wrote.
        unsafe { core::ffi::CStr::from_ptr(info.cmdline_paddr as *const core::ffi::c_char) }
            .to_str()
            .map_err(|_| "the command line is not UTF-8")?
    };
    let ram_end = (0..u64::from(info.memmap_entries))
        .map(|i| {
            // SAFETY: memmap_entries entries start at memmap_paddr.
            unsafe {
                read::<MemmapTableEntry>(
                    info.memmap_paddr + i * size_of::<MemmapTableEntry>() as u64,
                )
            }
        })
        .filter(|e| e.ty == 1)
        .map(|e| e.addr + e.size)
        .max()
        .ok_or("the memory map lists no RAM")?
        .min(layout::MAPPED);

    // SAFETY: the identity map covers the initrd, which the VMM placed in RAM.
    let image =
        unsafe { core::slice::from_raw_parts(initrd.start as *const u8, module.size as usize) };
    let kernel =
        KernelObject::parse(image).map_err(|e| format!("the initrd is not a Hermit image: {e}"))?;
    let loader_end = &raw const _end as u64;
    let at: Range<u64> = layout::place(
        loader_end,
        kernel.mem_size() as u64,
        kernel.start_addr(),
        ram_end,
        &initrd,
    )
    .map_err(|e| format!("{e}"))?;
    // SAFETY: `place` chose RAM inside the identity map that nothing else uses.
    let memory = unsafe {
        core::slice::from_raw_parts_mut(
            at.start as *mut MaybeUninit<u8>,
            (at.end - at.start) as usize,
        )
    };
    let loaded = kernel.load_kernel(memory, at.start);

    let tree = fdt::device_tree((0, ram_end), cmdline).map_err(|e| format!("device tree: {e}"))?;
    let tree: &'static [u8] = alloc::vec::Vec::leak(tree);
    let boot_info = BootInfo {
        hardware_info: HardwareInfo {
            phys_addr_range: 0..ram_end,
            serial_port_base: core::num::NonZeroU16::new(SERIAL),
            device_tree: core::num::NonZeroU64::new(tree.as_ptr() as u64),
        },
        load_info: loaded.load_info,
        platform_info: PlatformInfo::Fdt,
    };
    let raw: &'static RawBootInfo =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(boot_info.into()));
    let stack = &raw mut HERMIT_STACK as u64;
    // SAFETY: Hermit's entry takes the boot information and the CPU number, with `rsp` at the
    // base of its boot stack; nothing of the loader runs after this.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "jmp {entry}",
            stack = in(reg) stack,
            entry = in(reg) loaded.entry_point,
            in("rdi") raw,
            in("esi") 0u32,
            options(noreturn),
        )
    }
}

/// Writes to COM1, waiting for room in the transmitter.
struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: port I/O to the UART, which has no memory effects.
            unsafe {
                while inb(SERIAL + 5) & 0x20 == 0 {}
                core::arch::asm!("out dx, al", in("dx") SERIAL, in("al") b, options(nomem, nostack));
            }
        }
        Ok(())
    }
}

unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller reads a port without side effects on memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
    };
    value
}

/// Says why on the serial line and ends the VM: QEMU through `isa-debug-exit` (status 33),
/// Firecracker through the keyboard controller's reset line.
fn fail(why: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(Serial, "limes-error hermit-loader: {why}");
    // SAFETY: port writes that end the VM; nothing runs after them.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") DEBUG_EXIT, in("al") 0x10u8, options(nomem, nostack));
        core::arch::asm!("out dx, al", in("dx") 0x64u16, in("al") 0xfeu8, options(nomem, nostack));
        loop {
            core::arch::asm!("hlt", options(nomem, nostack));
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("{info}"))
}

/// A bump allocator over a static: the loader allocates a few KiB once and never frees.
struct Bump;

static mut HEAP: Aligned<HEAP_SIZE> = Aligned([0; HEAP_SIZE]);
static mut NEXT: usize = 0;

// SAFETY: the loader runs on one CPU with interrupts off, so there is no concurrent call.
unsafe impl core::alloc::GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: single-threaded, see above.
        unsafe {
            let base = (&raw mut HEAP) as usize;
            let start = (base + NEXT).next_multiple_of(layout.align());
            if start + layout.size() > base + HEAP_SIZE {
                return core::ptr::null_mut();
            }
            NEXT = start + layout.size() - base;
            start as *mut u8
        }
    }

    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;
