//! Line-based playlist rewriting: every origin line is kept, unchanged and in order (ad
//! markers, the origin's own date ranges however many precede a segment, LL-HLS tags,
//! unknown tags, tags after the last segment); only URIs are rewritten, and our lines are
//! added. Nothing is parsed into a model and printed back, so nothing the model does not
//! know can be lost (m3u8-rs drops repeated DATERANGEs and trailing tags).
//!
//! Media playlists get, per published segment, right before its `EXTINF`:
//! 1. an `EXT-X-PROGRAM-DATE-TIME`, when the origin has none: from ingest's wall-clock
//!    anchor of that media sequence number, else extrapolated with the `EXTINF` durations
//!    from the nearest anchored segment (when the origin has PDTs only from some segment
//!    on, one is added to the first segment);
//! 2. one `EXT-X-DATERANGE` per cue whose range overlaps the playlist window and whose
//!    `START-DATE` falls in this segment (cues that began before the window go with the
//!    first segment), skipping cues that start inside an origin ad break and IDs the
//!    origin already uses. Without a timeline (no PDT, no anchor) no date range is written.
//!
//! Hold-back (`publish_through`): segments after that media sequence number are left out,
//! with every line of theirs; the lines after the last origin segment are left out too
//! when any segment is held back, and LL-HLS parts, preload hints and rendition reports
//! always are (they describe content not analysed yet). `EXT-X-ENDLIST` stays only when
//! nothing is held back.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use url::Url;

use super::ManifestError;
use super::attr;
use super::daterange::CueDateRange;
use super::path::ChannelOrigin;
use super::scte35::{self, AdSignal};

/// Segment (and init, part, key) URIs in media playlists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    /// Absolute URLs of the origin: players fetch segments straight from it.
    Absolute,
    /// Through the sidecar, at the same relative paths (relative URIs are kept as is;
    /// URIs outside the channel's base stay absolute to the origin).
    Proxy,
}

impl UriMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "absolute" => Some(Self::Absolute),
            "proxy" => Some(Self::Proxy),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    Multivariant,
    Media,
}

impl PlaylistKind {
    fn name(self) -> &'static str {
        match self {
            Self::Multivariant => "multivariant",
            Self::Media => "media",
        }
    }
}

fn no_anchor(_: u64) -> Option<DateTime<Utc>> {
    None
}

/// Everything a rewrite needs besides the playlist text.
#[derive(Clone, Copy)]
pub struct RewriteContext<'a> {
    pub origin: &'a ChannelOrigin,
    /// The origin URL this playlist was fetched from (relative URIs resolve against it).
    pub playlist_url: &'a Url,
    pub uri_mode: UriMode,
    /// Ingest's wall clock of a media sequence number's first frame.
    pub pdt_anchor: &'a dyn Fn(u64) -> Option<DateTime<Utc>>,
    /// The channel's date ranges (from [`super::CueLedger::ranges`]).
    pub cues: &'a [CueDateRange],
    /// Hold-back: the last media sequence number to publish (`None`: all).
    pub publish_through: Option<u64>,
    /// Larger playlists are refused.
    pub max_bytes: usize,
}

impl<'a> RewriteContext<'a> {
    /// Absolute URIs, no anchors, no cues, no hold-back, 1 MiB limit.
    pub fn new(origin: &'a ChannelOrigin, playlist_url: &'a Url) -> Self {
        Self {
            origin,
            playlist_url,
            uri_mode: UriMode::Absolute,
            pdt_anchor: &no_anchor,
            cues: &[],
            publish_through: None,
            max_bytes: 1 << 20,
        }
    }
}

impl std::fmt::Debug for RewriteContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewriteContext")
            .field("playlist_url", &self.playlist_url.as_str())
            .field("uri_mode", &self.uri_mode)
            .field("cues", &self.cues.len())
            .field("publish_through", &self.publish_through)
            .finish()
    }
}

/// A segment of the origin playlist, as the rewrite saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    pub msn: u64,
    pub duration: f64,
    /// Its wall-clock start on the playlist's timeline (origin PDT or ingest's anchors).
    pub start: Option<DateTime<Utc>>,
    /// As the origin wrote it; [`SegmentInfo::origin_url`] resolves it.
    pub uri: String,
    pub in_ad_break: bool,
    pub published: bool,
    /// The fMP4 init section in effect (the last `EXT-X-MAP` before it), if any.
    pub map: Option<MapSection>,
}

/// An `EXT-X-MAP`: its URI as the origin wrote it and its `BYTERANGE` (offset, length).
#[derive(Debug, Clone, PartialEq)]
pub struct MapSection {
    pub uri: String,
    pub byterange: Option<(u64, u64)>,
}

impl MapSection {
    /// From the tag's attribute list; `None` without a URI or with a malformed BYTERANGE.
    fn parse(value: &str) -> Option<Self> {
        let attrs = attr::parse(value).ok()?;
        let uri = attr::get(&attrs, "URI")?.value().to_string();
        let byterange = match attr::get(&attrs, "BYTERANGE") {
            None => None,
            Some(a) => {
                let v = a.value();
                let (len, off) = v.split_once('@').unwrap_or((v, "0"));
                Some((off.trim().parse().ok()?, len.trim().parse().ok()?))
            }
        };
        Some(Self { uri, byterange })
    }
}

impl SegmentInfo {
    /// The segment's origin URL (`playlist_url`: where the playlist was fetched).
    pub fn origin_url(&self, playlist_url: &Url) -> Option<Url> {
        playlist_url.join(&self.uri).ok()
    }
}

/// An origin ad break on the playlist's timeline; `end: None` is still open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdBreak {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl AdBreak {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && self.end.is_none_or(|e| t < e)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewrittenPlaylist {
    pub text: String,
    pub media_sequence: u64,
    pub segments: Vec<SegmentInfo>,
    /// IDs of the date ranges written, in order.
    pub dateranges: Vec<String>,
    /// Cues left out because they start inside an origin ad break.
    pub suppressed_in_ad_break: Vec<String>,
    pub ad_breaks: Vec<AdBreak>,
    pub pdt_inserted: usize,
    /// URIs that could not be served by the sidecar (outside the channel's base) and stay
    /// absolute to the origin.
    pub unproxied_uris: usize,
    /// Whether the segments had wall-clock times (else no date range could be written).
    pub timeline: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewrittenMultivariant {
    pub text: String,
    /// The variant and rendition playlist URIs written (sidecar paths when possible).
    pub playlists: Vec<String>,
    pub unproxied_uris: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind<'a> {
    Blank,
    Comment,
    Tag {
        name: &'a str,
        value: Option<&'a str>,
    },
    Uri,
}

