//! Mandelbrot: a pure compute workload.
//!
//! `size` is the image's width and height in pixels (default 256) and `iterations` the escape
//! limit (default 256). In `io` mode the image is written as a binary PGM to
//! `dir/mandelbrot.pgm`; otherwise only its checksum is returned.

use crate::{Args, Mode, checksum};

/// Pixels computed side by side. The lanes are independent, so the compiler can vectorize them
/// (SSE2 natively, simd128 in Wasm), and a Wasm runtime's per-loop interruption check is paid once
/// for four pixels instead of once for each.
const LANES: usize = 4;

/// Renders the set over [-2, 1] × [-1.5, 1.5] as one byte of escape time per pixel.
pub fn render(size: u32, iterations: u32) -> Vec<u8> {
    let n = size as usize;
    let mut pixels = Vec::with_capacity(n * n);
    let scale = 3.0 / f64::from(size.max(1));
    for y in 0..n {
        let ci = -1.5 + y as f64 * scale;
        for x0 in (0..n).step_by(LANES) {
            let mut cr = [0.0f64; LANES];
            for (l, c) in cr.iter_mut().enumerate() {
                *c = -2.0 + (x0 + l) as f64 * scale;
            }
            let (mut zr, mut zi, mut count) = ([0.0f64; LANES], [0.0f64; LANES], [0u32; LANES]);
            for _ in 0..iterations {
                let mut any = false;
                for l in 0..LANES {
                    // A lane that escaped keeps its z, so it stays escaped and stops counting:
                    // the same count as iterating each pixel on its own until it escapes.
                    let (r2, i2) = (zr[l] * zr[l], zi[l] * zi[l]);
                    let inside = r2 + i2 <= 4.0;
                    let next_zi = 2.0 * zr[l] * zi[l] + ci;
                    zr[l] = if inside { r2 - i2 + cr[l] } else { zr[l] };
                    zi[l] = if inside { next_zi } else { zi[l] };
                    count[l] += u32::from(inside);
                    any |= inside;
                }
                if !any {
                    break;
                }
            }
            let lanes = LANES.min(n - x0);
            pixels.extend(count[..lanes].iter().map(|&i| (i % 256) as u8));
        }
    }
    pixels
}

/// Runs the workload; returns `mandelbrot size=.. iterations=.. checksum=..`.
pub fn run(args: &Args) -> Result<String, String> {
    let size = args.number("size", 256)?;
    let iterations = args.number("iterations", 256)?;
    let pixels = render(size, iterations);
    let sum = checksum(&pixels);
    if args.mode()? == Mode::Io {
        let path = args.dir().join("mandelbrot.pgm");
        let mut file = format!("P5\n{size} {size}\n255\n").into_bytes();
        file.extend_from_slice(&pixels);
        std::fs::write(&path, file).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(format!(
        "mandelbrot size={size} iterations={iterations} checksum={sum:016x}"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_is_inside_the_set() {
        // Size 3 samples x = -2, -1, 0 on the row y = 0 (ci = 0): (0,0) never escapes.
        let pixels = super::render(3, 50);
        assert_eq!(pixels[3 + 2], 50);
        // -2 + 0i stays bounded too; (-2, -1.5) escapes at once.
        assert_eq!(pixels[0], 1);
    }
}
