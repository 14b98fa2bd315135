//! Benchmarks, each `run_bench(args)` printing a markdown table (wired as `shopcue bench <name>`).

pub mod fanout;