fn classify(line: &str) -> Kind<'_> {
    if line.trim().is_empty() {
        Kind::Blank
    } else if line.starts_with("#EXT") {
        let full = &line[1..];
        match full.split_once(':') {
            Some((name, value)) => Kind::Tag {
                name,
                value: Some(value),
            },
            None => Kind::Tag {
                name: full.trim_end(),
                value: None,
            },
        }
    } else if line.starts_with('#') {
        Kind::Comment
    } else {
        Kind::Uri
    }
}

/// Splits into lines (LF or CRLF), checking size and the `#EXTM3U` header.
fn lines(input: &str, max_bytes: usize) -> Result<Vec<&str>, ManifestError> {
    if input.len() > max_bytes {
        return Err(ManifestError::PlaylistTooLarge {
            bytes: input.len(),
            limit: max_bytes,
        });
    }
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let body = input.strip_suffix('\n').unwrap_or(input);
    let lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    match lines.first() {
        Some(first) if first.trim_end() == "#EXTM3U" => Ok(lines),
        _ => Err(ManifestError::NotAPlaylist {
            why: "the first line is not #EXTM3U".into(),
        }),
    }
}

const MULTIVARIANT_TAGS: [&str; 6] = [
    "EXT-X-STREAM-INF",
    "EXT-X-I-FRAME-STREAM-INF",
    "EXT-X-MEDIA",
    "EXT-X-SESSION-DATA",
    "EXT-X-SESSION-KEY",
    "EXT-X-CONTENT-STEERING",
];
/// Tags about the whole media playlist, kept when hold-back publishes no segment yet.
const PLAYLIST_TAGS: [&str; 12] = [
    "EXT-X-VERSION",
    "EXT-X-TARGETDURATION",
    "EXT-X-MEDIA-SEQUENCE",
    "EXT-X-DISCONTINUITY-SEQUENCE",
    "EXT-X-PLAYLIST-TYPE",
    "EXT-X-INDEPENDENT-SEGMENTS",
    "EXT-X-START",
    "EXT-X-SERVER-CONTROL",
    "EXT-X-PART-INF",
    "EXT-X-I-FRAMES-ONLY",
    "EXT-X-DEFINE",
    "EXT-X-ALLOW-CACHE",
];
const MEDIA_TAGS: [&str; 5] = [
    "EXTINF",
    "EXT-X-TARGETDURATION",
    "EXT-X-MEDIA-SEQUENCE",
    "EXT-X-PART",
    "EXT-X-ENDLIST",
];

fn kind_of(lines: &[&str]) -> Result<PlaylistKind, ManifestError> {
    let (mut mv, mut media) = (false, false);
    for l in lines {
        if let Kind::Tag { name, .. } = classify(l) {
            mv |= MULTIVARIANT_TAGS.contains(&name);
            media |= MEDIA_TAGS.contains(&name);
        }
    }
    match (mv, media) {
        (true, true) => Err(ManifestError::NotAPlaylist {
            why: "it mixes multivariant and media playlist tags".into(),
        }),
        (true, false) => Ok(PlaylistKind::Multivariant),
        _ => Ok(PlaylistKind::Media),
    }
}

/// Which kind of playlist `input` is.
pub fn playlist_kind(input: &str) -> Result<PlaylistKind, ManifestError> {
    kind_of(&lines(input, usize::MAX)?)
}

/// Where a URI points.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Another playlist: always through the sidecar when possible.
    Playlist,
    /// A segment, part, init section or key: per the URI mode.
    Media,
    /// Always absolute to the origin (session data, steering).
    Origin,
}

fn is_relative_path_ref(raw: &str) -> bool {
    let head = raw.split(['/', '?', '#']).next().unwrap_or("");
    !raw.starts_with('/') && !head.contains(':')
}

struct UriMapper<'a> {
    ctx: &'a RewriteContext<'a>,
    playlist_in_base: bool,
    unproxied: usize,
}

impl<'a> UriMapper<'a> {
    fn new(ctx: &'a RewriteContext<'a>) -> Self {
        Self {
            ctx,
            playlist_in_base: ctx.origin.rel_of(ctx.playlist_url).is_some(),
            unproxied: 0,
        }
    }

    fn resolve(&self, raw: &str, line: usize) -> Result<Url, ManifestError> {
        self.ctx
            .playlist_url
            .join(raw.trim())
            .map_err(|e| ManifestError::BadUri {
                line,
                uri: raw.chars().take(200).collect(),
                why: e.to_string(),
            })
    }

    fn map(&mut self, raw: &str, target: Target, line: usize) -> Result<String, ManifestError> {
        let through_sidecar = match target {
            Target::Playlist => true,
            Target::Media => self.ctx.uri_mode == UriMode::Proxy,
            Target::Origin => false,
        };
        // Fast path: a relative reference that cannot climb (no `..`, plain or encoded)
        // resolves under this playlist's directory, hence under the base: kept as is.
        let t = raw.trim();
        if through_sidecar
            && self.playlist_in_base
            && is_relative_path_ref(t)
            && !t.contains("..")
            && !t.contains('\\')
            && !t
                .as_bytes()
                .windows(3)
                .any(|w| w[0] == b'%' && w[1] == b'2' && w[2] | 0x20 == b'e')
        {
            return Ok(raw.to_string());
        }
        let url = self.resolve(raw, line)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Ok(raw.to_string()); // skd:, data: ...: not ours to touch
        }
        if !through_sidecar {
            return Ok(url.to_string());
        }
        match self.ctx.origin.sidecar_uri(&url) {
            Some(_) if self.playlist_in_base && is_relative_path_ref(raw.trim()) => {
                Ok(raw.to_string())
            }
            Some(s) => Ok(s),
            None => {
                self.unproxied += 1;
                Ok(url.to_string())
            }
        }
    }

    /// The tag with the value of its `name` attribute (a quoted URI) mapped, and the
    /// mapped URI.
    fn map_attr(
        &mut self,
        text: &str,
        tag: &str,
        value: &str,
        name: &str,
        target: Target,
        line: usize,
    ) -> Result<(String, Option<String>), ManifestError> {
        let attrs = attr::parse(value).map_err(|why| ManifestError::BadTag {
            line,
            tag: tag.into(),
            why,
        })?;
        let Some(a) = attr::get(&attrs, name) else {
            return Ok((text.to_string(), None));
        };
        let mapped = self.map(a.value(), target, line)?;
        if mapped == a.value() {
            return Ok((text.to_string(), Some(mapped)));
        }
        let line = format!(
            "#{tag}:{}",
            attr::replace(value, &a, &attr::quote_uri(&mapped))
        );
        Ok((line, Some(mapped)))
    }
}

