//! Pure HLS client logic: choosing a variant, and a tracker that turns successive reloads of
//! a live media playlist into the segments to fetch — each exactly once, in order, with a
//! wall-clock anchor — while recognising resets, jumps, an origin that falls behind, and
//! stalls. No I/O and no clock reads: the caller passes `now`. [`low_latency`] reads the
//! Low-Latency HLS parts of a media playlist.

use std::collections::VecDeque;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use m3u8_rs::{MasterPlaylist, MediaPlaylist, Playlist};
use url::Url;

use super::settings::VariantChoice;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlaylistError {
    #[error("{url}: not an HLS playlist (no #EXTM3U header)")]
    NotHls { url: String },
    #[error("{url}: malformed playlist: {why}")]
    Malformed { url: String, why: String },
    #[error("{url}: multivariant playlist has no usable variant")]
    NoVariant { url: String },
    /// A number the playlist gives that no stream can have (it would overflow, or it is
    /// beyond [`MAX_DURATION_SECS`], or a clock years ahead).
    #[error("{url}: line {line}: bad value `{value}`: {why}")]
    BadValue {
        url: String,
        /// 1-based line of the playlist (0: not known).
        line: usize,
        value: String,
        why: String,
    },
}

/// The longest EXTINF or EXT-X-TARGETDURATION accepted, in seconds. Beyond it a playlist
/// is refused: no live channel has hour-long segments, and the bound keeps every
/// duration, clock and deadline computed from these numbers far from overflowing.
pub const MAX_DURATION_SECS: f64 = 3600.0;

/// How far ahead of the caller's clock an EXT-X-PROGRAM-DATE-TIME may lie, in hours:
/// beyond it the origin's clock is wrong, and following it would pin the channel's
/// monotonic clock in the future.
pub const MAX_PDT_AHEAD_HOURS: i64 = 24;

/// Parse playlist text, with errors that say which URL and why.
pub fn parse(url: &Url, body: &[u8]) -> Result<Playlist, PlaylistError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    if !text[start..].starts_with(b"#EXTM3U") {
        return Err(PlaylistError::NotHls {
            url: super::redact_url(url.as_str()),
        });
    }
    check_numbers(url, &text[start..])?;
    let playlist =
        m3u8_rs::parse_playlist_res(&text[start..]).map_err(|e| PlaylistError::Malformed {
            url: super::redact_url(url.as_str()),
            why: match e {
                nom::Err::Error(e) | nom::Err::Failure(e) => {
                    let at =
                        String::from_utf8_lossy(&e.input[..e.input.len().min(60)]).into_owned();
                    format!("cannot parse near `{}`", at.lines().next().unwrap_or(""))
                }
                nom::Err::Incomplete(_) => "truncated".into(),
            },
        })?;
    if let Playlist::MediaPlaylist(m) = &playlist {
        check_media(url, m)?;
    }
    Ok(playlist)
}

/// What m3u8-rs read, checked once more (its durations are `f32`).
fn check_media(url: &Url, m: &MediaPlaylist) -> Result<(), PlaylistError> {
    if m.target_duration == 0 && !m.segments.is_empty() {
        return Err(PlaylistError::Malformed {
            url: super::redact_url(url.as_str()),
            why: "EXT-X-TARGETDURATION is missing or 0".into(),
        });
    }
    if let Some(s) = m.segments.iter().find(|s| {
        !(s.duration.is_finite() && s.duration >= 0.0 && f64::from(s.duration) <= MAX_DURATION_SECS)
    }) {
        return Err(PlaylistError::Malformed {
            url: super::redact_url(url.as_str()),
            why: format!("bad EXTINF duration {} for `{}`", s.duration, s.uri),
        });
    }
    Ok(())
}

/// The numbers of a playlist's text, line by line, before anything computes with them:
/// durations within [`MAX_DURATION_SECS`], sequence numbers that leave room for every
/// segment listed, byte ranges that end before `u64::MAX`. The first bad one is named
/// with its line.
fn check_numbers(url: &Url, text: &[u8]) -> Result<(), PlaylistError> {
    let text = String::from_utf8_lossy(text);
    let mut media_sequence: Option<(usize, u64)> = None;
    let mut segments = 0u64;
    let mut next_offset = 0u64;
    for (i, line) in text.lines().map(str::trim).enumerate() {
        let bad = |value: &str, why: &str| PlaylistError::BadValue {
            url: super::redact_url(url.as_str()),
            line: i + 1,
            value: value.chars().take(80).collect(),
            why: why.to_string(),
        };
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            let ok = v
                .trim()
                .parse::<u64>()
                .is_ok_and(|d| d as f64 <= MAX_DURATION_SECS);
            if !ok {
                return Err(bad(
                    line,
                    "EXT-X-TARGETDURATION must be whole seconds, at most 3600",
                ));
            }
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("").trim();
            let ok = d
                .parse::<f64>()
                .is_ok_and(|d| d.is_finite() && (0.0..=MAX_DURATION_SECS).contains(&d));
            if !ok {
                return Err(bad(line, "EXTINF must be a duration from 0 to 3600 s"));
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            let n = v.trim().parse::<u64>();
            media_sequence = Some((
                i + 1,
                n.map_err(|_| bad(line, "not a 64-bit sequence number"))?,
            ));
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad(line, "not a 64-bit sequence number"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-BYTERANGE:") {
            next_offset = byte_range_end(v.trim(), next_offset)
                .ok_or_else(|| bad(line, "the range is empty or ends beyond 2^64 bytes"))?;
        } else if !line.is_empty() && !line.starts_with('#') {
            segments += 1;
        }
    }
    if let Some((line, first)) = media_sequence
        && first.checked_add(segments).is_none()
    {
        return Err(PlaylistError::BadValue {
            url: super::redact_url(url.as_str()),
            line,
            value: first.to_string(),
            why: format!("{segments} segments from this media sequence overflow 64 bits"),
        });
    }
    Ok(())
}

/// The end of an EXT-X-BYTERANGE `length[@offset]` (the offset defaulting to
/// `next_offset`), or `None` when it is not numbers, is empty, or would overflow.
fn byte_range_end(v: &str, next_offset: u64) -> Option<u64> {
    let (len, off) = match v.split_once('@') {
        Some((l, o)) => (l.trim().parse::<u64>().ok()?, o.trim().parse::<u64>().ok()?),
        None => (v.parse::<u64>().ok()?, next_offset),
    };
    (len > 0).then_some(())?;
    off.checked_add(len)
}

/// Pick the variant to analyse; returns its absolute URL.
pub fn choose_variant(
    base: &Url,
    master: &MasterPlaylist,
    choice: VariantChoice,
) -> Result<Url, PlaylistError> {
    let candidates: Vec<_> = master.variants.iter().filter(|v| !v.is_i_frame).collect();
    let height = |v: &m3u8_rs::VariantStream| v.resolution.map(|r| r.height);
    let pick = match choice {
        VariantChoice::Highest => candidates.iter().max_by_key(|v| (height(v), v.bandwidth)),
        VariantChoice::Lowest => candidates
            .iter()
            .min_by_key(|v| (height(v).unwrap_or(u64::MAX), v.bandwidth)),
        VariantChoice::Bandwidth(b) => candidates.iter().min_by_key(|v| v.bandwidth.abs_diff(b)),
        VariantChoice::ClosestHeight(h) => candidates.iter().min_by_key(|v| {
            // Unknown resolution sorts last; ties go to the higher bandwidth.
            (
                height(v)
                    .map(|vh| vh.abs_diff(h as u64))
                    .unwrap_or(u64::MAX),
                u64::MAX - v.bandwidth,
            )
        }),
    };
    let v = pick.ok_or_else(|| PlaylistError::NoVariant {
        url: super::redact_url(base.as_str()),
    })?;
    base.join(&v.uri).map_err(|e| PlaylistError::Malformed {
        url: super::redact_url(base.as_str()),
        why: format!("variant URI `{}`: {e}", v.uri),
    })
}

/// The Low-Latency HLS side of a media playlist (RFC 8216bis §4.4.3.7, §4.4.4.9,
/// §4.4.3.8). Read from the text: m3u8-rs keeps `EXT-X-PART` only as unknown tags and drops
/// those after the last segment, which are the ones that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatency {
    /// EXT-X-PART-INF PART-TARGET, seconds.
    pub part_target: f64,
    /// EXT-X-SERVER-CONTROL CAN-BLOCK-RELOAD=YES: `_HLS_msn`/`_HLS_part` reloads block.
    pub can_block_reload: bool,
    /// Every part listed, in order.
    pub parts: Vec<PartRef>,
}

