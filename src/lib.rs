//! shopcue makes live video shoppable.
//!
//! Data flows `ingest` → `media` → `shots` (and, later, inference → matching → cues):
//! [`ingest`] polls a live HLS playlist (or receives SRT, or reads a file), fetching each
//! segment once and giving it a wall-clock anchor; [`media`] — the only module that
//! touches GStreamer — decodes segments into [`frame::Frame`]s at the analysis height;
//! [`shots`] finds shot changes in every frame (pure logic). [`origin`] serves a looping
//! live HLS channel from a file for tests and the demo. [`config`] holds the settings tree
//! (file, then `SHOPCUE__SECTION__KEY` environment), validated at start-up; [`telemetry`]
//! sets up structured logs. `main.rs` is a thin command line over these.
//!
//! [`inference`] — the only module that touches ONNX Runtime — runs the detector and
//! embedder described in the config; [`catalog`] — the only module that touches FAISS —
//! holds the products, builds and updates their index, and finds them in pictures
//! (detect → crop → embed → search); [`bench`] holds the benchmarks.

pub mod bench;
pub mod catalog;
pub mod config;
pub mod cue;
pub mod frame;
pub mod http;
pub mod inference;
pub mod ingest;
pub mod media;
pub mod shots;
