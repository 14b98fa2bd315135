//! shopcue makes live video shoppable.
//!
//! Data flows `ingest` → `media` → `shots` → `matching` → cues → outputs:
//! [`ingest`] polls a live HLS playlist (or receives SRT, or reads a file), fetching each
//! segment once and giving it a wall-clock anchor; [`media`] (the only module that touches
//! GStreamer) decodes segments into [`frame::Frame`]s at the analysis height; [`shots`]
//! finds shot changes in every frame (pure logic); [`inference`] (the only ort user) runs
//! the detector and embedder described in config; [`catalog`] (the only FAISS user) holds
//! the product index and the detect → crop → embed → search path; [`matching`] samples
//! frames for inference, judges detections against catalog candidates and aggregates them per shot
//! into [`cue::Cue`]s (pure logic); [`cuebus`] carries cues between machines (in memory,
//! or Redis Streams, the only Redis user); [`manifest`] renders cues into HLS playlists
//! (EXT-X-DATERANGE with SCTE-35), MPEG-TS timed ID3 and fMP4 emsg (pure logic).
//! [`pipeline`] runs one channel's analysis on two threads (frames → shots → sampler →
//! bounded work queue → inference → cue builder), the same for live and batch;
//! [`sidecar`] is `shopcue run`: every channel, the bus, and one HTTP server, under one
//! cancellation tree; [`analyze`] is batch mode (a file into shoppable JSON); [`metrics`]
//! is the Prometheus registry (the only `prometheus-client` user); [`allocator`] caps,
//! measures and trims glibc malloc's arenas (the only caller of malloc's own API).
//! [`file_origin`] serves a looping live HLS channel from a file for tests and the demo; [`http`]
//! is the only module that touches axum/hyper. [`config`] assembles the settings tree
//! from the settings each module owns (file, then `SHOPCUE__SECTION__KEY` environment),
//! validated at start-up, and nothing below the runtime imports it (tests/layout.rs fails
//! on any import cycle); [`redact`] strips secrets from URLs that leave the process;
//! [`registry`] keeps the channels added at runtime (memory, a file, or Redis); [`telemetry`] sets
//! up structured logs; [`cli`] the subcommands that combine modules. `main.rs` is a thin
//! command line over these; the benchmarks (`shopcue bench …`, src/bench/) belong to that
//! binary, not to the library.

// Domain types and shared state, used by every layer.
pub mod cue;
pub mod frame;
pub mod progress;
pub mod redact;

// Pure cores: no I/O, exhaustive tests.
pub mod manifest;
pub mod matching;
pub mod shots;

// Owners of foreign libraries (one each): GStreamer, ONNX Runtime, FAISS, Redis,
// axum/hyper, prometheus-client, glibc malloc.
pub mod allocator;
pub mod catalog;
pub mod cuebus;
pub mod http;
pub mod inference;
pub mod media;
pub mod metrics;

// Runtime: sources, the per-channel pipeline, the registry and the process around them.
pub mod analyze;
pub mod ingest;
pub mod operator;
pub mod pipeline;
pub mod registry;
pub mod sidecar;

// Settings assembly, logging, the command line and the test origin.
pub mod cli;
pub mod config;
pub mod file_origin;
pub mod telemetry;
