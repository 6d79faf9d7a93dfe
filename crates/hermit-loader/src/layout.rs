//! Where the application image goes in guest memory.

use core::ops::Range;

/// The loader maps the first GiB only (512 pages of 2 MiB), so everything Hermit touches before
/// it builds its own tables must lie below this.
pub const MAPPED: u64 = 1 << 30;

/// Hermit's page allocator works in 2 MiB pages where it can; an aligned start keeps the image's
/// first large page whole.
const ALIGN: u64 = 2 << 20;

/// Why an image cannot be placed.
#[derive(Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image wants an address below the loader's end.
    FixedAddressTaken(u64),
    /// The image does not fit below [`MAPPED`] and the end of RAM.
    TooBig { needed: u64, ram_end: u64 },
    /// The image would overwrite the initrd it is being copied from.
    OverlapsInitrd,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::FixedAddressTaken(at) => {
                write!(f, "the image must load at {at:#x}, inside the loader")
            }
            Self::TooBig { needed, ram_end } => write!(
                f,
                "the image needs {needed:#x} bytes but RAM (mapped part) ends at {ram_end:#x}"
            ),
            Self::OverlapsInitrd => write!(f, "the image would overlap the initrd it comes from"),
        }
    }
}

/// The guest-physical range the image of `size` bytes is loaded to: its own address if it has
/// one (`fixed`), else the first 2 MiB boundary after the loader (`loader_end`). It must end below
/// RAM's end and the mapped GiB, and must not overlap `initrd`, which is read while copying.
pub fn place(
    loader_end: u64,
    size: u64,
    fixed: Option<u64>,
    ram_end: u64,
    initrd: &Range<u64>,
) -> Result<Range<u64>, LayoutError> {
    let start = match fixed {
        Some(at) if at < loader_end => return Err(LayoutError::FixedAddressTaken(at)),
        Some(at) => at,
        None => loader_end.div_ceil(ALIGN) * ALIGN,
    };
    let end = start + size;
    let limit = ram_end.min(MAPPED);
    if end > limit {
        return Err(LayoutError::TooBig {
            needed: size,
            ram_end: limit,
        });
    }
    if start < initrd.end && initrd.start < end {
        return Err(LayoutError::OverlapsInitrd);
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_relocatable_image_goes_to_the_next_2_mib_boundary() {
        let initrd = 120 * MIB..121 * MIB;
        assert_eq!(
            place(2 * MIB + 0x1234, 3 * MIB, None, 128 * MIB, &initrd),
            Ok(4 * MIB..7 * MIB)
        );
        assert_eq!(
            place(4 * MIB, MIB, None, 128 * MIB, &initrd),
            Ok(4 * MIB..5 * MIB)
        );
    }

    #[test]
    fn a_fixed_image_goes_where_it_says_unless_the_loader_is_there() {
        let initrd = 120 * MIB..121 * MIB;
        assert_eq!(
            place(2 * MIB, MIB, Some(8 * MIB), 128 * MIB, &initrd),
            Ok(8 * MIB..9 * MIB)
        );
        assert_eq!(
            place(3 * MIB, MIB, Some(MIB), 128 * MIB, &initrd),
            Err(LayoutError::FixedAddressTaken(MIB))
        );
    }

    #[test]
    fn images_past_ram_the_mapped_gib_or_over_the_initrd_are_refused() {
        let initrd = 6 * MIB..7 * MIB;
        assert_eq!(
            place(2 * MIB, 8 * MIB, None, 128 * MIB, &initrd),
            Err(LayoutError::OverlapsInitrd)
        );
        assert!(matches!(
            place(2 * MIB, 200 * MIB, None, 128 * MIB, &(0..0)),
            Err(LayoutError::TooBig { .. })
        ));
        assert!(matches!(
            place(2 * MIB, 1 << 30, None, 4 << 30, &(0..0)),
            Err(LayoutError::TooBig {
                ram_end: MAPPED,
                ..
            })
        ));
    }
}
