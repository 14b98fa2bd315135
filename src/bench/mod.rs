//! Benchmarks, wired as `shopcue bench <name>`: each prints a markdown table and returns
//! its rows. Peers the task names run in the same invocation and share the table.

pub mod shots;
