//! Settings: one struct tree with serde defaults, layered as embedded defaults → TOML file
//! → environment (`SHOPCUE__SECTION__KEY=value`), validated once at start-up. A bad value
//! is reported with its dotted key and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shots::ShotConfig;

/// Prefix of environment overrides: `SHOPCUE__INGEST__VARIANT=highest`.
pub const ENV_PREFIX: &str = "SHOPCUE__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {why}")]
    Env { var: String, why: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: String, why: String },
}

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        why: why.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub ingest: IngestSettings,
    pub media: MediaSettings,
    pub shots: ShotConfig,
    pub matching: crate::matching::MatchingSettings,
    pub log: LogSettings,
    pub manifest: crate::manifest::ManifestSettings,
    pub bus: crate::cuebus::BusSettings,
    pub redis: crate::cuebus::RedisSettings,
    pub feed: crate::http::feed::FeedSettings,
    pub inference: crate::inference::InferenceSettings,
    pub catalog: crate::catalog::CatalogSettings,
    /// Channels to analyse: `[[channels]] id = "news" url = "https://…/master.m3u8"`.
    pub channels: Vec<ChannelSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the sidecar's HTTP server listens on.
    pub listen: String,
    /// Key required (header `x-api-key` or bearer token) by admin endpoints. Empty: admin
    /// endpoints are refused.
    pub admin_key: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_key: String::new(),
        }
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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Height of the frames handed to analysis; the width follows the display aspect.
    pub analysis_height: u32,
    /// Folder with pipeline descriptions that replace the built-in ones (empty: built-in).
    pub pipelines_dir: String,
    /// Frames a channel's decoder may hold ahead of analysis before it waits.
    pub frame_queue: usize,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            analysis_height: 360,
            pipelines_dir: String::new(),
            frame_queue: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,shopcue=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub id: String,
    pub url: String,
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

impl Settings {
    /// Defaults, then `file` (if any), then `SHOPCUE__…` variables from `env`, validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = toml::Value::try_from(Settings::default()).expect("defaults serialise");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let value: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut tree, value);
        }
        for (var, raw) in env {
            let Some(path) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(|k| k.is_empty()) {
                return Err(ConfigError::Env {
                    var,
                    why: "empty key segment".into(),
                });
            }
            set_path(&mut tree, &keys, parse_scalar(&raw)).map_err(|why| ConfigError::Env {
                var: var.clone(),
                why,
            })?;
        }
        let settings: Settings = tree.try_into().map_err(|e: toml::de::Error| {
            let message = e.message().to_string();
            ConfigError::Parse {
                path: file
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| "<environment>".into()),
                message,
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Load from a file and the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, std::env::vars())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen",
                format!("`{}` is not an ip:port address", self.server.listen),
            ));
        }
        self.ingest
            .variant
            .parse::<VariantChoice>()
            .map_err(|why| invalid("ingest.variant", why))?;
        let i = &self.ingest;
        for (key, v) in [
            ("ingest.playlist_timeout_ms", i.playlist_timeout_ms),
            ("ingest.segment_timeout_ms", i.segment_timeout_ms),
            ("ingest.retry_initial_ms", i.retry_initial_ms),
            ("ingest.retry_max_ms", i.retry_max_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if i.retry_max_ms < i.retry_initial_ms {
            return Err(invalid(
                "ingest.retry_max_ms",
                "must be at least ingest.retry_initial_ms",
            ));
        }
        if i.max_playlist_bytes < 1024 {
            return Err(invalid(
                "ingest.max_playlist_bytes",
                "must be at least 1024",
            ));
        }
        if i.max_segment_bytes < 4096 {
            return Err(invalid("ingest.max_segment_bytes", "must be at least 4096"));
        }
        if i.segment_attempts == 0 {
            return Err(invalid("ingest.segment_attempts", "must be at least 1"));
        }
        if i.stall_target_durations.is_nan() || i.stall_target_durations < 1.0 {
            return Err(invalid(
                "ingest.stall_target_durations",
                "must be at least 1",
            ));
        }
        let h = self.media.analysis_height;
        if !(16..=2160).contains(&h) || !h.is_multiple_of(2) {
            return Err(invalid(
                "media.analysis_height",
                "must be an even number from 16 to 2160",
            ));
        }
        if self.media.frame_queue == 0 {
            return Err(invalid("media.frame_queue", "must be at least 1"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be `text` or `json`"));
        }
        self.shots
            .validate()
            .map_err(|(k, why)| invalid(&format!("shots.{k}"), why))?;
        if let Err(e) = self.matching.validate() {
            return Err(invalid(&format!("matching.{}", e.key()), e.reason()));
        }
        self.manifest
            .validate()
            .map_err(|(k, why)| invalid(&format!("manifest.{k}"), why))?;
        self.bus
            .validate()
            .map_err(|(k, why)| invalid(&format!("bus.{k}"), why))?;
        self.redis
            .validate()
            .map_err(|(k, why)| invalid(&format!("redis.{k}"), why))?;
        self.feed
            .validate()
            .map_err(|(k, why)| invalid(&format!("feed.{k}"), why))?;
        self.inference
            .validate()
            .map_err(|(k, why)| invalid(&format!("inference.{k}"), why))?;
        self.catalog
            .validate()
            .map_err(|(k, why)| invalid(&format!("catalog.{k}"), why))?;
        let mut seen = std::collections::HashSet::new();
        for (n, c) in self.channels.iter().enumerate() {
            let key = format!("channels[{n}]");
            validate_channel_id(&c.id).map_err(|why| invalid(&format!("{key}.id"), why))?;
            if !seen.insert(c.id.as_str()) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("duplicate channel id `{}`", c.id),
                ));
            }
            crate::ingest::SourceSpec::parse(&c.url)
                .map_err(|e| invalid(&format!("{key}.url"), e.to_string()))?;
        }
        Ok(())
    }
}