/// One `EXT-X-PART`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRef {
    /// Media sequence number of its parent segment.
    pub msn: u64,
    /// Its index within the parent segment.
    pub index: usize,
    pub url: Url,
    /// (offset, length) from BYTERANGE.
    pub range: Option<(u64, u64)>,
    pub duration: f64,
    pub independent: bool,
    /// An EXT-X-DISCONTINUITY comes before its parent segment.
    pub discontinuity: bool,
}

impl LowLatency {
    /// The parts of segment `msn` from index `from` on, while they follow each other.
    pub fn parts_of(&self, msn: u64, from: usize) -> impl Iterator<Item = &PartRef> {
        self.parts
            .iter()
            .filter(move |p| p.msn == msn && p.index >= from)
            .enumerate()
            .take_while(move |(i, p)| p.index == from + i)
            .map(|(_, p)| p)
    }
}

/// The LL-HLS facts of a media playlist, or `None` when it lists no parts (no
/// EXT-X-PART-INF). A part line that cannot be read is an error naming it.
pub fn low_latency(url: &Url, body: &[u8]) -> Result<Option<LowLatency>, PlaylistError> {
    use crate::manifest::attr;
    let text = String::from_utf8_lossy(body);
    let bad = |why: String| malformed(url, why);
    let mut ll: Option<LowLatency> = None;
    let mut can_block = false;
    let mut at = PartCursor::default();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(list) = line.strip_prefix("#EXT-X-PART-INF:") {
            ll = Some(LowLatency {
                part_target: part_target(url, list)?,
                can_block_reload: false,
                parts: Vec::new(),
            });
        } else if let Some(list) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            let attrs = attr::parse(list).map_err(|e| bad(format!("EXT-X-SERVER-CONTROL: {e}")))?;
            can_block = attr::get(&attrs, "CAN-BLOCK-RELOAD").is_some_and(|a| a.value() == "YES");
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            at.msn = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("EXT-X-MEDIA-SEQUENCE `{v}`")))?;
        } else if line == "#EXT-X-DISCONTINUITY" {
            at.discontinuity = true;
        } else if let Some(list) = line.strip_prefix("#EXT-X-PART:") {
            parts.push(at.read_part(url, line, list)?);
        } else if !line.is_empty() && !line.starts_with('#') {
            // A segment URI: the parts before it were its parts.
            at.msn = at
                .msn
                .checked_add(1)
                .ok_or_else(|| bad(format!("media sequence overflows 64 bits at `{line}`")))?;
            at.index = 0;
            at.discontinuity = false;
        }
    }
    Ok(ll.map(|mut ll| {
        ll.can_block_reload = can_block;
        ll.parts = parts;
        ll
    }))
}

/// A malformed playlist at `url`, and why.
fn malformed(url: &Url, why: String) -> PlaylistError {
    PlaylistError::Malformed {
        url: super::redact_url(url.as_str()),
        why,
    }
}

/// The PART-TARGET of an EXT-X-PART-INF attribute list, which must be positive.
fn part_target(url: &Url, list: &str) -> Result<f64, PlaylistError> {
    use crate::manifest::attr;
    let attrs = attr::parse(list).map_err(|e| malformed(url, format!("EXT-X-PART-INF: {e}")))?;
    attr::get(&attrs, "PART-TARGET")
        .and_then(|a| a.value().parse::<f64>().ok())
        .filter(|t| *t > 0.0 && t.is_finite())
        .ok_or_else(|| malformed(url, "EXT-X-PART-INF without a positive PART-TARGET".into()))
}

/// Where the next EXT-X-PART of a playlist sits, read line by line.
#[derive(Debug, Default)]
struct PartCursor {
    /// Media sequence number of the segment the next part belongs to.
    msn: u64,
    /// The next part's index within that segment.
    index: usize,
    /// An EXT-X-DISCONTINUITY came before that segment.
    discontinuity: bool,
    /// The resource of the previous part with a byte range, and where that range ended.
    next_offset: Option<(String, u64)>,
}

impl PartCursor {
    /// Read the EXT-X-PART `line` (its attribute `list`) as the next part.
    fn read_part(&mut self, url: &Url, line: &str, list: &str) -> Result<PartRef, PlaylistError> {
        use crate::manifest::attr;
        let bad = |why: String| malformed(url, why);
        let attrs = attr::parse(list).map_err(|e| bad(format!("EXT-X-PART: {e}")))?;
        let uri = attr::get(&attrs, "URI")
            .ok_or_else(|| bad(format!("EXT-X-PART without URI: {line}")))?
            .value();
        let part_url = url
            .join(uri)
            .map_err(|e| bad(format!("part URI `{uri}`: {e}")))?;
        let duration = attr::get(&attrs, "DURATION")
            .and_then(|a| a.value().parse::<f64>().ok())
            .filter(|d| *d >= 0.0 && d.is_finite())
            .ok_or_else(|| bad(format!("EXT-X-PART without a DURATION: {line}")))?;
        let range = match attr::get(&attrs, "BYTERANGE") {
            None => None,
            Some(a) => Some(self.byte_range(url, uri, a.value())?),
        };
        let part = PartRef {
            msn: self.msn,
            index: self.index,
            url: part_url,
            range,
            duration,
            independent: attr::get(&attrs, "INDEPENDENT").is_some_and(|a| a.value() == "YES"),
            discontinuity: self.discontinuity,
        };
        self.index += 1;
        Ok(part)
    }