fn bad_tag(line: usize, tag: &str, why: impl Into<String>) -> ManifestError {
    ManifestError::BadTag {
        line: line + 1,
        tag: tag.into(),
        why: why.into(),
    }
}

fn parse_pdt(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    DateTime::parse_from_rfc3339(v)
        .or_else(|_| DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

fn secs_to_micros(s: f64) -> i64 {
    (s * 1e6).round() as i64
}

/// The wall-clock start of every segment, in µs: its known start (the origin's PDT, else
/// ingest's anchor), else its predecessor's end, and before the first known one, back from
/// it to the first segment and forward again. A start the rewriter writes as a PDT
/// (`written`) is cut to the whole millisecond it is written with, and the segments after
/// it follow on from that: what a reader of the rewritten playlist works out is the same
/// timeline. `None` when no start is known.
fn timeline(
    known: &[Option<i64>],
    durations: &[f64],
    written: impl Fn(usize) -> bool,
) -> Option<Vec<i64>> {
    let first = known.iter().position(Option::is_some)?;
    let whole_ms = |us: i64| us.div_euclid(1000).saturating_mul(1000);
    let mut st: Vec<i64> = Vec::with_capacity(known.len());
    for (j, k) in known.iter().enumerate() {
        let t = match (j, *k) {
            (_, Some(t)) => t,
            (0, None) => durations[..first]
                .iter()
                .fold(known[first]?, |t, &d| t.saturating_sub(secs_to_micros(d))),
            (_, None) => st[j - 1].saturating_add(secs_to_micros(durations[j - 1])),
        };
        st.push(if written(j) { whole_ms(t) } else { t });
    }
    Some(st)
}

/// Ad-break markers of one segment block (or of the lines after the last segment).
#[derive(Debug, Default, Clone)]
struct Markers {
    start: Option<Option<f64>>,
    cont_elapsed: Option<Option<f64>>,
    end: bool,
}

fn number_in(v: &str) -> Option<f64> {
    let t: String = v
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    t.parse().ok().filter(|x: &f64| x.is_finite() && *x >= 0.0)
}

/// `EXT-X-CUE-OUT:30`, `:DURATION=30`, `:Duration=30.000`.
fn cue_out_duration(v: Option<&str>) -> Option<f64> {
    let v = v?;
    match v.split(',').find_map(|p| {
        p.split_once('=')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("duration"))
    }) {
        Some((_, d)) => number_in(d),
        None => number_in(v),
    }
}

/// `EXT-X-CUE-OUT-CONT:ElapsedTime=5,Duration=30` or `:5/30`.
fn cont_elapsed(v: Option<&str>) -> Option<f64> {
    let v = v?;
    match v.split(',').find_map(|p| {
        p.split_once('=')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("elapsedtime"))
    }) {
        Some((_, e)) => number_in(e),
        None => v.split_once('/').and_then(|(e, _)| number_in(e)),
    }
}

fn apply_signal(m: &mut Markers, s: Option<AdSignal>) {
    match s {
        Some(AdSignal::Start { duration_s }) if m.start.is_none() => m.start = Some(duration_s),
        Some(AdSignal::Start { .. }) => {}
        Some(AdSignal::End) => m.end = true,
        None => {}
    }
}

fn signal_of(payload: &str) -> Option<AdSignal> {
    scte35::parse_payload(payload)
        .ok()
        .and_then(|b| scte35::decode(&b).ok())
        .and_then(|s| s.ad_signal())
}

/// Reads an ad marker tag into `m`; `true` if it was one.
fn read_marker(m: &mut Markers, name: &str, value: Option<&str>) -> bool {
    match name {
        "EXT-X-CUE-OUT" => m.start = Some(cue_out_duration(value)),
        "EXT-X-CUE-OUT-CONT" => m.cont_elapsed = Some(cont_elapsed(value)),
        "EXT-X-CUE-IN" => m.end = true,
        "EXT-OATCLS-SCTE35" | "EXT-X-SPLICEPOINT-SCTE35" => {
            apply_signal(m, value.and_then(signal_of))
        }
        "EXT-X-SCTE35" => {
            let attrs = value.and_then(|v| attr::parse(v).ok()).unwrap_or_default();
            match attr::get(&attrs, "CUE-OUT").map(|a| a.value()) {
                Some("YES") => m.start = m.start.or(Some(None)),
                Some("CONT") => m.cont_elapsed = m.cont_elapsed.or(Some(None)),
                _ if attr::get(&attrs, "CUE-IN").is_some_and(|a| a.value() == "YES") => {
                    m.end = true
                }
                _ => apply_signal(
                    m,
                    attr::get(&attrs, "CUE").and_then(|a| signal_of(a.value())),
                ),
            }
        }
        _ => return false,
    }
    true
}

/// An origin `EXT-X-DATERANGE` as far as we care: its ID and what it says about ad breaks.
struct OriginDateRange {
    id: Option<String>,
    start: Option<DateTime<Utc>>,
    /// `Some(end)` for a break start (end when known), `None` otherwise.
    break_start: Option<Option<DateTime<Utc>>>,
    break_end: bool,
}

