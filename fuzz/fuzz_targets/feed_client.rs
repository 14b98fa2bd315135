//! The WebSocket feed's inputs from clients: the query string of the upgrade request
//! (`?since=…&token=…`, through axum's own `Query` extractor, as the route reads it), the
//! channel in the path, the token, and the text messages a client sends.
//!
//! Input: the first line is the query string and the channel, separated by a space; the
//! rest is one client message.
#![no_main]
use std::collections::BTreeMap;

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use shopcue::cue::validate_channel_id;
use shopcue::cuebus::Offset;
use shopcue::http::feed::{ClientRequest, FeedQuery, read_client_message};
use shopcue::http::token;

const SECRET: &str = "fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, message) = text.split_once('\n').unwrap_or((text, ""));
    let (query, channel) = first.split_once(' ').unwrap_or((first, "news"));
    check_query(query, channel);
    check_message(message);
});

fn check_query(query: &str, channel: &str) {
    let Ok(uri) = format!("/cues/news?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(q)) = Query::<FeedQuery>::try_from_uri(&uri) else {
        return;
    };
    if let Ok(Some(offset)) = q.since() {
        // An offset reads back as itself.
        assert_eq!(offset.to_string().parse::<Offset>(), Ok(offset));
    }
    if validate_channel_id(channel).is_err() {
        return;
    }
    if let Some(t) = q.token.as_deref() {
        if let Ok(grant) = token::verify(SECRET, t, channel, 1_800_000_000) {
            // What verified is a grant we would sign: signed again, it verifies again.
            let again = token::sign(SECRET, &grant.channel, grant.expires_unix);
            assert!(
                token::verify(SECRET, &again, channel, 1_800_000_000).is_ok(),
                "{t}"
            );
        }
    }
    // A token we sign verifies until it expires, for its channel only.
    let signed = token::sign(SECRET, channel, 1_900_000_000);
    assert!(token::verify(SECRET, &signed, channel, 1_800_000_000).is_ok() || signed.len() > 256);
}

fn check_message(message: &str) {
    match read_client_message(message) {
        ClientRequest::Ping => {
            // A JSON object with a `type` (other members are ignored, whatever they hold:
            // a number too large for f64 included, so no `serde_json::Value` here).
            let members: BTreeMap<String, IgnoredAny> =
                serde_json::from_str(message).expect("a ping is a JSON object");
            assert!(members.contains_key("type"));
        }
        ClientRequest::Unknown { kind } => {
            assert!(kind.chars().count() <= 32 && kind != "ping");
        }
        ClientRequest::Malformed => {}
    }
}
