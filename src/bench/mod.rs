//! Benchmarks behind `shopcue bench <name>`: each prints markdown tables (and returns its
//! rows where callers need them); numbers are recorded in docs/BENCHMARKS.md.

pub mod fanout;
pub mod ingest;
pub mod manifest;
