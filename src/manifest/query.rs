//! Client query strings on proxied playlist requests. A player may add its own parameters
//! (cache-busters like `?_=1733480000`); passed on, each would miss the proxy's cache and
//! cost an origin fetch. Only the parameters the origin itself writes in its playlists'
//! URIs (signed-URL tokens and the like), the channel URL's own, and the LL-HLS delivery
//! directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`…) are kept, in their order and
//! encoding. Pure: no I/O.

/// Names of the query parameters in the URIs of a playlist's text: URI lines and `URI="…"`
/// attributes.
pub fn uri_query_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |uri: &str| {
        if let Some((_, q)) = uri.split_once('?') {
            for name in q.split('&').filter_map(|p| p.split('=').next()) {
                let name = name.split('#').next().unwrap_or(name);
                if !name.is_empty() && !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            add(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("URI=\"") {
            let value = &rest[at + 5..];
            let end = value.find('"').unwrap_or(value.len());
            add(&value[..end]);
            rest = &value[end..];
        }
    }
    names
}

/// LL-HLS delivery directives (RFC 8216bis §6.2.5): they change the answer, always kept.
pub fn is_delivery_directive(name: &str) -> bool {
    name.starts_with("_HLS_")
}

/// `query` with only the parameters whose name `keep` accepts (order and encoding kept),
/// and whether any was left out; `None` when nothing is left.
pub fn filter_query(query: &str, keep: impl Fn(&str) -> bool) -> (Option<String>, bool) {
    let mut kept: Vec<&str> = Vec::new();
    let mut dropped = false;
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let name = part.split('=').next().unwrap_or(part);
        if keep(name) {
            kept.push(part);
        } else {
            dropped = true;
        }
    }
    ((!kept.is_empty()).then(|| kept.join("&")), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_uri_lines_and_uri_attributes() {
        let text = "#EXTM3U\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1\n\
            index.m3u8?token=abc&exp=9\n\
            #EXT-X-MAP:URI=\"init.mp4?sig=1\"\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"key?kid=2&token=x\"\n\
            seg.ts\n\
            https://cdn.example/a.ts?token=y\n";
        assert_eq!(uri_query_names(text), vec!["token", "exp", "sig", "kid"]);
        assert!(uri_query_names("#EXTM3U\nseg.ts\n#EXT-X-ENDLIST\n").is_empty());
    }

    #[test]
    fn only_accepted_parameters_stay_in_order_and_encoding() {
        let known = |n: &str| n == "token" || is_delivery_directive(n);
        assert_eq!(
            filter_query("_=123&token=a%2Fb&_HLS_msn=4&cb=x&_HLS_part=1", known),
            (Some("token=a%2Fb&_HLS_msn=4&_HLS_part=1".into()), true)
        );
        assert_eq!(
            filter_query("token=a", known),
            (Some("token=a".into()), false)
        );
        assert_eq!(filter_query("_=1", known), (None, true));
        assert_eq!(filter_query("", known), (None, false));
        assert_eq!(
            filter_query("&&token=a&", known),
            (Some("token=a".into()), false)
        );
    }
}