    /// A part's BYTERANGE `value` (`length[@offset]`) of resource `uri` as (offset,
    /// length); without an offset it follows the previous part of the same resource.
    fn byte_range(
        &mut self,
        url: &Url,
        uri: &str,
        value: &str,
    ) -> Result<(u64, u64), PlaylistError> {
        let bad = |why: String| malformed(url, why);
        let (len, off) = value
            .split_once('@')
            .map_or((value, None), |(l, o)| (l, Some(o)));
        let len: u64 = len
            .parse()
            .map_err(|_| bad(format!("part BYTERANGE `{value}`")))?;
        let off: u64 = match off {
            Some(o) => o
                .parse()
                .map_err(|_| bad(format!("part BYTERANGE `{value}`")))?,
            None => match &self.next_offset {
                Some((u, o)) if u == uri => *o,
                _ => {
                    return Err(bad(format!(
                        "part BYTERANGE `{value}` without an offset follows no part of the same resource"
                    )));
                }
            },
        };
        let end = off.checked_add(len).filter(|_| len > 0).ok_or_else(|| {
            bad(format!(
                "part BYTERANGE `{value}` ends beyond 2^64 bytes or is empty"
            ))
        })?;
        self.next_offset = Some((uri.to_string(), end));
        Ok((off, len))
    }
}

/// A segment to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentJob {
    pub msn: u64,
    pub url: Url,
    /// Byte range within `url` (offset, length), from EXT-X-BYTERANGE.
    pub range: Option<(u64, u64)>,
    /// EXT-X-MAP init section (fMP4), with its byte range.
    pub init: Option<(Url, Option<(u64, u64)>)>,
    pub duration: f64,
    /// When the segment's first frame is (was) live.
    pub wallclock: DateTime<Utc>,
    /// Whether the wall clock came from the origin's EXT-X-PROGRAM-DATE-TIME.
    pub origin_pdt: bool,
    pub discontinuity: bool,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    pub jobs: Vec<SegmentJob>,
    /// The playlist differs from the previous load.
    pub changed: bool,
    /// Segments that left the window before they could be fetched (or an origin jump).
    pub skipped: u64,
    /// The media sequence went backwards with other content: the origin restarted.
    pub reset: bool,
    /// This load is older than one seen before (a lagging origin server): ignored.
    pub stale: bool,
    /// EXT-X-ENDLIST: no more segments will come.
    pub ended: bool,
    /// Wall clock at the end of the newest segment (the live edge).
    pub live_edge: Option<DateTime<Utc>>,
    /// Seconds of a segment's worth the playlist stays unchanged before it counts as stalled.
    pub target_duration: f64,
}

/// Follows one live media playlist across reloads.
#[derive(Debug)]
pub struct PlaylistTracker {
    /// How many segments back from the live edge to start.
    start_segments: usize,
    next_msn: Option<u64>,
    /// Recently seen segments (msn, uri, wallclock) to tell a lagging origin from a reset.
    seen: VecDeque<(u64, String, DateTime<Utc>)>,
    /// The last wall clock we assigned or read: (msn, wallclock, duration) for continuity.
    last_anchor: Option<(u64, DateTime<Utc>, f64)>,
    last_signature: Option<(u64, usize, String)>,
    highest_msn_seen: Option<u64>,
    /// Loads in a row that looked older than what was seen.
    stale_loads: u32,
}

/// After this many loads in a row that look older than what was seen, the playlist is
/// taken as it is (a reset) instead of ignored.
pub const MAX_STALE_LOADS: u32 = 4;

const SEEN_MEMORY: usize = 256;

fn secs(d: f64) -> ChronoDuration {
    ChronoDuration::nanoseconds((d * 1e9).round() as i64)
}

/// A BYTERANGE as (offset, length); `Err` with the range when it would end beyond
/// `u64::MAX` (the offset of the next one could not be computed).
fn range_of(
    b: &Option<m3u8_rs::ByteRange>,
    next_offset: &mut Option<u64>,
) -> Result<Option<(u64, u64)>, String> {
    let Some(r) = b else { return Ok(None) };
    let off = r.offset.or(*next_offset).unwrap_or(0);
    let end = off
        .checked_add(r.length)
        .ok_or_else(|| format!("{}@{off}", r.length))?;
    *next_offset = Some(end);
    Ok(Some((off, r.length)))
}

fn bad_range(url: &Url) -> impl Fn(String) -> PlaylistError + '_ {
    move |value| PlaylistError::BadValue {
        url: super::redact_url(url.as_str()),
        line: 0,
        value,
        why: "BYTERANGE ends beyond 2^64 bytes".into(),
    }
}

/// A segment's EXT-X-PROGRAM-DATE-TIME may not lie more than [`MAX_PDT_AHEAD_HOURS`]
/// ahead of `now` (the past is fine: a recording keeps its clock).
fn check_pdt(
    url: &Url,
    s: &m3u8_rs::MediaSegment,
    now: DateTime<Utc>,
) -> Result<(), PlaylistError> {
    let Some(pdt) = s.program_date_time else {
        return Ok(());
    };
    let limit = now.checked_add_signed(ChronoDuration::hours(MAX_PDT_AHEAD_HOURS));
    if limit.is_some_and(|l| pdt.with_timezone(&Utc) <= l) {
        return Ok(());
    }
    Err(PlaylistError::BadValue {
        url: super::redact_url(url.as_str()),
        line: 0,
        value: pdt.to_rfc3339(),
        why: format!(
            "EXT-X-PROGRAM-DATE-TIME of `{}` is more than {MAX_PDT_AHEAD_HOURS} h ahead",
            s.uri
        ),
    })
}

/// A segment of a loaded playlist, its URIs resolved.
struct ResolvedSegment {
    url: Url,
    range: Option<(u64, u64)>,
    /// The EXT-X-MAP in force: its URL and byte range.
    init: Option<(Url, Option<(u64, u64)>)>,
    duration: f64,
    discontinuity: bool,
    /// The origin's EXT-X-PROGRAM-DATE-TIME.
    pdt: Option<DateTime<Utc>>,
}

/// Where a load stands against what was already fetched (see [`PlaylistTracker::order_of`]).
enum LoadOrder {
    InOrder,
    /// An older copy from a lagging server: ignored.
    Stale,
    /// The origin restarted or jumped: following starts over.
    Reset,
}

/// The playlist's first media sequence number and segment count, refused when the last
/// number would overflow 64 bits.
fn sequence_span(url: &Url, pl: &MediaPlaylist) -> Result<(u64, u64), PlaylistError> {
    let n = pl.segments.len() as u64;
    let first = pl.media_sequence;
    if first.checked_add(n).is_none() {
        return Err(PlaylistError::BadValue {
            url: super::redact_url(url.as_str()),
            line: 0,
            value: first.to_string(),
            why: format!("EXT-X-MEDIA-SEQUENCE with {n} segments overflows 64 bits"),
        });
    }
    Ok((first, n))
}

