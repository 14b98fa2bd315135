//! Benchmarks, each a `run_bench` that prints a markdown table and returns its rows; wired
//! as `shopcue bench <name>`.

pub mod manifest;
