//! Image processing: decode, grayscale, resize, blur, encode, with the `image` crate.
//!
//! `size` is the input's width and height (default 256) and `iterations` how many times the
//! pipeline runs (default 1). The input is a deterministic RGB pattern from a fixed seed.
//! - `noio`: the input is generated and PNG-encoded in memory, then processed.
//! - `prepare`: writes that input to `dir/input.png`.
//! - `io`: reads `dir/input.png` and writes the result to `dir/output.png`.
//!
//! With `stages=1` the result also names the nanoseconds each stage took in total
//! (`decode_ns=.. grayscale_ns=.. resize_ns=.. blur_ns=.. encode_ns=..`), so that a comparison
//! of two builds can say which stage makes the difference.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage, imageops::FilterType};

use crate::{Args, Mode, checksum};

const SEED: u64 = 0x5eed_1e55_u64;

/// A deterministic RGB test image: smooth gradients with xorshift noise, so that PNG has real
/// work to do and every target produces the same bytes.
pub fn generate(size: u32) -> RgbImage {
    let mut state = SEED;
    RgbImage::from_fn(size, size, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state & 0x1f) as u8;
        image::Rgb([
            (x * 255 / size.max(1)) as u8 ^ noise,
            (y * 255 / size.max(1)) as u8,
            ((x + y) % 256) as u8 ^ (noise >> 1),
        ])
    })
}

/// Encodes an image as PNG.
pub fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| format!("encoding PNG: {e}"))?;
    Ok(out.into_inner())
}

/// The pipeline's stages, in order.
pub const STAGES: [&str; 5] = ["decode", "grayscale", "resize", "blur", "encode"];

/// Decodes `input`, then grayscale, half-size resize, Gaussian blur (σ = 1.5) and PNG encode.
/// Returns the encoded result and the checksum of its pixels.
pub fn process(input: &[u8]) -> Result<(Vec<u8>, u64), String> {
    process_timed(input).map(|(png, sum, _)| (png, sum))
}

/// [`process`], also returning each of [`STAGES`]' duration in nanoseconds.
pub fn process_timed(input: &[u8]) -> Result<(Vec<u8>, u64, [u128; 5]), String> {
    let mut ns = [0; 5];
    let mut clock = std::time::Instant::now();
    let mut lap = |stage: usize| {
        ns[stage] = clock.elapsed().as_nanos();
        clock = std::time::Instant::now();
    };
    let decoded = image::load_from_memory(input).map_err(|e| format!("decoding input: {e}"))?;
    lap(0);
    let gray = decoded.grayscale();
    lap(1);
    let (w, h) = (gray.width() / 2, gray.height() / 2);
    let small = gray.resize_exact(w.max(1), h.max(1), FilterType::Triangle);
    lap(2);
    let blurred = small.blur(1.5);
    lap(3);
    let sum = checksum(blurred.as_bytes());
    let png = encode_png(&blurred)?;
    lap(4);
    Ok((png, sum, ns))
}

/// Runs the workload; returns `image-processing size=.. iterations=.. checksum=..`.
pub fn run(args: &Args) -> Result<String, String> {
    let size = args.number("size", 256)?;
    let iterations = args.number("iterations", 1)?;
    let mode = args.mode()?;
    let input_path = args.dir().join("input.png");
    let input = match mode {
        Mode::Prepare => {
            let png = encode_png(&DynamicImage::ImageRgb8(generate(size)))?;
            std::fs::write(&input_path, &png)
                .map_err(|e| format!("writing {}: {e}", input_path.display()))?;
            return Ok(format!(
                "prepared {} ({} bytes)",
                input_path.display(),
                png.len()
            ));
        }
        Mode::NoIo => encode_png(&DynamicImage::ImageRgb8(generate(size)))?,
        Mode::Io => std::fs::read(&input_path).map_err(|e| {
            format!(
                "reading {}: {e} (run once with mode=prepare to create it)",
                input_path.display()
            )
        })?,
    };
    let (mut sum, mut stages) = (0, [0u128; 5]);
    for _ in 0..iterations {
        let (png, s, ns) = process_timed(&input)?;
        sum = s;
        for (total, ns) in stages.iter_mut().zip(ns) {
            *total += ns;
        }
        if mode == Mode::Io {
            let out = args.dir().join("output.png");
            std::fs::write(&out, png).map_err(|e| format!("writing {}: {e}", out.display()))?;
        }
    }
    let mut result =
        format!("image-processing size={size} iterations={iterations} checksum={sum:016x}");
    if args.number("stages", 0)? == 1 {
        for (name, ns) in STAGES.iter().zip(stages) {
            result.push_str(&format!(" {name}_ns={ns}"));
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pipeline_halves_and_is_deterministic() {
        let input =
            super::encode_png(&image::DynamicImage::ImageRgb8(super::generate(32))).unwrap();
        let (png, a) = super::process(&input).unwrap();
        let (_, b) = super::process(&input).unwrap();
        assert_eq!(a, b);
        let out = image::load_from_memory(&png).unwrap();
        assert_eq!((out.width(), out.height()), (16, 16));
    }
}
