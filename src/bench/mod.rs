//! Benchmarks behind `shopcue bench <name>`: each prints a markdown table and returns its
//! rows.

pub mod catalog_accuracy;
pub mod catalog_speed;
