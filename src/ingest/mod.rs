//! Sources: live HLS (polled as RFC 8216 prescribes), SRT (through `media`), and files or
//! VOD playlists for batch work. Each turns into a stream of [`crate::frame::Frame`]s with
//! wall clocks.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("`{input}` is not a URL or file this ingest understands: {why}")]
    BadInput { input: String, why: String },
}

/// What a channel URL (or path) names.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// An HLS multivariant or media playlist over HTTP(S).
    Hls(url::Url),
    /// An SRT stream carrying MPEG-TS: `srt://host:port?mode=caller|listener`.
    Srt(url::Url),
    /// A local video file (or a local playlist).
    File(PathBuf),
}

impl SourceSpec {
    pub fn parse(input: &str) -> Result<Self, IngestError> {
        let bad = |why: &str| IngestError::BadInput {
            input: input.to_string(),
            why: why.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        match url::Url::parse(input) {
            Ok(u) => match u.scheme() {
                "http" | "https" => {
                    if u.host_str().is_none() {
                        return Err(bad("no host"));
                    }
                    Ok(Self::Hls(u))
                }
                "srt" => {
                    if u.host_str().is_none() || u.port().is_none() {
                        return Err(bad("an SRT URL needs host and port"));
                    }
                    match u.query_pairs().find(|(k, _)| k == "mode").map(|(_, v)| v.into_owned()) {
                        None => Ok(Self::Srt(u)),
                        Some(m) if m == "caller" || m == "listener" => Ok(Self::Srt(u)),
                        Some(m) => Err(bad(&format!("SRT mode `{m}` is not caller or listener"))),
                    }
                }
                "file" => u
                    .to_file_path()
                    .map(Self::File)
                    .map_err(|_| bad("not a local file URL")),
                other if other.len() == 1 => Ok(Self::File(PathBuf::from(input))), // C:\ style
                other => Err(bad(&format!("unsupported scheme `{other}`"))),
            },
            Err(_) => Ok(Self::File(PathBuf::from(input))),
        }
    }
}
