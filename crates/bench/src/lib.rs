//! The benchmark harness behind `limes bench`. It sits beside the runtime and the node, never
//! underneath them: it drives them as a user would (the runtime's API, a `limes serve` process,
//! nodes joined to a NATS cluster) and measures.

pub mod cluster;
pub mod events;
pub mod functions;
pub mod kv;
pub mod languages;
pub mod load;
pub mod node;
pub mod overload;
pub mod preinit;
pub mod process;
pub mod stats;
pub mod study;