fn read_origin_daterange(value: &str) -> OriginDateRange {
    let attrs = attr::parse(value).unwrap_or_default();
    let get = |n: &str| attr::get(&attrs, n).map(|a| a.value());
    let start = get("START-DATE").and_then(parse_pdt);
    let secs = |n: &str| {
        get(n)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d >= 0.0 && *d < 1e7)
    };
    let explicit_end = get("END-DATE").and_then(parse_pdt).or_else(|| {
        start
            .zip(secs("DURATION").or(secs("PLANNED-DURATION")))
            .and_then(|(s, d)| from_micros(micros(s).saturating_add(secs_to_micros(d))))
    });
    let mut out = OriginDateRange {
        id: get("ID").map(str::to_string),
        start,
        break_start: None,
        break_end: false,
    };
    let signal = if get("SCTE35-OUT").is_some() {
        Some(AdSignal::Start { duration_s: None })
    } else if get("SCTE35-IN").is_some() {
        Some(AdSignal::End)
    } else if get("CLASS") == Some("com.apple.hls.interstitial") && explicit_end.is_some() {
        Some(AdSignal::Start { duration_s: None })
    } else {
        get("SCTE35-CMD").and_then(signal_of)
    };
    match signal {
        Some(AdSignal::Start { duration_s }) => {
            let end = explicit_end.or_else(|| {
                start
                    .zip(duration_s)
                    .and_then(|(s, d)| from_micros(micros(s).saturating_add(secs_to_micros(d))))
            });
            out.break_start = Some(end);
        }
        Some(AdSignal::End) => out.break_end = true,
        None => {}
    }
    out
}

struct Segment<'a> {
    msn: u64,
    /// First line of its block (the line after the previous URI).
    block_start: usize,
    /// Where our lines go: its `EXTINF` line.
    insert_at: usize,
    uri_line: usize,
    uri: &'a str,
    duration: f64,
    has_pdt: bool,
    pdt: Option<DateTime<Utc>>,
    markers: Markers,
    map: Option<usize>,
}

/// Rewrites a media playlist; see the module documentation.
pub fn rewrite_media_playlist(
    input: &str,
    ctx: &RewriteContext,
) -> Result<RewrittenPlaylist, ManifestError> {
    let lines = lines(input, ctx.max_bytes)?;
    let kind = kind_of(&lines)?;
    if kind != PlaylistKind::Media {
        return Err(ManifestError::WrongPlaylistKind {
            expected: "media",
            found: kind.name(),
        });
    }
    let kinds: Vec<Kind> = lines.iter().map(|l| classify(l)).collect();

    let scan = scan_segments(&lines, &kinds)?;
    let timeline = Timeline::of(&scan.segments, ctx.pdt_anchor);
    let hold = HoldBack::of(&scan.segments, ctx.publish_through);
    let breaks = timeline
        .starts
        .as_deref()
        .map_or_else(Vec::new, |st| ad_breaks(&scan, st));
    let placement = place_date_ranges(ctx.cues, &scan, &timeline, hold.published, &breaks);
    let mut mapper = UriMapper::new(ctx);
    let written = PlaylistWriter {
        lines: &lines,
        kinds: &kinds,
        segments: &scan.segments,
        timeline: &timeline,
        hold: &hold,
        placement: &placement,
    }
    .write(input.len(), &mut mapper)?;

    Ok(RewrittenPlaylist {
        text: written.text,
        media_sequence: scan.media_sequence,
        segments: segment_infos(&scan, &timeline, &hold, &breaks),
        dateranges: placement.dateranges,
        suppressed_in_ad_break: placement.suppressed,
        ad_breaks: breaks,
        pdt_inserted: written.pdt_inserted,
        unproxied_uris: mapper.unproxied,
        timeline: timeline.starts.is_some(),
    })
}

/// What the scan pass found in the origin playlist.
#[derive(Default)]
struct Scan<'a> {
    media_sequence: u64,
    /// `EXT-X-SKIP`'s SKIPPED-SEGMENTS (delta updates).
    skipped: u64,
    segments: Vec<Segment<'a>>,
    origin_ids: HashSet<String>,
    origin_ranges: Vec<OriginDateRange>,
    /// The first line of the block being read.
    block_start: usize,
    /// The block's `EXTINF`: its line and duration.
    extinf: Option<(usize, f64)>,
    /// The block's `EXT-X-PROGRAM-DATE-TIME` (`Some(None)`: present but unreadable).
    pdt: Option<Option<DateTime<Utc>>>,
    /// The block's ad markers; after the scan, those after the last segment.
    markers: Markers,
    /// Init sections seen, and the one in effect.
    maps: Vec<MapSection>,
    map: Option<usize>,
}