/// Resolve each segment's URI, byte range, map and the origin's own clock.
fn resolve_segments(
    url: &Url,
    pl: &MediaPlaylist,
    now: DateTime<Utc>,
) -> Result<Vec<ResolvedSegment>, PlaylistError> {
    let mut resolved = Vec::with_capacity(pl.segments.len());
    let mut next_offset = None;
    let mut map: Option<(Url, Option<(u64, u64)>)> = None;
    let mut prev_uri = String::new();
    for s in &pl.segments {
        if s.uri != prev_uri {
            next_offset = None;
        }
        prev_uri = s.uri.clone();
        let seg_url = url.join(&s.uri).map_err(|e| PlaylistError::Malformed {
            url: super::redact_url(url.as_str()),
            why: format!("segment URI `{}`: {e}", s.uri),
        })?;
        if let Some(m) = &s.map {
            let mu = url.join(&m.uri).map_err(|e| PlaylistError::Malformed {
                url: super::redact_url(url.as_str()),
                why: format!("EXT-X-MAP URI `{}`: {e}", m.uri),
            })?;
            let mut o = None;
            map = Some((mu, range_of(&m.byte_range, &mut o).map_err(bad_range(url))?));
        }
        let range = range_of(&s.byte_range, &mut next_offset).map_err(bad_range(url))?;
        check_pdt(url, s, now)?;
        resolved.push(ResolvedSegment {
            url: seg_url,
            range,
            init: map.clone(),
            duration: s.duration as f64,
            discontinuity: s.discontinuity,
            pdt: s.program_date_time.map(|t| t.with_timezone(&Utc)),
        });
    }
    Ok(resolved)
}

/// Wall clocks from the origin's PDT, carried forward (and backward) through durations;
/// all `None` when no segment has one.
fn origin_clocks(resolved: &[ResolvedSegment]) -> Vec<Option<DateTime<Utc>>> {
    let mut clocks: Vec<Option<DateTime<Utc>>> = resolved.iter().map(|r| r.pdt).collect();
    for i in 1..clocks.len() {
        if clocks[i].is_none() {
            clocks[i] = clocks[i - 1].map(|t| t + secs(resolved[i - 1].duration));
        }
    }
    for i in (0..clocks.len().saturating_sub(1)).rev() {
        if clocks[i].is_none() {
            clocks[i] = clocks[i + 1].map(|t| t - secs(resolved[i].duration));
        }
    }
    clocks
}

/// The jobs for the segments from `next` on (`first` is the first one's number).
fn jobs_from(
    resolved: Vec<ResolvedSegment>,
    first: u64,
    next: u64,
    clocks: &[DateTime<Utc>],
    origin_pdt: bool,
) -> Vec<SegmentJob> {
    resolved
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let msn = first + i as u64;
            (msn >= next).then(|| SegmentJob {
                msn,
                url: r.url,
                range: r.range,
                init: r.init,
                duration: r.duration,
                wallclock: clocks[i],
                origin_pdt,
                discontinuity: r.discontinuity,
            })
        })
        .collect()
}

impl PlaylistTracker {
    pub fn new(start_segments: usize) -> Self {
        Self {
            start_segments: start_segments.max(1),
            next_msn: None,
            seen: VecDeque::new(),
            last_anchor: None,
            last_signature: None,
            highest_msn_seen: None,
            stale_loads: 0,
        }
    }

    /// The next media sequence number to fetch, once known.
    pub fn next_msn(&self) -> Option<u64> {
        self.next_msn
    }

    /// Fold in a freshly loaded playlist (from `url`, loaded at `now`).
    pub fn update(
        &mut self,
        url: &Url,
        pl: &MediaPlaylist,
        now: DateTime<Utc>,
    ) -> Result<Update, PlaylistError> {
        let mut up = Update {
            ended: pl.end_list,
            target_duration: pl.target_duration as f64,
            ..Default::default()
        };
        // Durations as `parse` checks them (a playlist may come from elsewhere): every
        // clock below stays far inside what chrono holds.
        check_media(url, pl)?;
        let (first, n) = sequence_span(url, pl)?;
        let signature = (
            first,
            pl.segments.len(),
            pl.segments
                .last()
                .map(|s| s.uri.clone())
                .unwrap_or_default(),
        );
        up.changed = self.last_signature.as_ref() != Some(&signature);
        if n == 0 {
            self.last_signature = Some(signature);
            return Ok(up);
        }
        let last = first + n - 1;
        let resolved = resolve_segments(url, pl, now)?;
        let origin_clocks = origin_clocks(&resolved);
        let origin_pdt = origin_clocks[0].is_some();
        let clock_moved = origin_pdt && self.pdt_moved(first, &origin_clocks);
        match self.order_of(first, last, clock_moved, pl) {
            LoadOrder::InOrder => {}
            LoadOrder::Stale => {
                up.stale = true;
                up.changed = false;
                return Ok(up);
            }
            LoadOrder::Reset => up.reset = true,
        }
        let clocks: Vec<DateTime<Utc>> = if origin_pdt {
            origin_clocks
                .into_iter()
                .map(|c| c.unwrap_or(now))
                .collect()
        } else {
            self.assigned_clocks(first, last, &resolved, now)
        };
        up.live_edge = Some(clocks[clocks.len() - 1] + secs(resolved[resolved.len() - 1].duration));
        let next = self.first_to_fetch(pl, first, last, &mut up.skipped);
        up.jobs = jobs_from(resolved, first, next, &clocks, origin_pdt);
        if up.reset
            && let Some(j) = up.jobs.first_mut()
        {
            // The timeline starts over here, whatever the playlist marks.
            j.discontinuity = true;
        }
        self.remember(pl, first, &clocks);
        self.last_anchor = Some((
            last,
            clocks[clocks.len() - 1],
            pl.segments[pl.segments.len() - 1].duration as f64,
        ));
        self.next_msn = Some(next.max(last + 1));
        self.highest_msn_seen = Some(self.highest_msn_seen.map_or(last, |h| h.max(last)));
        self.stale_loads = 0;
        self.last_signature = Some(signature);
        Ok(up)
    }

    /// Whether this load (`first..=last`) comes after what was already fetched. When it
    /// ends before it (or the origin's clock for a known segment moved), it is a lagging
    /// server's older copy now and then; older copies only, load after load, mean what we
    /// expect next is wrong (an origin that jumped ahead once and came back), and we
    /// follow the origin as it is: a reset, which forgets what was seen.
    fn order_of(
        &mut self,
        first: u64,
        last: u64,
        clock_moved: bool,
        pl: &MediaPlaylist,
    ) -> LoadOrder {
        let Some(next) = self.next_msn else {
            return LoadOrder::InOrder;
        };
        if last + 1 >= next && !clock_moved {
            return LoadOrder::InOrder;
        }
        if !clock_moved
            && self.stale_loads + 1 < MAX_STALE_LOADS
            && self.consistent_with_seen(first, pl)
        {
            self.stale_loads += 1;
            return LoadOrder::Stale;
        }
        self.next_msn = None;
        self.seen.clear();
        self.last_anchor = None;
        LoadOrder::Reset
    }

