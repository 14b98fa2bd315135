//! The playlist rewriter (`manifest::rewrite`): media playlists get date ranges, program
//! date times and sidecar URIs; multivariant playlists get sidecar URIs. Each input is
//! rewritten twice: plainly (absolute URIs, no clock, no cues) and as the proxy does
//! (sidecar URIs, ingest's clock, one open cue).
//!
//! Checked: a rewritten playlist is itself a playlist the rewriter accepts, and it reads
//! the same segments (sequence numbers and durations) and media sequence from it.
#![no_main]
use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use shopcue::cue::Cue;
use shopcue::manifest::{
    ChannelOrigin, CueLedger, PlaylistKind, RewriteContext, RewrittenPlaylist, UriMode,
    playlist_kind, rewrite_media_playlist, rewrite_multivariant,
};
use url::Url;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn anchor(msn: u64) -> Option<DateTime<Utc>> {
    t0().checked_add_signed(Duration::seconds(2 * (msn % 1_000_000) as i64))
}

fn ledger() -> CueLedger {
    let mut ledger = CueLedger::new(8, 10.0);
    let cue = Cue {
        source: Default::default(),
        id: shopcue::cue::cue_id("news", 3, "sku-1"),
        channel: "news".into(),
        product_id: "sku-1".into(),
        start: t0() + Duration::seconds(3),
        end: None,
        pts: 3.0,
        score: 0.8,
        shot: 3,
        boxes: vec![],
        product: None,
    };
    ledger.observe(&cue, false).unwrap();
    ledger
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin =
        ChannelOrigin::new("https://origin.example/live/news/master.m3u8", "/hls/news/").unwrap();
    let url = Url::parse("https://origin.example/live/news/720p/index.m3u8").unwrap();
    let plain = RewriteContext::new(&origin, &url);
    let cues = ledger().ranges();
    let proxied = RewriteContext {
        uri_mode: UriMode::Proxy,
        pdt_anchor: &anchor,
        cues: &cues,
        ..RewriteContext::new(&origin, &url)
    };
    for ctx in [&plain, &proxied] {
        match playlist_kind(text) {
            Ok(PlaylistKind::Media) => check_media(text, ctx),
            Ok(PlaylistKind::Multivariant) => check_multivariant(text, ctx),
            Err(_) => {}
        }
    }
});

fn check_media(text: &str, ctx: &RewriteContext) {
    let Ok(once) = rewrite_media_playlist(text, ctx) else {
        return;
    };
    let twice = rewrite_media_playlist(&once.text, ctx)
        .unwrap_or_else(|e| panic!("rewritten playlist refused: {e}\n{}", once.text));
    assert_eq!(twice.media_sequence, once.media_sequence, "{}", once.text);
    assert_eq!(seen(&twice, ctx), seen(&once, ctx), "{}", once.text);
}

/// What a reader of the playlist learns about each segment. `uri` is the URI as written,
/// which the first rewrite may change (absolute, or a sidecar path): in absolute mode the
/// URL it resolves to must not change; in proxy mode it resolves against the sidecar.
fn seen(p: &RewrittenPlaylist, ctx: &RewriteContext) -> Vec<impl PartialEq + std::fmt::Debug> {
    p.segments
        .iter()
        .map(|s| {
            let url = match ctx.uri_mode {
                UriMode::Absolute => s.origin_url(ctx.playlist_url),
                UriMode::Proxy => None,
            };
            let map_range = s.map.as_ref().map(|m| m.byterange);
            (
                s.msn,
                s.duration,
                s.start,
                url,
                s.in_ad_break,
                s.published,
                map_range,
            )
        })
        .collect()
}

fn check_multivariant(text: &str, ctx: &RewriteContext) {
    let Ok(once) = rewrite_multivariant(text, ctx) else {
        return;
    };
    let twice = rewrite_multivariant(&once.text, ctx)
        .unwrap_or_else(|e| panic!("rewritten playlist refused: {e}\n{}", once.text));
    assert_eq!(twice.playlists.len(), once.playlists.len(), "{}", once.text);
}
