//! Secrets never leave the process: URLs are redacted before they reach status
//! documents, logs and errors. Shared vocabulary, no dependencies on other modules.

/// A URL as it may leave the process (status, logs, errors): without user name and
/// password, with any query replaced by `?…` (tokens and signatures live there), and
/// without fragment. Text that is not a URL (a file path) is returned as it is.
pub fn redact_url(input: &str) -> String {
    let Ok(mut u) = url::Url::parse(input) else {
        return input.to_string();
    };
    if u.cannot_be_a_base() {
        // `mailto:`, a Windows path read as a scheme: nothing of a network address.
        return input.to_string();
    }
    let had_query = u.query().is_some();
    // Both only fail for URLs that cannot be a base, excluded above.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let mut out = u.to_string();
    if had_query {
        out.push_str("?…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_leave_without_credentials_or_query() {
        for (input, shown) in [
            (
                "https://user:secret@cdn.example/live/master.m3u8?token=abc#t=1",
                "https://cdn.example/live/master.m3u8?…",
            ),
            (
                "http://cdn.example:8080/a/b.ts",
                "http://cdn.example:8080/a/b.ts",
            ),
            (
                "http://token@cdn.example/x.m3u8",
                "http://cdn.example/x.m3u8",
            ),
            (
                "srt://10.0.0.1:9000?mode=caller&passphrase=hunter22",
                "srt://10.0.0.1:9000?…",
            ),
            ("http://cdn.example/x.m3u8?", "http://cdn.example/x.m3u8?…"),
            // Not URLs: paths stay as they are.
            ("/var/media/show.mp4", "/var/media/show.mp4"),
            ("C:\\media\\show.mp4", "C:\\media\\show.mp4"),
            ("", ""),
        ] {
            assert_eq!(redact_url(input), shown, "{input}");
        }
    }
}