    /// Wall clocks for a playlist without PDT: continue our own timeline when the segments
    /// connect to it, otherwise anchor the live edge at `now`.
    fn assigned_clocks(
        &self,
        first: u64,
        last: u64,
        resolved: &[ResolvedSegment],
        now: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let anchored = self.last_anchor.and_then(|(amsn, at, adur)| {
            if amsn + 1 >= first && amsn <= last {
                // Walk from the anchor to `first`.
                let mut t = at;
                if amsn + 1 == first {
                    t += secs(adur);
                } else {
                    // amsn inside the window: go back to `first`.
                    for i in (0..(amsn - first) as usize).rev() {
                        t -= secs(resolved[i].duration);
                    }
                }
                Some(t)
            } else {
                None
            }
        });
        let start = anchored.unwrap_or_else(|| {
            let total: f64 = resolved.iter().map(|r| r.duration).sum();
            now - secs(total)
        });
        let mut t = start;
        resolved
            .iter()
            .map(|r| {
                let at = t;
                t += secs(r.duration);
                at
            })
            .collect()
    }

    /// The first sequence number of `first..=last` to fetch: where following starts (the
    /// live edge less the start offset, or the beginning of a VOD), else the next one;
    /// what left the window unfetched is counted in `skipped`.
    fn first_to_fetch(&self, pl: &MediaPlaylist, first: u64, last: u64, skipped: &mut u64) -> u64 {
        match self.next_msn {
            None => {
                if pl.end_list || matches!(pl.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod))
                {
                    first
                } else {
                    (last + 1)
                        .saturating_sub(self.start_segments as u64)
                        .max(first)
                }
            }
            Some(next) if next < first => {
                *skipped = first - next;
                first
            }
            Some(next) => next,
        }
    }

    /// Remember the segments of this load newer than those seen (sequence number, URI and
    /// clock), to tell a lagging origin from a reset later.
    fn remember(&mut self, pl: &MediaPlaylist, first: u64, clocks: &[DateTime<Utc>]) {
        for (i, s) in pl.segments.iter().enumerate() {
            let msn = first + i as u64;
            if self.seen.back().is_none_or(|b| b.0 < msn) {
                self.seen.push_back((msn, s.uri.clone(), clocks[i]));
                if self.seen.len() > SEEN_MEMORY {
                    self.seen.pop_front();
                }
            }
        }
    }

    /// Same URIs for the sequence numbers both loads know: the same stream, just older.
    fn consistent_with_seen(&self, first: u64, pl: &MediaPlaylist) -> bool {
        let mut overlap = 0;
        for (i, s) in pl.segments.iter().enumerate() {
            let msn = first + i as u64;
            if let Some((_, uri, _)) = self.seen.iter().find(|(m, _, _)| *m == msn) {
                if *uri != s.uri {
                    return false;
                }
                overlap += 1;
            }
        }
        overlap > 0
    }

    /// The origin's clock for a known sequence number moved by more than a second.
    fn pdt_moved(&self, first: u64, clocks: &[Option<DateTime<Utc>>]) -> bool {
        clocks.iter().enumerate().any(|(i, c)| {
            let msn = first + i as u64;
            match (c, self.seen.iter().find(|(m, _, _)| *m == msn)) {
                (Some(c), Some((_, _, t))) => (*c - *t).num_milliseconds().abs() > 1000,
                _ => false,
            }
        })
    }
}

/// When an origin publishes segments, learnt from the loads themselves, so reloads can be
/// timed to land just after the next segment appears instead of at a random phase (RFC
/// 8216 only sets a minimum wait, which the caller never shortens).
///
/// The lag is the time from a segment's end (its PDT + duration: the live edge) to its
/// publication. A load that finds a new segment bounds it from above (`hi`); a load that
/// expected one and did not find it bounds it from below (`lo`). With no lower bound yet,
/// reloads probe [`PublishLag::PROBE_STEP_MS`] earlier than `hi`; inside a wide bracket
/// they aim at its middle (each miss costs the half target duration the RFC then
/// demands); once it is narrow, just after `hi`. Evidence against a bound (a segment found
/// earlier than `lo`, or missing later than `hi`) drops that bound, so a changing lag is
/// followed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishLag {
    lo_ms: Option<i64>,
    hi_ms: Option<i64>,
}

impl PublishLag {
    /// How much earlier than the upper bound to probe while no lower bound is known.
    pub const PROBE_STEP_MS: i64 = 300;
    /// Below this bracket width, aim just after the upper bound.
    pub const NARROW_MS: i64 = 120;
    /// Aim this far after the upper bound.
    pub const AFTER_MS: i64 = 15;

    /// A load completed at `at` showed, for the first time, the segment ending at `edge`.
    pub fn seen(&mut self, edge: DateTime<Utc>, at: DateTime<Utc>) {
        let lag = (at - edge).num_milliseconds();
        self.hi_ms = Some(self.hi_ms.map_or(lag, |h| h.min(lag)));
        if self.lo_ms.is_some_and(|lo| lo >= lag) {
            // The lag shrank below what we believed: start the bracket again.
            self.lo_ms = None;
        }
    }

    /// A load started at `at` did not show the segment expected to end at `expected_edge`.
    pub fn not_yet(&mut self, expected_edge: DateTime<Utc>, at: DateTime<Utc>) {
        let lag = (at - expected_edge).num_milliseconds();
        self.lo_ms = Some(self.lo_ms.map_or(lag, |l| l.max(lag)));
        if self.hi_ms.is_some_and(|hi| hi <= lag) {
            // The lag grew beyond what we believed.
            self.hi_ms = None;
        }
    }