/// Scan pass: the segments, their blocks and ad markers, the origin's date ranges and
/// init sections.
fn scan_segments<'a>(lines: &[&'a str], kinds: &[Kind<'_>]) -> Result<Scan<'a>, ManifestError> {
    let mut scan = Scan {
        block_start: 1,
        ..Scan::default()
    };
    for (i, k) in kinds.iter().enumerate().skip(1) {
        match *k {
            Kind::Tag { name, value } => scan.tag(i, name, value)?,
            Kind::Uri => scan.segment_uri(i, lines[i])?,
            Kind::Blank | Kind::Comment => {}
        }
    }
    Ok(scan)
}

impl<'a> Scan<'a> {
    /// Reads the tag on line `i` (0-based) into the block being read.
    fn tag(&mut self, i: usize, name: &str, value: Option<&str>) -> Result<(), ManifestError> {
        match name {
            "EXT-X-MEDIA-SEQUENCE" => {
                self.media_sequence = value
                    .map(str::trim)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad_tag(i, name, "not an unsigned integer"))?;
            }
            "EXT-X-SKIP" => {
                let attrs =
                    attr::parse(value.unwrap_or("")).map_err(|why| bad_tag(i, name, why))?;
                self.skipped = attr::get(&attrs, "SKIPPED-SEGMENTS")
                    .and_then(|a| a.value().parse().ok())
                    .ok_or_else(|| bad_tag(i, name, "no SKIPPED-SEGMENTS"))?;
            }
            "EXTINF" => {
                let v = value.unwrap_or("");
                let d: f64 = v
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .parse()
                    .map_err(|_| bad_tag(i, name, "duration is not a number"))?;
                if !(d.is_finite() && (0.0..=1e6).contains(&d)) {
                    return Err(bad_tag(i, name, "duration out of range"));
                }
                self.extinf = Some((i, d));
            }
            "EXT-X-PROGRAM-DATE-TIME" => self.pdt = Some(value.and_then(parse_pdt)),
            "EXT-X-MAP" => {
                self.map = MapSection::parse(value.unwrap_or("")).map(|m| {
                    self.maps.push(m);
                    self.maps.len() - 1
                });
            }
            "EXT-X-DATERANGE" => {
                let r = read_origin_daterange(value.unwrap_or(""));
                if let Some(id) = &r.id {
                    self.origin_ids.insert(id.clone());
                }
                self.origin_ranges.push(r);
            }
            _ => {
                read_marker(&mut self.markers, name, value);
            }
        }
        Ok(())
    }

    /// Closes the block being read with its segment URI on line `i` (0-based).
    fn segment_uri(&mut self, i: usize, line: &'a str) -> Result<(), ManifestError> {
        let (insert_at, duration) = self
            .extinf
            .take()
            .ok_or_else(|| bad_tag(i, "EXTINF", "segment URI without EXTINF"))?;
        let msn = self
            .media_sequence
            .checked_add(self.skipped)
            .and_then(|m| m.checked_add(self.segments.len() as u64))
            .ok_or_else(|| bad_tag(i, "EXT-X-MEDIA-SEQUENCE", "media sequence overflows"))?;
        self.segments.push(Segment {
            msn,
            block_start: self.block_start,
            insert_at,
            uri_line: i,
            uri: line.trim(),
            duration,
            has_pdt: self.pdt.is_some(),
            pdt: self.pdt.take().flatten(),
            markers: std::mem::take(&mut self.markers),
            map: self.map,
        });
        self.block_start = i + 1;
        Ok(())
    }
}

/// Timeline pass: the wall-clock start of every segment, and where a PDT is written.
struct Timeline {
    /// Starts in µs; `None` without any PDT or anchor.
    starts: Option<Vec<i64>>,
    origin_has_pdt: bool,
    first_has_pdt: bool,
    durations: Vec<f64>,
}

impl Timeline {
    fn of(segments: &[Segment], pdt_anchor: &dyn Fn(u64) -> Option<DateTime<Utc>>) -> Self {
        let origin_has_pdt = segments.iter().any(|s| s.has_pdt);
        let known: Vec<Option<i64>> = segments
            .iter()
            .map(|s| {
                if origin_has_pdt {
                    s.pdt.map(micros)
                } else {
                    pdt_anchor(s.msn).map(micros)
                }
            })
            .collect();
        let mut tl = Self {
            starts: None,
            origin_has_pdt,
            first_has_pdt: segments.first().is_some_and(|s| s.has_pdt),
            durations: segments.iter().map(|s| s.duration).collect(),
        };
        let starts = timeline(&known, &tl.durations, |j| tl.writes_pdt(j));
        tl.starts = starts.filter(|st| st.iter().all(|&us| from_micros(us).is_some()));
        tl
    }

    /// The rewriter writes a PDT for every segment when the origin has none, else for the
    /// first segment if it lacks one.
    fn writes_pdt(&self, j: usize) -> bool {
        !self.origin_has_pdt || (j == 0 && !self.first_has_pdt)
    }

    /// The end of segment `j`, in µs, on timeline `st`.
    fn end_of(&self, j: usize, st: &[i64]) -> i64 {
        st[j].saturating_add(secs_to_micros(self.durations[j]))
    }
}

/// Hold-back pass: how many segments are published.
struct HoldBack {
    published: usize,
    /// Some segments are held back.
    holding: bool,
    /// Hold-back is on (even if nothing is held back now).
    active: bool,
}

impl HoldBack {
    fn of(segments: &[Segment], publish_through: Option<u64>) -> Self {
        let published = match publish_through {
            None => segments.len(),
            Some(n) => segments.iter().take_while(|s| s.msn <= n).count(),
        };
        Self {
            published,
            holding: published < segments.len(),
            active: publish_through.is_some(),
        }
    }
}

/// Ad-break pass: the origin's ad breaks on timeline `st`, from its markers and its date
/// ranges, one entry per break.
fn ad_breaks(scan: &Scan, st: &[i64]) -> Vec<AdBreak> {
    let segments = &scan.segments;
    let after_last = segments.last().map_or(0, |s| {
        let j = segments.len() - 1;
        st[j].saturating_add(secs_to_micros(s.duration))
    });
    let blocks = segments
        .iter()
        .enumerate()
        .map(|(j, s)| (st[j], &s.markers))
        .chain(std::iter::once((after_last, &scan.markers)));
    let mut breaks = marker_breaks(blocks);
    breaks.extend(daterange_breaks(&scan.origin_ranges));
    // The same break is often signalled several ways (CUE-OUT and a DATERANGE).
    breaks.sort_by_key(|b| (b.start, b.end.is_none(), b.end));
    breaks.dedup();
    breaks
}

/// Breaks from ad marker tags, given each block's start (µs) and markers in order.
fn marker_breaks<'m>(blocks: impl Iterator<Item = (i64, &'m Markers)>) -> Vec<AdBreak> {
    let at = |us: i64| from_micros(us);
    let mut breaks = Vec::new();
    let mut open: Option<(i64, Option<i64>)> = None;
    for (t, m) in blocks {
        if let Some((s, Some(planned_end))) = open
            && t >= planned_end
            && m.cont_elapsed.is_none()
            && !m.end
        {
            breaks.push(AdBreak {
                start: at(s).unwrap_or_default(),
                end: at(planned_end),
            });
            open = None;
        }
        if m.end
            && let Some((s, _)) = open.take()
        {
            breaks.push(AdBreak {
                start: at(s).unwrap_or_default(),
                end: at(t),
            });
        }
        if open.is_none() {
            if let Some(d) = m.start {
                open = Some((t, d.map(|d| t.saturating_add(secs_to_micros(d)))));
            } else if let Some(elapsed) = m.cont_elapsed
                && !m.end
            {
                let s = t.saturating_sub(elapsed.map_or(0, secs_to_micros));
                open = Some((s, None));
            }
        }
    }
    if let Some((s, e)) = open {
        breaks.push(AdBreak {
            start: at(s).unwrap_or_default(),
            end: e.and_then(at),
        });
    }
    breaks
}

