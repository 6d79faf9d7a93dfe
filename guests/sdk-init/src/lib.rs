//! The bindings of the `runnable-with-init` world (`guests/wit/run.wit`), behind
//! `limes_guest::init!`. They live in a crate of their own because wit-bindgen's exported macros
//! for the shared `run` interface would clash with `limes-guest`'s own in one crate.

wit_bindgen::generate!({
    path: "../wit",
    world: "runnable-with-init",
    pub_export_macro: true,
    export_macro_name: "export_with_init",
});
