//! The device tree Hermit reads at boot: its RAM and its command line.

use alloc::vec::Vec;

/// A flattened device tree with one `memory` node for `ram` (start, length) and the command
/// line as `/chosen/bootargs`. Hermit finds its free memory in the former (skipping what lies
/// below its own image) and its arguments, and the application's after `--`, in the latter.
pub fn device_tree(ram: (u64, u64), bootargs: &str) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut fdt = vm_fdt::FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    // Not "hermit,uefi": that would make Hermit take the biggest region whole.
    fdt.property_string("compatible", "limes,pvh-microvm")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", bootargs)?;
    fdt.end_node(chosen)?;
    let memory = fdt.begin_node(&alloc::format!("memory@{:x}", ram.0))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[ram.0, ram.1])?;
    fdt.end_node(memory)?;
    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_carries_memory_and_bootargs() {
        let blob = device_tree((0, 128 << 20), "-freq 2800 -- mandelbrot size=8").unwrap();
        assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
        let text = String::from_utf8_lossy(&blob);
        assert!(text.contains("-freq 2800 -- mandelbrot size=8"));
        assert!(text.contains("memory@0"));
        // reg = <0 0x8000000> as two big-endian u64s.
        let reg = [0u64.to_be_bytes(), (128u64 << 20).to_be_bytes()].concat();
        assert!(blob.windows(16).any(|w| w == reg.as_slice()));
    }
}
