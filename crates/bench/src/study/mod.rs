//! `limes bench` (the study): Wasm against native, container and microVM baselines.

pub mod backends;
pub mod kvm;
pub mod microvm;
pub mod plots;
pub mod report;
pub mod run;
pub mod verdict;
pub mod workload;
