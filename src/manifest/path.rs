//! The sidecar serves a channel's playlists (and proxied segments) under
//! `/hls/{channel}/{rel}`, where `rel` is the path relative to the directory of the
//! channel's origin URL (its *base*). Only URLs under that base are ever fetched: a
//! requested path that climbs out of it (`..`, encoded or not), names another host or
//! scheme, or smuggles separators is refused.

use url::Url;

use super::ManifestError;

/// The longest relative path accepted.
pub const MAX_REL_PATH: usize = 2048;

fn refused(path: &str, why: impl Into<String>) -> ManifestError {
    ManifestError::PathRefused {
        path: path.chars().take(200).collect(),
        why: why.into(),
    }
}

/// A channel's origin and where the sidecar serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelOrigin {
    /// The channel's origin URL (multivariant or media playlist).
    pub url: Url,
    /// Its directory: every URL the sidecar may fetch for this channel is under it.
    pub base: Url,
    /// Where the sidecar serves `base`: `/hls/{channel}/` (or an absolute URL).
    pub sidecar_prefix: String,
}

impl ChannelOrigin {
    /// `origin_url` must be http(s) without credentials; `sidecar_prefix` must end in `/`.
    pub fn new(origin_url: &str, sidecar_prefix: &str) -> Result<Self, ManifestError> {
        let bad = |why: &str| ManifestError::BadOriginUrl {
            // Named without its credentials or query.
            url: crate::redact::redact_url(origin_url),
            why: why.into(),
        };
        let url = Url::parse(origin_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("scheme must be http or https"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        if !sidecar_prefix.ends_with('/') {
            return Err(bad("sidecar prefix must end with `/`"));
        }
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        let dir = match url.path().rfind('/') {
            Some(i) => url.path()[..=i].to_string(),
            None => "/".to_string(),
        };
        base.set_path(&dir);
        Ok(Self {
            url,
            base,
            sidecar_prefix: sidecar_prefix.into(),
        })
    }

    /// The default prefix for a channel id.
    pub fn default_prefix(channel: &str) -> String {
        format!("/hls/{channel}/")
    }

    /// `url` relative to the base (path and query), when it lies under it.
    pub fn rel_of(&self, url: &Url) -> Option<String> {
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
            || url.username() != self.base.username()
            || url.password() != self.base.password()
        {
            return None;
        }
        let rel = url.path().strip_prefix(self.base.path())?;
        if rel.is_empty() {
            return None;
        }
        Some(match url.query() {
            Some(q) => format!("{rel}?{q}"),
            None => rel.to_string(),
        })
    }

    /// Where the sidecar serves `url`: `{prefix}{rel}`, when `url` lies under the base.
    pub fn sidecar_uri(&self, url: &Url) -> Option<String> {
        self.rel_of(url)
            .map(|rel| format!("{}{rel}", self.sidecar_prefix))
    }

    /// The sidecar path of the channel's own URL (e.g. `master.m3u8`).
    pub fn entry_rel(&self) -> String {
        self.rel_of(&self.url).unwrap_or_default()
    }

    /// The origin URL behind a requested relative path; see [`resolve_sidecar_path`].
    pub fn origin_url(&self, requested_rel_path: &str) -> Result<Url, ManifestError> {
        resolve_sidecar_path(&self.url, requested_rel_path)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes once; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = hex_val(*b.get(i + 1)?)?;
            let l = hex_val(*b.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The origin URL for `requested_rel_path` (what follows `/hls/{channel}/`, query
/// included), under the directory of `channel_origin_url`. Refused: empty or over-long
/// paths, absolute paths and URLs (any scheme, `//host`), `.`/`..` segments in plain or
/// percent-encoded form, encoded `/` or `\`, backslashes, NUL and control characters,
/// double encoding, fragments, and anything that would resolve outside the base.
pub fn resolve_sidecar_path(
    channel_origin_url: &Url,
    requested_rel_path: &str,
) -> Result<Url, ManifestError> {
    let p = requested_rel_path;
    if p.is_empty() {
        return Err(refused(p, "empty path"));
    }
    if p.len() > MAX_REL_PATH {
        return Err(refused(p, format!("longer than {MAX_REL_PATH} bytes")));
    }
    if p.bytes().any(|c| !(0x20..0x7F).contains(&c)) {
        return Err(refused(p, "control or non-ASCII characters"));
    }
    if p.contains('#') {
        return Err(refused(p, "fragment"));
    }
    if p.contains('\\') {
        return Err(refused(p, "backslash"));
    }
    let (path, query) = match p.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (p, None),
    };
    if path.is_empty() {
        return Err(refused(p, "empty path"));
    }
    if path.starts_with('/') {
        return Err(refused(p, "absolute path"));
    }
    if path.contains("//") {
        return Err(refused(p, "empty path segment"));
    }
    let first = path.split('/').next().unwrap_or("");
    if first.contains(':') {
        return Err(refused(p, "absolute URL (scheme)"));
    }
    let decoded = percent_decode(path).ok_or_else(|| refused(p, "malformed percent-encoding"))?;
    if decoded.contains(&0) {
        return Err(refused(p, "NUL"));
    }
    if decoded.iter().filter(|&&c| c == b'/').count() != path.matches('/').count()
        || decoded.contains(&b'\\')
    {
        return Err(refused(p, "encoded path separator"));
    }
    if decoded.contains(&b'%')
        && percent_decode(&String::from_utf8_lossy(&decoded)).is_some_and(|d| d != decoded)
    {
        return Err(refused(p, "double percent-encoding"));
    }
    for seg in decoded.split(|&c| c == b'/') {
        if seg == b"." || seg == b".." {
            return Err(refused(p, "dot segment (path traversal)"));
        }
    }
    let origin = ChannelOrigin::new(channel_origin_url.as_str(), "/")?;
    let joined = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let url = origin
        .base
        .join(&joined)
        .map_err(|e| refused(p, e.to_string()))?;
    if origin.rel_of(&url).is_none() {
        return Err(refused(p, "resolves outside the channel's origin"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Url {
        Url::parse("https://origin.example:8443/live/news/master.m3u8?token=abc").unwrap()
    }

    #[test]
    fn resolves_paths_under_the_base() {
        let u = resolve_sidecar_path(&origin(), "720p/index.m3u8").unwrap();
        assert_eq!(
            u.as_str(),
            "https://origin.example:8443/live/news/720p/index.m3u8"
        );
        let u = resolve_sidecar_path(&origin(), "seg%20one.ts?_HLS_msn=4&_HLS_part=1").unwrap();
        assert_eq!(
            u.as_str(),
            "https://origin.example:8443/live/news/seg%20one.ts?_HLS_msn=4&_HLS_part=1"
        );
        let u = resolve_sidecar_path(&origin(), "a.b/..c/x..y.ts").unwrap();
        assert!(u.path().ends_with("/a.b/..c/x..y.ts"));
    }

    #[test]
    fn refuses_traversal_and_other_hosts() {
        for bad in [
            "",
            "../secret.m3u8",
            "720p/../../x",
            "./x",
            "%2e%2e/x",
            "%2E%2E/x",
            ".%2e/x",
            "a%2f..%2fb",
            "a%2F..",
            "a%5c..%5cb",
            "..\\x",
            "%252e%252e/x",
            "/etc/passwd",
            "//evil.example/x.m3u8",
            "https://evil.example/x.m3u8",
            "http:x",
            "javascript:alert(1)",
            "a//b",
            "x\u{0}y",
            "x%00y",
            "x\ny",
            "x#frag",
            "%zz",
            "ü.m3u8",
            "?only-query",
        ] {
            assert!(
                matches!(
                    resolve_sidecar_path(&origin(), bad),
                    Err(ManifestError::PathRefused { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(resolve_sidecar_path(&origin(), &"a".repeat(MAX_REL_PATH + 1)).is_err());
    }

    #[test]
    fn channel_origin_maps_urls() {
        let o = ChannelOrigin::new(origin().as_str(), "/hls/news/").unwrap();
        assert_eq!(o.base.as_str(), "https://origin.example:8443/live/news/");
        assert_eq!(o.entry_rel(), "master.m3u8?token=abc");
        let inside = Url::parse("https://origin.example:8443/live/news/720p/a.ts?x=1").unwrap();
        assert_eq!(o.sidecar_uri(&inside).unwrap(), "/hls/news/720p/a.ts?x=1");
        for out in [
            "https://origin.example:8443/live/other/a.ts",
            "https://origin.example/live/news/a.ts",
            "http://origin.example:8443/live/news/a.ts",
            "https://cdn.example:8443/live/news/a.ts",
        ] {
            assert_eq!(o.rel_of(&Url::parse(out).unwrap()), None, "{out}");
        }
        assert!(ChannelOrigin::new("ftp://x/y", "/").is_err());
        let e = ChannelOrigin::new("https://user:hunter22@x/y?token=s3cret", "/").unwrap_err();
        let e = e.to_string();
        assert!(!e.contains("hunter22") && !e.contains("s3cret"), "{e}");
        assert!(ChannelOrigin::new("https://x/y", "/hls").is_err());
    }

    proptest::proptest! {
        /// Whatever is asked, an accepted path resolves under the base.
        #[test]
        fn accepted_paths_stay_under_the_base(p in "[a-zA-Z0-9./%?=&_:-]{0,40}") {
            if let Ok(u) = resolve_sidecar_path(&origin(), &p) {
                proptest::prop_assert!(u.as_str().starts_with("https://origin.example:8443/live/news/"));
                proptest::prop_assert!(!u.path().contains("/../"));
            }
        }
    }
}
