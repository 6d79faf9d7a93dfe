//! The study's no-op function: measures pure start-up and call overhead.

struct Noop;

impl limes_guest::Guest for Noop {
    fn run(_args: String) -> String {
        String::new()
    }
}

limes_guest::export_run!(Noop with_types_in limes_guest);
