//! The CLI's integration tests, one binary (each binary links the crates again): `limes` as a
//! user runs it, with `limes serve` as a child process.

mod common;
mod languages;
mod operate;
mod registry;
mod state;
mod stop;
mod trust;