    /// The wall clock to reload at for the segment after the one ending at `edge`
    /// (`segment` long), or `None` while nothing is known yet.
    pub fn next_reload(
        &self,
        edge: DateTime<Utc>,
        segment: ChronoDuration,
    ) -> Option<DateTime<Utc>> {
        let hi = self.hi_ms?;
        let aim = match self.lo_ms {
            None => hi - Self::PROBE_STEP_MS,
            Some(lo) if hi - lo > Self::NARROW_MS => (lo + hi) / 2,
            Some(_) => hi + Self::AFTER_MS,
        };
        Some(edge + segment + ChronoDuration::milliseconds(aim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn url() -> Url {
        Url::parse("http://127.0.0.1:1/live/index.m3u8").unwrap()
    }

    /// A live playlist of `n` 2-second segments from `first`, with or without PDT.
    fn live(first: u64, n: u64, pdt: Option<&str>) -> String {
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for msn in first..first + n {
            if let Some(base) = pdt {
                let at = t(base) + secs(2.0 * msn as f64);
                s += &format!(
                    "#EXT-X-PROGRAM-DATE-TIME:{}\n",
                    crate::frame::rfc3339_ms(&at)
                );
            }
            s += &format!("#EXTINF:2.000,\nseg{msn}.ts\n");
        }
        s
    }

    fn media(text: &str) -> MediaPlaylist {
        match parse(&url(), text.as_bytes()).unwrap() {
            Playlist::MediaPlaylist(m) => m,
            _ => panic!("not media"),
        }
    }

    fn msns(up: &Update) -> Vec<u64> {
        up.jobs.iter().map(|j| j.msn).collect()
    }

    const T0: &str = "2026-11-21T10:00:00Z";

    #[test]
    fn publish_lag_probes_brackets_then_aims_just_after() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ms = ChronoDuration::milliseconds;
        let seg = ChronoDuration::seconds(2);
        let edge = |n: i32| t0 + seg * n;
        let aim_of = |lag: &PublishLag, n: i32| {
            (lag.next_reload(edge(n), seg).unwrap() - edge(n + 1)).num_milliseconds()
        };
        let mut lag = PublishLag::default();
        assert_eq!(lag.next_reload(t0, seg), None, "nothing known: RFC timing");
        // Found 1.3 s after the edge: lag <= 1300; no lower bound: probe 300 ms earlier.
        lag.seen(edge(0), edge(0) + ms(1300));
        assert_eq!(aim_of(&lag, 0), 1000);
        lag.seen(edge(1), edge(1) + ms(1010));
        assert_eq!(aim_of(&lag, 1), 710);
        // A miss at 710 ms: the lag is in (710, 1010]; aim in the middle.
        lag.not_yet(edge(2), edge(2) + ms(710));
        assert_eq!(aim_of(&lag, 2), 860);
        // Found at 870: (710, 870] is still wider than NARROW_MS? 160 > 120: middle again.
        lag.seen(edge(3), edge(3) + ms(870));
        assert_eq!(aim_of(&lag, 3), 790);
        // A miss at 790: (790, 870]: narrow, aim just after the upper bound.
        lag.not_yet(edge(4), edge(4) + ms(790));
        assert_eq!(aim_of(&lag, 4), 885);
        // Stays there while segments keep coming just before it.
        lag.seen(edge(5), edge(5) + ms(890));
        assert_eq!(aim_of(&lag, 5), 885);
        // The origin gets much faster: the lower bound is dropped, probing resumes.
        lag.seen(edge(6), edge(6) + ms(50));
        assert_eq!(aim_of(&lag, 6), -250);
        // ... or much slower: the upper bound is dropped, RFC timing until found again.
        lag.not_yet(edge(7), edge(7) + ms(1500));
        assert_eq!(lag.next_reload(edge(7), seg), None);
    }

    #[test]
    fn low_latency_parts_are_read_with_their_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.52\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\nseg7.ts\n#EXT-X-PART:DURATION=0.52,URI=\"seg8.0.ts\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.48,URI=\"seg8.1.ts\"\n#EXTINF:1.0,\nseg8.ts\n#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.5,URI=\"all9.ts\",BYTERANGE=\"1000@0\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"all9.ts\",BYTERANGE=\"500\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"all9.ts\",BYTERANGE-START=1500\n";
        let ll = low_latency(&url(), text.as_bytes()).unwrap().unwrap();
        assert!(ll.can_block_reload);
        assert_eq!(ll.part_target, 0.52);
        let got: Vec<_> = ll
            .parts
            .iter()
            .map(|p| {
                (
                    p.msn,
                    p.index,
                    p.url.path().to_string(),
                    p.range,
                    p.independent,
                    p.discontinuity,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (8, 0, "/live/seg8.0.ts".into(), None, true, false),
                (8, 1, "/live/seg8.1.ts".into(), None, false, false),
                (9, 0, "/live/all9.ts".into(), Some((0, 1000)), true, true),
                (9, 1, "/live/all9.ts".into(), Some((1000, 500)), false, true),
            ]
        );
        assert_eq!(ll.parts[1].duration, 0.48);
        assert_eq!(
            ll.parts_of(8, 1).map(|p| p.index).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(ll.parts_of(9, 0).count(), 2);
        assert_eq!(ll.parts_of(10, 0).count(), 0);
        // A plain playlist has none of it; broken part lines are named.
        assert_eq!(
            low_latency(&url(), live(0, 3, None).as_bytes()).unwrap(),
            None
        );
        for bad in [
            "#EXT-X-PART-INF:PART-TARGET=0\n",
            "#EXT-X-PART-INF:PART-TARGET=1\n#EXT-X-PART:DURATION=1\n",
            "#EXT-X-PART-INF:PART-TARGET=1\n#EXT-X-PART:URI=\"a.ts\"\n",
            "#EXT-X-PART-INF:PART-TARGET=1\n#EXT-X-PART:DURATION=1,URI=\"a.ts\",BYTERANGE=\"10\"\n",
        ] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n{bad}");
            let e = low_latency(&url(), text.as_bytes()).unwrap_err();
            assert!(matches!(e, PlaylistError::Malformed { .. }), "{bad}: {e}");
        }
    }

    /// The line, value and message of a refused playlist.
    fn refused(text: &str) -> (usize, String, String) {
        match parse(&url(), text.as_bytes()).unwrap_err() {
            PlaylistError::BadValue {
                url: u,
                line,
                value,
                why,
            } => {
                assert_eq!(u, url().to_string());
                (line, value, why)
            }
            other => panic!("{text}: not a bad value: {other}"),
        }
    }

    #[test]
    fn absurd_durations_are_refused_naming_line_and_value() {
        let head = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n";
        for extinf in ["1e308", "1e30", "-2.0", "NaN", "inf", "3600.5", "two"] {
            let text = format!("{head}#EXTINF:2,\na.ts\n#EXTINF:{extinf},\nb.ts\n");
            let (line, value, why) = refused(&text);
            assert_eq!(line, 6, "{extinf}");
            assert_eq!(value, format!("#EXTINF:{extinf},"));
            assert!(why.contains("EXTINF"), "{why}");
        }
        for target in ["18446744073709551615", "3601", "-1", "2.5"] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:{target}\n#EXTINF:2,\na.ts\n");
            let (line, value, _) = refused(&text);
            assert_eq!(
                (line, value),
                (2, format!("#EXT-X-TARGETDURATION:{target}"))
            );
        }
        // An hour is still a duration.
        let text = format!("{head}#EXTINF:3600,\na.ts\n");
        assert!(parse(&url(), text.as_bytes()).is_ok());
    }

    #[test]
    fn sequence_numbers_and_byteranges_that_overflow_are_refused() {
        let max = u64::MAX;
        // u64::MAX with one segment: the next number does not exist.
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{max}\n#EXTINF:2,\na.ts\n"
        );
        let (line, value, why) = refused(&text);
        assert_eq!((line, value.as_str()), (3, "18446744073709551615"), "{why}");
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:18446744073709551616\n";
        assert_eq!(refused(text).0, 3);
        // The last number that still has room is fine.
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXTINF:2,\na.ts\n",
            max - 1
        );
        let mut tr = PlaylistTracker::new(1);
        let up = tr.update(&url(), &media(&text), t(T0)).unwrap();
        assert_eq!(msns(&up), vec![max - 1]);
        for range in [
            "18446744073709551615@2",
            "2@18446744073709551615",
            "0@5",
            "x@1",
        ] {
            let text = format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-BYTERANGE:{range}\n#EXTINF:2,\na.ts\n"
            );
            let (line, value, _) = refused(&text);
            assert_eq!((line, value), (3, format!("#EXT-X-BYTERANGE:{range}")));
        }
        // A range without offset continues the previous one: past u64::MAX too.
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-BYTERANGE:10@{}\n#EXTINF:2,\na.ts\n#EXT-X-BYTERANGE:20\n#EXTINF:2,\na.ts\n",
            max - 15
        );
        assert_eq!(refused(&text).0, 6);
    }

    #[test]
    fn tracker_refuses_what_parse_lets_through() {
        // Built by hand (not through `parse`): the tracker checks on its own.
        let mut pl = media(&live(0, 2, None));
        pl.media_sequence = u64::MAX;
        let e = PlaylistTracker::new(1)
            .update(&url(), &pl, t(T0))
            .unwrap_err();
        assert!(matches!(e, PlaylistError::BadValue { .. }), "{e}");
        let mut pl = media(&live(0, 2, None));
        pl.segments[1].byte_range = Some(m3u8_rs::ByteRange {
            length: u64::MAX,
            offset: Some(2),
        });
        let e = PlaylistTracker::new(1)
            .update(&url(), &pl, t(T0))
            .unwrap_err();
        assert!(e.to_string().contains("18446744073709551615@2"), "{e}");
        let mut pl = media(&live(0, 2, None));
        pl.segments[0].duration = f32::INFINITY;
        assert!(PlaylistTracker::new(1).update(&url(), &pl, t(T0)).is_err());
        // A program date time in year 9999 (or a day ahead) is a broken origin clock.
        let text = live(0, 3, Some("9999-12-31T23:59:00Z"));
        let e = PlaylistTracker::new(1)
            .update(&url(), &media(&text), t(T0))
            .unwrap_err();
        assert!(e.to_string().contains("9999-12-31"), "{e}");
        let ahead = t(T0) + ChronoDuration::hours(MAX_PDT_AHEAD_HOURS + 1);
        let text = live(0, 3, Some(&crate::frame::rfc3339_ms(&ahead)));
        assert!(
            PlaylistTracker::new(1)
                .update(&url(), &media(&text), t(T0))
                .is_err()
        );
        // After refusals, a sound playlist is followed as usual.
        let mut tr = PlaylistTracker::new(1);
        assert!(tr.update(&url(), &media(&text), t(T0)).is_err());
        let up = tr
            .update(&url(), &media(&live(10, 3, Some(T0))), t(T0))
            .unwrap();
        assert_eq!(msns(&up), vec![12]);
    }

    #[test]
    fn low_latency_numbers_that_overflow_are_refused() {
        let max = u64::MAX;
        let head = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n";
        let text = format!(
            "{head}#EXT-X-MEDIA-SEQUENCE:{max}\n#EXTINF:2,\na.ts\n#EXT-X-PART:DURATION=0.5,URI=\"p.ts\"\n"
        );
        assert!(low_latency(&url(), text.as_bytes()).is_err());
        let text = format!("{head}#EXT-X-PART:DURATION=0.5,URI=\"p.ts\",BYTERANGE=\"{max}@2\"\n");
        let e = low_latency(&url(), text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("BYTERANGE"), "{e}");
    }

    #[test]
    fn not_hls_and_malformed_are_named() {
        assert_eq!(
            parse(&url(), b"<html>").unwrap_err(),
            PlaylistError::NotHls {
                url: url().to_string()
            }
        );
        let e = parse(&url(), b"#EXTM3U\n#EXTINF:abc,\nseg.ts\n").unwrap_err();
        assert!(
            matches!(e, PlaylistError::BadValue { line: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn starts_at_live_edge_and_fetches_each_segment_once_in_order() {
        let mut tr = PlaylistTracker::new(1);
        let now = t(T0);
        let up = tr
            .update(&url(), &media(&live(10, 5, Some(T0))), now)
            .unwrap();
        assert_eq!(msns(&up), vec![14]);
        assert!(up.changed);
        // Unchanged reload: nothing new.
        let up = tr
            .update(&url(), &media(&live(10, 5, Some(T0))), now)
            .unwrap();
        assert!(!up.changed);
        assert!(up.jobs.is_empty());
        // Two new segments.
        let up = tr
            .update(&url(), &media(&live(12, 5, Some(T0))), now)
            .unwrap();
        assert_eq!(msns(&up), vec![15, 16]);
        assert_eq!(up.jobs[0].wallclock, t(T0) + secs(30.0));
        assert!(up.jobs[0].origin_pdt);
        assert_eq!(up.jobs[0].url.as_str(), "http://127.0.0.1:1/live/seg15.ts");
    }

    #[test]
    fn start_offset_is_configurable() {
        let mut tr = PlaylistTracker::new(3);
        let up = tr
            .update(&url(), &media(&live(10, 5, None)), t(T0))
            .unwrap();
        assert_eq!(msns(&up), vec![12, 13, 14]);
    }

    #[test]
    fn falling_behind_skips_and_counts() {
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(10, 5, Some(T0))), t(T0))
            .unwrap();
        // We expect 15 next; the window moved to 20..24.
        let up = tr
            .update(&url(), &media(&live(20, 5, Some(T0))), t(T0))
            .unwrap();
        assert_eq!(up.skipped, 5);
        assert_eq!(msns(&up), vec![20, 21, 22, 23, 24]);
    }

    #[test]
    fn lagging_origin_server_is_ignored() {
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(10, 5, Some(T0))), t(T0))
            .unwrap();
        tr.update(&url(), &media(&live(12, 5, Some(T0))), t(T0))
            .unwrap();
        // A load balancer hands us an older copy.
        let up = tr
            .update(&url(), &media(&live(10, 5, Some(T0))), t(T0))
            .unwrap();
        assert!(up.stale);
        assert!(up.jobs.is_empty());
        let up = tr
            .update(&url(), &media(&live(13, 5, Some(T0))), t(T0))
            .unwrap();
        assert_eq!(msns(&up), vec![17]);
    }

    #[test]
    fn a_bogus_jump_is_left_once_the_origin_keeps_serving_the_truth() {
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(10, 5, Some(T0))), t(T0))
            .unwrap();
        // One hostile answer: the same segments numbered a million later.
        let jumped = live(10, 5, Some(T0))
            .replace("#EXT-X-MEDIA-SEQUENCE:10", "#EXT-X-MEDIA-SEQUENCE:1000010");
        let up = tr.update(&url(), &media(&jumped), t(T0)).unwrap();
        assert_eq!(up.skipped, 1_000_000 - 5);
        // The real playlist looks older than that: ignored a few times, then followed.
        for _ in 1..MAX_STALE_LOADS {
            let up = tr
                .update(&url(), &media(&live(11, 5, Some(T0))), t(T0))
                .unwrap();
            assert!(up.stale, "{up:?}");
        }
        let up = tr
            .update(&url(), &media(&live(11, 5, Some(T0))), t(T0))
            .unwrap();
        assert!(up.reset && !up.stale, "{up:?}");
        assert_eq!(msns(&up), vec![15]);
        let up = tr
            .update(&url(), &media(&live(12, 5, Some(T0))), t(T0))
            .unwrap();
        assert_eq!(msns(&up), vec![16]);
    }

    #[test]
    fn origin_restart_resets() {
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(100, 5, Some(T0))), t(T0))
            .unwrap();
        // Restarted: sequence numbers from 0 again and a later clock.
        let text = live(0, 3, Some("2026-11-21T11:00:00Z"));
        let up = tr.update(&url(), &media(&text), t(T0)).unwrap();
        assert!(up.reset);
        assert_eq!(msns(&up), vec![2]);
        assert!(up.jobs[0].discontinuity, "a reset starts a new timeline");
        // Same numbers but the clock moved (restart that kept counting low).
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(0, 3, Some(T0))), t(T0))
            .unwrap();
        let up = tr
            .update(
                &url(),
                &media(&live(0, 4, Some("2026-11-21T12:00:00Z"))),
                t(T0),
            )
            .unwrap();
        assert!(up.reset, "{up:?}");
        assert_eq!(msns(&up), vec![3]);
    }

    #[test]
    fn jump_ahead_skips() {
        let mut tr = PlaylistTracker::new(1);
        tr.update(&url(), &media(&live(10, 3, Some(T0))), t(T0))
            .unwrap();
        let up = tr
            .update(&url(), &media(&live(1000, 3, Some(T0))), t(T0))
            .unwrap();
        assert_eq!(up.skipped, 1000 - 13);
        assert_eq!(msns(&up), vec![1000, 1001, 1002]);
    }

    #[test]
    fn assigned_clock_is_consistent_without_pdt() {
        let mut tr = PlaylistTracker::new(2);
        let now = t(T0);
        let up = tr.update(&url(), &media(&live(10, 5, None)), now).unwrap();
        // The live edge (end of seg 14) is `now`.
        assert_eq!(up.live_edge, Some(now));
        assert_eq!(up.jobs[0].wallclock, now - secs(4.0));
        assert!(!up.jobs[0].origin_pdt);
        // Reloaded much later: the timeline continues from our anchor, not from `now`.
        let up = tr
            .update(&url(), &media(&live(12, 5, None)), now + secs(30.0))
            .unwrap();
        assert_eq!(msns(&up), vec![15, 16]);
        assert_eq!(up.jobs[0].wallclock, now);
        assert_eq!(up.jobs[1].wallclock, now + secs(2.0));
    }

    #[test]
    fn partial_pdt_is_carried_both_ways() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\na.ts\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:02Z\n#EXTINF:2,\nb.ts\n#EXTINF:1.5,\nc.ts\n#EXTINF:2,\nd.ts\n";
        let mut tr = PlaylistTracker::new(4);
        let up = tr.update(&url(), &media(text), t(T0)).unwrap();
        let w: Vec<_> = up.jobs.iter().map(|j| j.wallclock).collect();
        assert_eq!(
            w,
            vec![
                t(T0),
                t(T0) + secs(2.0),
                t(T0) + secs(4.0),
                t(T0) + secs(5.5)
            ]
        );
    }

    #[test]
    fn vod_starts_at_the_beginning_and_ends() {
        let text = format!("{}#EXT-X-ENDLIST\n", live(0, 4, None));
        let mut tr = PlaylistTracker::new(1);
        let up = tr.update(&url(), &media(&text), t(T0)).unwrap();
        assert!(up.ended);
        assert_eq!(msns(&up), vec![0, 1, 2, 3]);
    }

    #[test]
    fn fmp4_map_and_byteranges() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-BYTERANGE:100@0\n#EXTINF:2,\nall.m4s\n#EXT-X-BYTERANGE:50\n#EXTINF:2,\nall.m4s\n#EXT-X-ENDLIST\n";
        let mut tr = PlaylistTracker::new(1);
        let up = tr.update(&url(), &media(text), t(T0)).unwrap();
        assert_eq!(up.jobs[0].range, Some((0, 100)));
        assert_eq!(up.jobs[1].range, Some((100, 50)));
        assert_eq!(
            up.jobs[1].init.as_ref().unwrap().0.as_str(),
            "http://127.0.0.1:1/live/init.mp4"
        );
    }

    #[test]
    fn discontinuity_is_passed_on() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb.ts\n";
        let mut tr = PlaylistTracker::new(2);
        let up = tr.update(&url(), &media(text), t(T0)).unwrap();
        assert_eq!(
            up.jobs.iter().map(|j| j.discontinuity).collect::<Vec<_>>(),
            vec![false, true]
        );
    }

    fn master(text: &str) -> MasterPlaylist {
        match parse(&url(), text.as_bytes()).unwrap() {
            Playlist::MasterPlaylist(m) => m,
            _ => panic!("not master"),
        }
    }

    #[test]
    fn variant_choice() {
        let m = master(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2800000,RESOLUTION=1280x720\nmid/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080\nhigh/index.m3u8\n",
        );
        let pick = |c| choose_variant(&url(), &m, c).unwrap().to_string();
        assert_eq!(
            pick(VariantChoice::ClosestHeight(720)),
            "http://127.0.0.1:1/live/mid/index.m3u8"
        );
        assert_eq!(
            pick(VariantChoice::ClosestHeight(400)),
            "http://127.0.0.1:1/live/low/index.m3u8"
        );
        assert_eq!(
            pick(VariantChoice::Highest),
            "http://127.0.0.1:1/live/high/index.m3u8"
        );
        assert_eq!(
            pick(VariantChoice::Lowest),
            "http://127.0.0.1:1/live/low/index.m3u8"
        );
        assert_eq!(
            pick(VariantChoice::Bandwidth(3_000_000)),
            "http://127.0.0.1:1/live/mid/index.m3u8"
        );
        let empty = master("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=1\n");
        assert!(
            choose_variant(&url(), &empty, VariantChoice::Highest).is_err()
                || empty.variants.len() == 1
        );
    }
}
