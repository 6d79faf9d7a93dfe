//! The study's `mandelbrot` workload as a Limes function; see `workloads::mandelbrot` for its arguments.
//! A bad argument or a failed write panics, which the host reports as a trap with the message.

struct Workload;

impl limes_guest::Guest for Workload {
    fn run(args: String) -> String {
        workloads::run("mandelbrot", &args).unwrap_or_else(|e| panic!("mandelbrot: {e}"))
    }
}

limes_guest::export_run!(Workload with_types_in limes_guest);
