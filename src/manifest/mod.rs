//! Outgoing manifests: the playlists and segments the sidecar serves to players that never
//! open a WebSocket, with the cues inside them.
//!
//! Everything here is pure (no I/O, no async, no clock reads; the caller passes the time):
//! - [`rewrite`]: a line-based rewriter of media playlists (every origin line kept, in
//!   order; PDT inserted when the origin has none; one `EXT-X-DATERANGE` per cue; hold-back;
//!   no product cues inside origin ad breaks) and of multivariant playlists (variants point
//!   at the sidecar).
//! - [`path`]: the sidecar's `/hls/{channel}/{rel}` paths and their origin URLs, refusing
//!   traversal and other hosts (only configured origins are ever fetched).
//! - [`daterange`]: a cue frozen at first sight into the attributes of its `EXT-X-DATERANGE`,
//!   so a published ID never changes (RFC 8216bis §4.4.5.1), and the ledger that keeps them.
//! - [`holdback`]: which segments may be published now, and the delay that adds.
//! - [`scte35`]: `splice_info_section` encoder/decoder (CRC-32/MPEG-2), for `SCTE35-CMD`
//!   and for reading the origin's own ad markers.
//! - [`id3`], [`ts`], [`emsg`]: the cue as ID3 timed metadata in MPEG-TS segments (a
//!   stream_type 0x15 PES stream) and in fMP4 segments (`emsg` boxes, AOM ID3 scheme).
//!
//! `docs/manifest.md` lists every tag and field emitted and why.

pub mod attr;
pub mod daterange;
pub mod emsg;
pub mod holdback;
pub mod id3;
pub mod path;
pub mod query;
pub mod rewrite;
pub mod scte35;
pub mod ts;

mod bits;
/// The CRC-32 of MPEG-2 PSI and SCTE-35 sections (polynomial 0x04C11DB7, no reflection).
pub use bits::crc32_mpeg2;

use serde::{Deserialize, Serialize};

pub use daterange::{CueDateRange, CueLedger, DATERANGE_CLASS};
pub use holdback::{HoldBack, SegmentTiming, hold_back};
pub use path::{ChannelOrigin, resolve_sidecar_path};
pub use rewrite::{
    PlaylistKind, RewriteContext, RewrittenMultivariant, RewrittenPlaylist, UriMode, playlist_kind,
    rewrite_media_playlist, rewrite_multivariant,
};

/// Everything that can go wrong in this module, with what it was about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("not an HLS playlist: {why}")]
    NotAPlaylist { why: String },
    #[error("expected a {expected} playlist, got a {found} playlist")]
    WrongPlaylistKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("playlist of {bytes} bytes is over the limit of {limit}")]
    PlaylistTooLarge { bytes: usize, limit: usize },
    #[error("line {line}: bad {tag}: {why}")]
    BadTag {
        line: usize,
        tag: String,
        why: String,
    },
    #[error("line {line}: bad URI `{uri}`: {why}")]
    BadUri {
        line: usize,
        uri: String,
        why: String,
    },
    #[error("bad origin URL `{url}`: {why}")]
    BadOriginUrl { url: String, why: String },
    #[error("path `{path}` refused: {why}")]
    PathRefused { path: String, why: String },
    #[error("cue {id}: {why}")]
    BadCue { id: String, why: String },
    #[error("SCTE-35: {why}")]
    Scte35 { why: String },
    #[error("ID3: {why}")]
    Id3 { why: String },
    #[error("MPEG-TS segment: {why}")]
    Ts { why: String },
    #[error("fMP4 segment: {why}")]
    Fmp4 { why: String },
    #[error("{what} of {bytes} bytes is over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
}

