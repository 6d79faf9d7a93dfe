//! `limes bench` (the study): Wasm against native, container, Linux microVM and unikernel
//! baselines.

pub mod backends;
pub mod kvm;
pub mod plots;
pub mod ratios;
pub mod report;
pub mod run;
pub mod verdict;
pub mod workload;
