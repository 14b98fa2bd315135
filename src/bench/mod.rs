//! Benchmarks behind `shopcue bench <name>`: each prints markdown tables (and returns its
//! rows where callers need them); peers named by an issue run in the same invocation and
//! share the table. Numbers are recorded in docs/BENCHMARKS.md.

pub mod capacity;
pub mod catalog_accuracy;
pub mod catalog_speed;
pub mod children;
pub mod failover;
pub mod fanout;
pub mod glass;
pub mod ingest;
pub mod live_cues;
pub mod manifest;
pub mod proxy_load;
pub mod shot_file;
pub mod shots;
pub mod soak;
