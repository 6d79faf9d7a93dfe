//! Image processing: decode, grayscale, resize, blur, encode, with the `image` crate.
//!
//! `size` is the input's width and height (default 256) and `iterations` how many times the
//! pipeline runs (default 1). The input is a deterministic RGB pattern from a fixed seed.
//! - `noio`: the input is generated and PNG-encoded in memory, then processed.
//! - `prepare`: writes that input to `dir/input.png`.
//! - `io`: reads `dir/input.png` and writes the result to `dir/output.png`.

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

/// Decodes `input`, then grayscale, half-size resize, Gaussian blur (σ = 1.5) and PNG encode.
/// Returns the encoded result and the checksum of its pixels.
pub fn process(input: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let decoded = image::load_from_memory(input).map_err(|e| format!("decoding input: {e}"))?;
    let gray = decoded.grayscale();
    let (w, h) = (gray.width() / 2, gray.height() / 2);
    let small = gray.resize_exact(w.max(1), h.max(1), FilterType::Triangle);
    let blurred = small.blur(1.5);
    let sum = checksum(blurred.as_bytes());
    Ok((encode_png(&blurred)?, sum))
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
    let mut sum = 0;
    for _ in 0..iterations {
        let (png, s) = process(&input)?;
        sum = s;
        if mode == Mode::Io {
            let out = args.dir().join("output.png");
            std::fs::write(&out, png).map_err(|e| format!("writing {}: {e}", out.display()))?;
        }
    }
    Ok(format!(
        "image-processing size={size} iterations={iterations} checksum={sum:016x}"
    ))
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
