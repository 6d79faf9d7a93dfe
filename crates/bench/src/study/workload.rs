//! The study's workloads, their arguments and their expected results.

/// One workload in one mode.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `noop`, `mandelbrot` or `image-processing`.
    pub name: &'static str,
    /// Whether it reads and writes files.
    pub io: bool,
    /// Size arguments, without mode or dir.
    pub params: String,
}

impl Workload {
    /// The study's six: each workload with and without I/O, sized for `quick` or a full run.
    pub fn all(quick: bool) -> Vec<Workload> {
        let (mandel, image) = if quick {
            ("size=96 iterations=128", "size=96")
        } else {
            ("size=512 iterations=256", "size=512")
        };
        let mut all = Vec::new();
        for io in [false, true] {
            all.push(Workload {
                name: "noop",
                io,
                params: String::new(),
            });
            all.push(Workload {
                name: "mandelbrot",
                io,
                params: mandel.into(),
            });
            all.push(Workload {
                name: "image-processing",
                io,
                params: image.into(),
            });
        }
        all
    }

    /// `noio` or `io`.
    pub fn mode(&self) -> &'static str {
        if self.io { "io" } else { "noio" }
    }

    /// A name for files: `mandelbrot-io`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.name, self.mode())
    }

    /// The argument string, with the I/O directory as the backend sees it, asking the workload
    /// to time its own work (`timed=1`).
    pub fn guest_args(&self, dir: &str) -> String {
        if self.name == "noop" {
            return String::new();
        }
        format!("mode={} {} dir={dir} timed=1", self.mode(), self.params)
            .trim()
            .to_owned()
    }

    /// What every backend must return: computed here, natively, from the same source.
    pub fn expected(&self) -> Result<String, String> {
        workloads::run(self.name, &format!("mode=noio {}", self.params))
    }
}
