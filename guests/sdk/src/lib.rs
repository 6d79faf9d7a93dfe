//! The guest side of a Limes function.
//!
//! A function implements [`Guest`] and exports it with [`export_run!`]:
//!
//! ```ignore
//! struct Echo;
//! impl limes_guest::Guest for Echo {
//!     fn run(args: String) -> String { args }
//! }
//! limes_guest::export_run!(Echo with_types_in limes_guest);
//! ```
//!
//! A function with work to do before its first request (load a table, parse a model) also
//! implements [`Init`] and exports both with [`init!`]. The node runs `init` once at deploy and
//! snapshots the state it leaves; every invocation then starts from that state:
//!
//! ```ignore
//! struct Lookup;
//! impl limes_guest::Init for Lookup {
//!     fn init() { TABLE.get_or_init(build_table); }
//! }
//! impl limes_guest::Guest for Lookup {
//!     fn run(args: String) -> String { TABLE.get_or_init(build_table).find(&args) }
//! }
//! limes_guest::init!(Lookup);
//! ```
//!
//! `init` runs without a request and before the snapshot: what it leaves in memory (statics,
//! the heap) is kept; what it does outside (files, clocks, random numbers) is not replayed.
//!
//! The bindings are generated once here, from `guests/wit/run.wit`, so that every guest in the
//! workspace shares them instead of repeating `wit_bindgen::generate!`.

wit_bindgen::generate!({
    path: "../wit",
    world: "runnable",
    pub_export_macro: true,
    export_macro_name: "export_run",
});

pub use exports::component::run::run::Guest;

#[doc(hidden)]
pub use limes_guest_init as with_init;

/// A function's initialization step, run once at deploy (see the crate's documentation).
pub trait Init {
    /// Prepares what every invocation needs. A panic here fails the deploy with its message.
    fn init();
}

/// Exports a type that implements [`Guest`] and [`Init`] as a function with an
/// initialization step.
#[macro_export]
macro_rules! init {
    ($ty:ident) => {
        impl $crate::with_init::exports::component::run::run::Guest for $ty {
            fn run(args: String) -> String {
                <$ty as $crate::Guest>::run(args)
            }
        }
        impl $crate::with_init::exports::component::run::init::Guest for $ty {
            fn init() {
                <$ty as $crate::Init>::init()
            }
        }
        $crate::with_init::export_with_init!($ty with_types_in $crate::with_init);
    };
}

/// Key-value stores (`wasi:keyvalue@0.2.0-draft2`): open a store the function's manifest
/// declares and read, write, count and compare-and-swap in it.
///
/// ```ignore
/// use limes_guest::kv::{atomics, store};
/// let counts = store::open("default").expect("declared with kv=default");
/// let n = atomics::increment(&counts, "alarms", 1).unwrap();
/// ```
pub mod kv {
    wit_bindgen::generate!({
        path: "../wit",
        world: "keyvalue",
        generate_all,
    });

    pub use wasi::keyvalue::{atomics, batch, store};
}
