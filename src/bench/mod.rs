//! Benchmarks behind `shopcue bench <name>`: each prints markdown tables; numbers are
//! recorded in docs/BENCHMARKS.md.

pub mod ingest;