/// Breaks from the origin's date ranges: an out with its end (or open until an in).
fn daterange_breaks(origin_ranges: &[OriginDateRange]) -> Vec<AdBreak> {
    let mut breaks = Vec::new();
    let mut dr_open: Option<DateTime<Utc>> = None;
    let mut dated: Vec<&OriginDateRange> =
        origin_ranges.iter().filter(|r| r.start.is_some()).collect();
    dated.sort_by_key(|r| r.start);
    for r in dated {
        let Some(s) = r.start else { continue };
        match r.break_start {
            Some(Some(e)) => breaks.push(AdBreak {
                start: s,
                end: Some(e.max(s)),
            }),
            Some(None) => {
                dr_open.get_or_insert(s);
            }
            None if r.break_end => {
                if let Some(o) = dr_open.take() {
                    breaks.push(AdBreak {
                        start: o,
                        end: Some(s.max(o)),
                    });
                }
            }
            None => {}
        }
    }
    if let Some(o) = dr_open {
        breaks.push(AdBreak {
            start: o,
            end: None,
        });
    }
    breaks
}

/// Which cues go before which segment, and which are left out.
struct Placement<'c> {
    /// Per segment, the cues written before its `EXTINF`.
    placed: Vec<Vec<&'c CueDateRange>>,
    /// IDs written, in order.
    dateranges: Vec<String>,
    /// IDs left out because they start inside an origin ad break.
    suppressed: Vec<String>,
}

/// Date-range pass: each cue overlapping the published window goes with the segment it
/// starts in, unless it starts in an origin ad break or the origin already uses its ID.
fn place_date_ranges<'c>(
    cues: &'c [CueDateRange],
    scan: &Scan,
    timeline: &Timeline,
    published: usize,
    breaks: &[AdBreak],
) -> Placement<'c> {
    let mut p = Placement {
        placed: vec![Vec::new(); scan.segments.len()],
        dateranges: Vec::new(),
        suppressed: Vec::new(),
    };
    let Some(st) = timeline.starts.as_deref().filter(|_| published > 0) else {
        return p;
    };
    let win_start = from_micros(st[0]);
    let win_end = from_micros(timeline.end_of(published - 1, st));
    let (Some(ws), Some(we)) = (win_start, win_end) else {
        return p;
    };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut cues: Vec<&CueDateRange> = cues.iter().collect();
    cues.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    for c in cues {
        if !c.overlaps(ws, we) || scan.origin_ids.contains(&c.id) || !seen.insert(c.id.as_str()) {
            continue;
        }
        if breaks.iter().any(|b| b.contains(c.start)) {
            p.suppressed.push(c.id.clone());
            continue;
        }
        let cs = micros(c.start);
        // The last published segment starting at or before the cue (else the first).
        let j = st[..published]
            .partition_point(|&s| s <= cs)
            .saturating_sub(1);
        p.placed[j].push(c);
        p.dateranges.push(c.id.clone());
    }
    p
}

/// The text the write pass produced.
struct Written {
    text: String,
    pdt_inserted: usize,
}

/// Write pass: every kept origin line, its URIs mapped, with our PDT and date-range lines
/// before each segment's `EXTINF`.
struct PlaylistWriter<'w, 'a> {
    lines: &'w [&'a str],
    kinds: &'w [Kind<'a>],
    segments: &'w [Segment<'a>],
    timeline: &'w Timeline,
    hold: &'w HoldBack,
    placement: &'w Placement<'w>,
}

impl PlaylistWriter<'_, '_> {
    fn write(&self, input_len: usize, mapper: &mut UriMapper) -> Result<Written, ManifestError> {
        let capacity = input_len + input_len / 4 + self.placement.dateranges.len() * 400;
        let mut out = Written {
            text: String::with_capacity(capacity),
            pdt_inserted: 0,
        };
        let mut seg_at_line: Vec<Option<usize>> = vec![None; self.lines.len()];
        for (j, s) in self.segments.iter().enumerate() {
            seg_at_line[s.insert_at] = Some(j);
        }
        let last_kept_line = self.last_kept_line();
        for (i, (&text, k)) in self.lines.iter().zip(self.kinds).enumerate() {
            if i >= last_kept_line && !self.kept_past_hold_back(i, k) {
                continue;
            }
            if let Some(j) = seg_at_line[i] {
                self.insert_before_segment(j, &mut out);
            }
            if let Some(line) = self.map_line(text, k, i, mapper)? {
                out.text.push_str(&line);
                out.text.push('\n');
            }
        }
        Ok(out)
    }

    /// Lines from here on belong to held-back segments (or follow them).
    fn last_kept_line(&self) -> usize {
        if self.hold.holding {
            self.segments
                .get(self.hold.published)
                .map_or(self.lines.len(), |s| s.block_start)
        } else {
            self.lines.len()
        }
    }

    /// With nothing published, the header and the playlist-level tags of the first block
    /// are still written.
    fn kept_past_hold_back(&self, i: usize, k: &Kind) -> bool {
        let in_first_block = self.segments.first().is_some_and(|s| i <= s.uri_line);
        i == 0
            || (self.hold.published == 0
                && in_first_block
                && matches!(*k, Kind::Tag { name, .. } if PLAYLIST_TAGS.contains(&name)))
    }

    /// Our lines for segment `j`: its PDT when we write one, then its date ranges.
    fn insert_before_segment(&self, j: usize, out: &mut Written) {
        if let Some(st) = &self.timeline.starts
            && self.timeline.writes_pdt(j)
            && let Some(t) = from_micros(st[j])
        {
            out.text.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            out.text.push_str(&crate::frame::rfc3339_ms(&t));
            out.text.push('\n');
            out.pdt_inserted += 1;
        }
        for c in &self.placement.placed[j] {
            out.text.push_str(&c.render());
            out.text.push('\n');
        }
    }