/// Channel ids appear in URLs and metric labels: keep them to a safe alphabet.
pub fn validate_channel_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("`{id}` may only hold letters, digits, `-` and `_`"));
    }
    Ok(())
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn parse_scalar(raw: &str) -> toml::Value {
    if let Ok(v) = raw.parse::<i64>() {
        return toml::Value::Integer(v);
    }
    if let Ok(v) = raw.parse::<f64>() {
        return toml::Value::Float(v);
    }
    if let Ok(v) = raw.parse::<bool>() {
        return toml::Value::Boolean(v);
    }
    // Arrays and tables may be given as TOML: SHOPCUE__CHANNELS='[{id="a",url="…"}]'.
    if (raw.starts_with('[') || raw.starts_with('{'))
        && let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        && let Some(v) = t.get("v")
    {
        return v.clone();
    }
    toml::Value::String(raw.to_string())
}

fn set_path(tree: &mut toml::Value, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut node = tree;
    for k in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` is not a section"))?;
        node = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| format!("`{last}` has no parent section"))?;
    // Keep the type of a known key: "8080" for a string field stays a string.
    let value = match (table.get(last), value) {
        (Some(toml::Value::String(_)), v) if !v.is_str() => toml::Value::String(scalar_text(&v)),
        (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (_, v) => v,
    };
    table.insert(last.clone(), value);
    Ok(())
}

fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_validate() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn shipped_config_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shopcue.toml");
        let s = Settings::load(Some(&path), env(&[])).unwrap();
        assert_eq!(s.ingest.variant, "closest:720");
    }

    #[test]
    fn env_overrides_file_and_keeps_types() {
        let s = Settings::load(
            None,
            env(&[
                ("SHOPCUE__INGEST__VARIANT", "highest"),
                ("SHOPCUE__INGEST__SEGMENT_ATTEMPTS", "5"),
                ("SHOPCUE__INGEST__STALL_TARGET_DURATIONS", "4"),
                ("SHOPCUE__SERVER__ADMIN_KEY", "12345"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.ingest.variant, "highest");
        assert_eq!(s.ingest.segment_attempts, 5);
        assert_eq!(s.ingest.stall_target_durations, 4.0);
        assert_eq!(s.server.admin_key, "12345");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load(None, env(&[("SHOPCUE__INGEST__VARIANT", "biggest")])).unwrap_err();
        assert!(e.to_string().contains("ingest.variant"), "{e}");
        let e = Settings::load(None, env(&[("SHOPCUE__MEDIA__ANALYSIS_HEIGHT", "7")])).unwrap_err();
        assert!(e.to_string().contains("media.analysis_height"), "{e}");
        let e = Settings::load(None, env(&[("SHOPCUE__INGEST__NO_SUCH", "1")])).unwrap_err();
        assert!(e.to_string().contains("no_such"), "{e}");
        let e = Settings::load(
            None,
            env(&[(
                "SHOPCUE__CHANNELS",
                r#"[{id="a b", url="http://127.0.0.1/x.m3u8"}]"#,
            )]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("channels[0].id"), "{e}");
    }

    #[test]
    fn channels_from_env_as_toml() {
        let s = Settings::load(
            None,
            env(&[(
                "SHOPCUE__CHANNELS",
                r#"[{id="a", url="http://127.0.0.1/a.m3u8"}, {id="b", url="srt://127.0.0.1:9000?mode=listener"}]"#,
            )]),
        )
        .unwrap();
        assert_eq!(s.channels.len(), 2);
        let e = Settings::load(
            None,
            env(&[(
                "SHOPCUE__CHANNELS",
                r#"[{id="a", url="http://x/a.m3u8"}, {id="a", url="http://x/b.m3u8"}]"#,
            )]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn variant_choice_parses() {
        assert_eq!("closest:720".parse(), Ok(VariantChoice::ClosestHeight(720)));
        assert_eq!("highest".parse(), Ok(VariantChoice::Highest));
        assert_eq!(
            "bandwidth:800000".parse(),
            Ok(VariantChoice::Bandwidth(800_000))
        );
        assert!("closest:x".parse::<VariantChoice>().is_err());
    }
}
