//! The ingest settings (`[ingest]`): variant choice, live start, time and size limits,
//! retries. Owned here; `config` only assembles them into the settings tree.

use serde::{Deserialize, Serialize};

/// One channel to analyse: `[[channels]] id = "news" url = "https://…/master.m3u8"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub id: String,
    pub url: String,
}

/// Longest channel URL accepted (a signed CDN URL fits easily).
pub const MAX_CHANNEL_URL_BYTES: usize = 4096;

impl ChannelSettings {
    /// The one check of a channel, for the settings file and the admin API alike:
    /// `Err((field, why))` with `field` `id` or `url`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        crate::cue::validate_channel_id(&self.id).map_err(|why| ("id", why))?;
        if self.url.len() > MAX_CHANNEL_URL_BYTES {
            return Err(("url", format!("longer than {MAX_CHANNEL_URL_BYTES} bytes")));
        }
        super::SourceSpec::parse(&self.url).map_err(|e| ("url", e.to_string()))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Which variant of a multivariant playlist to analyse: `closest:<height>`, `highest`,
    /// `lowest` or `bandwidth:<bits per second>` (the closest bandwidth).
    pub variant: String,
    /// Where to start in a live playlist: how many segments back from the live edge.
    pub live_start_segments: usize,
    pub playlist_timeout_ms: u64,
    pub segment_timeout_ms: u64,
    /// Size limits: a larger playlist or segment is refused.
    pub max_playlist_bytes: usize,
    pub max_segment_bytes: usize,
    /// Back-off between failed requests: doubles from the initial value up to the maximum
    /// (which bounds how long a channel takes to notice its origin is healthy again).
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Tries per segment before it is given up as lost (the channel goes on).
    pub segment_attempts: u32,
    /// A live playlist unchanged for this many target durations is reported as stalled.
    pub stall_target_durations: f64,
    /// SRT: receive latency in ms (srtsrc `latency`).
    pub srt_latency_ms: u32,
    /// Hosts an origin may redirect to besides its own (a CDN's); a redirect to any other
    /// host is refused with an error naming it.
    pub redirect_hosts: Vec<String>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            variant: "closest:720".into(),
            live_start_segments: 1,
            playlist_timeout_ms: 5_000,
            segment_timeout_ms: 10_000,
            max_playlist_bytes: 1 << 20,
            max_segment_bytes: 64 << 20,
            retry_initial_ms: 250,
            retry_max_ms: 4_000,
            segment_attempts: 3,
            stall_target_durations: 3.0,
            srt_latency_ms: 125,
            redirect_hosts: Vec::new(),
        }
    }
}

/// How a variant of a multivariant playlist is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VariantChoice {
    ClosestHeight(u32),
    Highest,
    Lowest,
    Bandwidth(u64),
}

impl std::str::FromStr for VariantChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{v}` is not a number"))
        };
        match s.split_once(':') {
            Some(("closest", h)) => Ok(Self::ClosestHeight(num(h)? as u32)),
            Some(("bandwidth", b)) => Ok(Self::Bandwidth(num(b)?)),
            None if s == "highest" => Ok(Self::Highest),
            None if s == "lowest" => Ok(Self::Lowest),
            _ => Err(format!(
                "`{s}` is not one of closest:<height>, highest, lowest, bandwidth:<bps>"
            )),
        }
    }
}