/// `[manifest]` settings: how the sidecar's playlists and segments carry cues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestSettings {
    /// Segment (and init, part, key) URIs in the sidecar's media playlists: `absolute`
    /// (straight to the origin) or `proxy` (through the sidecar, same relative paths).
    pub segment_uris: String,
    /// Publish a segment only once it has been analysed, or `hold_back_deadline_ms` after
    /// the end of its wall-clock range, so it carries its cues when players first see it.
    pub hold_back: bool,
    pub hold_back_deadline_ms: u64,
    /// `PLANNED-DURATION` of a cue still open when first seen, in seconds.
    pub planned_duration_s: f64,
    /// Insert the cues as ID3 timed metadata into proxied segments (needs
    /// `segment_uris = "proxy"`): a PES stream in MPEG-TS, `emsg` boxes in fMP4.
    pub id3: bool,
    /// Cues the date-range ledger keeps (oldest ended first out when full, counted).
    pub ledger_capacity: usize,
    /// Origin fetches (playlists and proxied segments) the HLS proxy runs at once, all
    /// channels together. A request that finds them all busy is answered 503 with
    /// `Retry-After: 1` at once (counted), never queued: memory stays bounded by this
    /// many times the size limits.
    pub max_origin_fetches: usize,
    /// Query strings of requests for proxied playlists and segments: `origin` keeps only
    /// the parameters the origin writes in its playlists' URIs (and the channel URL's, and
    /// LL-HLS `_HLS_*` directives) for the origin request and the cache key, so client
    /// additions (cache-busters) neither reach the origin nor miss the cache; `all` passes
    /// every parameter on.
    pub client_query: String,
    /// Proxied segments kept in memory (MiB, all channels together; 0: none), by channel,
    /// path after `client_query` and byte range, so the players of one segment make one
    /// origin fetch between them. When full, the segments stored earliest go first.
    pub segment_cache_mb: usize,
    /// How long a cached segment is reused, ms (an origin that restarts may reuse names).
    pub segment_cache_ttl_ms: u64,
}

impl Default for ManifestSettings {
    fn default() -> Self {
        Self {
            segment_uris: "absolute".into(),
            hold_back: false,
            hold_back_deadline_ms: 4_000,
            planned_duration_s: 10.0,
            id3: false,
            ledger_capacity: 4_096,
            max_origin_fetches: 64,
            client_query: "origin".into(),
            segment_cache_mb: 64,
            segment_cache_ttl_ms: 30_000,
        }
    }
}

impl ManifestSettings {
    /// Checks each key; the error names it (relative to `manifest.`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if UriMode::parse(&self.segment_uris).is_none() {
            return Err((
                "segment_uris",
                format!("`{}` is not `absolute` or `proxy`", self.segment_uris),
            ));
        }
        if self.hold_back_deadline_ms == 0 || self.hold_back_deadline_ms > 120_000 {
            return Err(("hold_back_deadline_ms", "must be from 1 to 120000".into()));
        }
        if !(self.planned_duration_s.is_finite()
            && self.planned_duration_s > 0.0
            && self.planned_duration_s <= 86_400.0)
        {
            return Err((
                "planned_duration_s",
                "must be greater than 0 and at most 86400".into(),
            ));
        }
        if self.id3 && self.segment_uris != "proxy" {
            return Err((
                "id3",
                "needs manifest.segment_uris = \"proxy\" (segments must pass through the sidecar)"
                    .into(),
            ));
        }
        if self.ledger_capacity == 0 {
            return Err(("ledger_capacity", "must be at least 1".into()));
        }
        if !(1..=10_000).contains(&self.max_origin_fetches) {
            return Err(("max_origin_fetches", "must be from 1 to 10000".into()));
        }
        if !["origin", "all"].contains(&self.client_query.as_str()) {
            return Err((
                "client_query",
                format!("`{}` is not `origin` or `all`", self.client_query),
            ));
        }
        if self.segment_cache_mb > 65_536 {
            return Err(("segment_cache_mb", "must be from 0 to 65536".into()));
        }
        if !(1..=600_000).contains(&self.segment_cache_ttl_ms) {
            return Err(("segment_cache_ttl_ms", "must be from 1 to 600000".into()));
        }
        Ok(())
    }

    pub fn uri_mode(&self) -> UriMode {
        UriMode::parse(&self.segment_uris).unwrap_or(UriMode::Absolute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_validate_and_bad_keys_are_named() {
        ManifestSettings::default().validate().unwrap();
        let bad = ManifestSettings {
            segment_uris: "cdn".into(),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "segment_uris");
        let bad = ManifestSettings {
            id3: true,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "id3");
        let ok = ManifestSettings {
            id3: true,
            segment_uris: "proxy".into(),
            ..Default::default()
        };
        ok.validate().unwrap();
        assert_eq!(ok.uri_mode(), UriMode::Proxy);
        let bad = ManifestSettings {
            planned_duration_s: f64::NAN,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "planned_duration_s");
        let bad = ManifestSettings {
            segment_cache_ttl_ms: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "segment_cache_ttl_ms");
        let bad = ManifestSettings {
            segment_cache_mb: 1 << 20,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "segment_cache_mb");
    }
}
