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
//! The bindings are generated once here, from `guests/wit/run.wit`, so that every guest in the
//! workspace shares them instead of repeating `wit_bindgen::generate!`.

wit_bindgen::generate!({
    path: "../wit",
    world: "runnable",
    pub_export_macro: true,
    export_macro_name: "export_run",
});

pub use exports::component::run::run::Guest;