    /// Origin line `i` (0-based) with its URIs mapped; `None` when hold-back leaves it out.
    fn map_line(
        &self,
        text: &str,
        k: &Kind,
        i: usize,
        mapper: &mut UriMapper,
    ) -> Result<Option<String>, ManifestError> {
        let line = match *k {
            Kind::Uri => mapper.map(text, Target::Media, i + 1)?,
            Kind::Tag { name, value } => {
                if self.hold.active
                    && matches!(
                        name,
                        "EXT-X-PART" | "EXT-X-PRELOAD-HINT" | "EXT-X-RENDITION-REPORT"
                    )
                {
                    return Ok(None);
                }
                if self.hold.active && self.hold.holding && name == "EXT-X-ENDLIST" {
                    return Ok(None);
                }
                let v = value.unwrap_or("");
                match name {
                    "EXT-X-MAP" | "EXT-X-PART" | "EXT-X-PRELOAD-HINT" | "EXT-X-KEY" => {
                        mapper
                            .map_attr(text, name, v, "URI", Target::Media, i + 1)?
                            .0
                    }
                    "EXT-X-RENDITION-REPORT" => {
                        mapper
                            .map_attr(text, name, v, "URI", Target::Playlist, i + 1)?
                            .0
                    }
                    "EXT-X-DATERANGE" => map_interstitial_uris(mapper, text, v, i + 1),
                    _ => text.to_string(),
                }
            }
            Kind::Blank | Kind::Comment => text.to_string(),
        };
        Ok(Some(line))
    }
}

/// The segments as the rewrite saw them, for the caller.
fn segment_infos(
    scan: &Scan,
    timeline: &Timeline,
    hold: &HoldBack,
    breaks: &[AdBreak],
) -> Vec<SegmentInfo> {
    scan.segments
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let start = timeline.starts.as_ref().and_then(|st| from_micros(st[j]));
            SegmentInfo {
                msn: s.msn,
                duration: s.duration,
                start,
                uri: s.uri.to_string(),
                in_ad_break: start.is_some_and(|t| breaks.iter().any(|b| b.contains(t))),
                published: j < hold.published,
                map: s.map.and_then(|m| scan.maps.get(m).cloned()),
            }
        })
        .collect()
}

/// Interstitial date ranges carry asset URIs that resolve against the playlist's URL,
/// which is now the sidecar's: relative ones are made absolute to the origin. Any other
/// date range is left untouched, as is any list we cannot parse.
fn map_interstitial_uris(mapper: &mut UriMapper, text: &str, value: &str, line: usize) -> String {
    let mut new_value = value.to_string();
    let mut changed = false;
    for name in ["X-ASSET-URI", "X-ASSET-LIST"] {
        let Ok(attrs_now) = attr::parse(&new_value) else {
            break;
        };
        let Some(a) = attr::get(&attrs_now, name) else {
            continue;
        };
        if !is_relative_path_ref(a.value()) && !a.value().starts_with('/') {
            continue;
        }
        if let Ok(mapped) = mapper.map(a.value(), Target::Origin, line) {
            new_value = attr::replace(&new_value, &a, &attr::quote_uri(&mapped));
            changed = true;
        }
    }
    if changed {
        format!("#EXT-X-DATERANGE:{new_value}")
    } else {
        text.to_string()
    }
}

/// Rewrites a multivariant playlist: variant and rendition playlists (`EXT-X-STREAM-INF`
/// URIs, `EXT-X-MEDIA` and `EXT-X-I-FRAME-STREAM-INF` `URI`s) point at the sidecar,
/// keeping their relative structure; session data and steering stay absolute to the
/// origin; session keys follow the URI mode. Every other line is kept as is.
pub fn rewrite_multivariant(
    input: &str,
    ctx: &RewriteContext,
) -> Result<RewrittenMultivariant, ManifestError> {
    let lines = lines(input, ctx.max_bytes)?;
    let kind = kind_of(&lines)?;
    if kind != PlaylistKind::Multivariant {
        return Err(ManifestError::WrongPlaylistKind {
            expected: "multivariant",
            found: kind.name(),
        });
    }
    let mut mapper = UriMapper::new(ctx);
    let mut out = String::with_capacity(input.len() + 256);
    let mut playlists = Vec::new();
    for (i, &text) in lines.iter().enumerate() {
        let line = match classify(text) {
            Kind::Uri => {
                let m = mapper.map(text, Target::Playlist, i + 1)?;
                playlists.push(m.clone());
                m
            }
            Kind::Tag { name, value } => {
                let v = value.unwrap_or("");
                let (attr_name, target) = match name {
                    "EXT-X-MEDIA" | "EXT-X-I-FRAME-STREAM-INF" | "EXT-X-IMAGE-STREAM-INF" => {
                        ("URI", Target::Playlist)
                    }
                    "EXT-X-SESSION-DATA" => ("URI", Target::Origin),
                    "EXT-X-SESSION-KEY" => ("URI", Target::Media),
                    "EXT-X-CONTENT-STEERING" => ("SERVER-URI", Target::Origin),
                    _ => ("", Target::Origin),
                };
                if attr_name.is_empty() {
                    text.to_string()
                } else {
                    let (line, mapped) =
                        mapper.map_attr(text, name, v, attr_name, target, i + 1)?;
                    if let (Target::Playlist, Some(m)) = (target, mapped) {
                        playlists.push(m);
                    }
                    line
                }
            }
            Kind::Blank | Kind::Comment => text.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(RewrittenMultivariant {
        text: out,
        playlists,
        unproxied_uris: mapper.unproxied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ChannelOrigin {
        ChannelOrigin::new("https://origin.example/live/news/master.m3u8", "/hls/news/").unwrap()
    }

    #[test]
    fn proxy_mode_keeps_relative_uris_and_refuses_to_proxy_outside_the_base() {
        let o = origin();
        let url = Url::parse("https://origin.example/live/news/720p/index.m3u8").unwrap();
        let ctx = RewriteContext {
            uri_mode: UriMode::Proxy,
            ..RewriteContext::new(&o, &url)
        };
        let input = "#EXTM3U\n#EXTINF:2,\na.ts\n#EXTINF:2,\n../../x.ts\n#EXTINF:2,\n%2E%2E/%2e%2e/y.ts\n#EXTINF:2,\nhttps://origin.example/live/news/720p/b.ts\n#EXTINF:2,\n../360p/c.ts\n";
        let out = rewrite_media_playlist(input, &ctx).unwrap();
        let uris: Vec<&str> = out.text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            uris,
            [
                "a.ts",
                "https://origin.example/live/x.ts",
                "https://origin.example/live/y.ts",
                "/hls/news/720p/b.ts",
                "../360p/c.ts"
            ]
        );
        assert_eq!(out.unproxied_uris, 2);
        assert_eq!(
            out.segments[3].origin_url(&url).unwrap().as_str(),
            "https://origin.example/live/news/720p/b.ts"
        );
    }

    #[test]
    fn crlf_and_bom_are_normalised_and_a_late_origin_pdt_gets_a_first_one() {
        let o = origin();
        let url = Url::parse("https://origin.example/live/news/720p.m3u8").unwrap();
        let ctx = RewriteContext::new(&o, &url);
        let input = "\u{feff}#EXTM3U\r\n#EXTINF:2.5,\r\na.ts\r\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:02.500Z\r\n#EXTINF:2,\r\nb.ts\r\n";
        let out = rewrite_media_playlist(input, &ctx).unwrap();
        assert!(!out.text.contains('\r') && out.text.starts_with("#EXTM3U\n"));
        assert_eq!(out.pdt_inserted, 1);
        assert!(
            out.text
                .contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:00.000Z\n#EXTINF:2.5,")
        );
        assert_eq!(playlist_kind(input).unwrap(), PlaylistKind::Media);
    }

    /// Found by the `manifest_rewrite` fuzz target (a smoke run with a random seed): an
    /// origin PDT with sub-millisecond digits on the second segment, none on the first.
    /// The PDT added to the first segment is written to the millisecond, but the timeline
    /// kept the microseconds computed back from the origin's PDT, so reading the output
    /// again gave that segment another start (09:59:58.000 against 09:59:58.000333). The
    /// timeline now holds what is written, and the segments after it follow on from it.
    #[test]
    fn an_added_pdt_and_the_timeline_agree_to_the_millisecond() {
        let o = origin();
        let url = Url::parse("https://origin.example/live/news/720p/index.m3u8").unwrap();
        let ctx = RewriteContext::new(&o, &url);
        let input = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:00.000333333333333333333333Z\n\
            #EXTINF:2.000,\nc.ts\n#EXTINF:2,\nd.ts\n";
        let once = rewrite_media_playlist(input, &ctx).unwrap();
        assert!(
            once.text
                .contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-21T09:59:56.000Z\n#EXTINF:2,\n")
        );
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let starts =
            |p: &RewrittenPlaylist| -> Vec<_> { p.segments.iter().map(|s| s.start).collect() };
        assert_eq!(
            starts(&once),
            [
                Some(t("2026-11-21T09:59:56Z")),
                Some(t("2026-11-21T09:59:58Z")),
                Some(t("2026-11-21T10:00:00.000333Z")),
                Some(t("2026-11-21T10:00:02.000333Z")),
            ]
        );
        let twice = rewrite_media_playlist(&once.text, &ctx).unwrap();
        assert_eq!(starts(&twice), starts(&once));
        assert_eq!(twice.pdt_inserted, 0);

        // Without origin PDTs every start is ingest's anchor cut to the millisecond.
        let anchor = |msn: u64| {
            Some(t("2026-11-21T10:00:00.000777Z") + chrono::TimeDelta::seconds(2 * msn as i64))
        };
        let anchored = RewriteContext {
            pdt_anchor: &anchor,
            ..RewriteContext::new(&o, &url)
        };
        let input = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n";
        let once = rewrite_media_playlist(input, &anchored).unwrap();
        assert_eq!(
            starts(&once),
            [
                Some(t("2026-11-21T10:00:00Z")),
                Some(t("2026-11-21T10:00:02Z"))
            ]
        );
        let twice = rewrite_media_playlist(&once.text, &anchored).unwrap();
        assert_eq!(starts(&twice), starts(&once));
    }

    #[test]
    fn segments_know_their_init_section() {
        let o = origin();
        let url = Url::parse("https://origin.example/live/news/720p/index.m3u8").unwrap();
        let ctx = RewriteContext::new(&o, &url);
        let input = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\nb.m4s\n#EXTINF:2,\nc.m4s\n\
            #EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"720@100\"\n#EXTINF:2,\nd.m4s\n\
            #EXT-X-MAP:URI=\"x.mp4\",BYTERANGE=\"7\"\n#EXTINF:2,\ne.m4s\n\
            #EXT-X-MAP:BYTERANGE=\"7\"\n#EXTINF:2,\nf.m4s\n";
        let out = rewrite_media_playlist(input, &ctx).unwrap();
        let maps: Vec<Option<MapSection>> = out.segments.iter().map(|s| s.map.clone()).collect();
        let m = |uri: &str, byterange| {
            Some(MapSection {
                uri: uri.into(),
                byterange,
            })
        };
        assert_eq!(
            maps,
            vec![
                None,
                m("init.mp4", None),
                m("init.mp4", None),
                m("all.mp4", Some((100, 720))),
                m("x.mp4", Some((0, 7))),
                None,
            ]
        );
    }

    #[test]
    fn markers_parse() {
        assert_eq!(cue_out_duration(Some("30")), Some(30.0));
        assert_eq!(cue_out_duration(Some("DURATION=12.5")), Some(12.5));
        assert_eq!(cue_out_duration(Some("Duration=4,foo=1")), Some(4.0));
        assert_eq!(cue_out_duration(None), None);
        assert_eq!(
            cont_elapsed(Some("ElapsedTime=6.000,Duration=12")),
            Some(6.0)
        );
        assert_eq!(cont_elapsed(Some("5/30")), Some(5.0));
        assert!(is_relative_path_ref("a/b:c.ts"));
        assert!(!is_relative_path_ref("http:x"));
        assert!(!is_relative_path_ref("/abs"));
    }
}
