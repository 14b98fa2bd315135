//! Settings: one struct tree with serde defaults, layered as embedded defaults → TOML file
//! → environment (`SHOPCUE__SECTION__KEY=value`), validated once at start-up. A bad value
//! is reported with its dotted key and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::cue::validate_channel_id;
pub use crate::ingest::settings::{ChannelSettings, IngestSettings, VariantChoice};
pub use crate::media::MediaSettings;
use crate::shots::ShotConfig;
pub use crate::telemetry::LogSettings;

/// Shortest admin key accepted at start-up: a guessable key is worse than none.
pub const MIN_ADMIN_KEY_BYTES: usize = 16;

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
    /// Where channels added at runtime are kept, and how many may run.
    pub registry: crate::registry::RegistrySettings,
    /// Analysers sharing the registry's channels with Redis leases.
    pub fleet: crate::registry::FleetSettings,
    /// Allocator upkeep: the periodic trim and the heap gauges.
    pub memory: crate::allocator::MemorySettings,
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
    /// Origins whose pages may read the read-only routes (`/hls/…`, `/v1/products/…`,
    /// the feed, the player SDK): `["*"]` for any, or exact origins
    /// (`https://shop.example`). Admin routes never answer other origins.
    pub cors_origins: Vec<String>,
    /// `/v1/status`, `/v1/status/history` and `/metrics` need the admin key too (the
    /// dashboard page then asks for it; Prometheus sends it as a bearer token).
    /// `/healthz` and `/readyz` stay open for probes.
    pub protect_ops: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_key: String::new(),
            cors_origins: vec![crate::http::cors::ANY.to_string()],
            protect_ops: false,
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if any), then `SHOPCUE__…` variables from `env`, validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let settings = Self::assemble(file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults, then `file`, then `env`, **not** validated: for a caller that applies
    /// command-line flags on top and validates the result once (`shopcue run --redis`).
    pub fn assemble(
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
        Ok(settings)
    }

    /// Load from a file and the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, std::env::vars())
    }

    /// Check every section, in order; the first error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_ingest()?;
        self.validate_media_and_log()?;
        self.validate_module_sections()?;
        self.validate_channels()
    }

    /// `[server]`: the listen address, the admin key and what it protects, CORS origins.
    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen",
                format!("`{}` is not an ip:port address", self.server.listen),
            ));
        }
        let key_len = self.server.admin_key.len();
        if key_len > 0 && key_len < MIN_ADMIN_KEY_BYTES {
            return Err(invalid(
                "server.admin_key",
                format!(
                    "is {key_len} bytes; an admin key needs at least {MIN_ADMIN_KEY_BYTES} \
                     (e.g. `openssl rand -hex 24`), or leave it empty to disable admin endpoints"
                ),
            ));
        }
        if self.server.protect_ops && key_len == 0 {
            return Err(invalid(
                "server.protect_ops",
                "needs server.admin_key: without a key nobody could read status or metrics"
                    .to_string(),
            ));
        }
        for origin in &self.server.cors_origins {
            crate::http::cors::check_origin(origin)
                .map_err(|why| invalid("server.cors_origins", why))?;
        }
        Ok(())
    }

    /// `[ingest]`: the variant choice, timeouts, back-off, size limits and stall rule.
    fn validate_ingest(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `[media]` (frame height and queue) and `[log]` (its format).
    fn validate_media_and_log(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The sections whose modules check their own settings; an error is named with the
    /// section's key.
    fn validate_module_sections(&self) -> Result<(), ConfigError> {
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
        self.registry
            .validate(&self.redis)
            .map_err(|(k, why)| invalid(&format!("registry.{k}"), why))?;
        self.fleet
            .validate(self.registry.store == crate::registry::STORE_REDIS)
            .map_err(|(k, why)| invalid(&format!("fleet.{k}"), why))?;
        self.memory
            .validate()
            .map_err(|(k, why)| invalid(&format!("memory.{k}"), why))?;
        Ok(())
    }

    /// `[[channels]]`: at most `registry.max_channels`, each valid, ids unique.
    fn validate_channels(&self) -> Result<(), ConfigError> {
        if self.channels.len() > self.registry.max_channels {
            return Err(invalid(
                "channels",
                format!(
                    "{} channels, more than registry.max_channels ({})",
                    self.channels.len(),
                    self.registry.max_channels
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (n, c) in self.channels.iter().enumerate() {
            let key = format!("channels[{n}]");
            c.validate()
                .map_err(|(field, why)| invalid(&format!("{key}.{field}"), why))?;
            if !seen.insert(c.id.as_str()) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("duplicate channel id `{}`", c.id),
                ));
            }
        }
        Ok(())
    }
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

    /// `config/shopcue.toml` documents every key with its default: loaded, each section
    /// equals the defaults its module declares.
    #[test]
    fn shipped_config_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shopcue.toml");
        let s = Settings::load(Some(&path), env(&[])).unwrap();
        let shipped = toml::Value::try_from(&s).unwrap();
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        let (shipped, defaults) = (shipped.as_table().unwrap(), defaults.as_table().unwrap());
        for (section, want) in defaults {
            assert_eq!(shipped.get(section), Some(want), "section [{section}]");
        }
        assert_eq!(shipped.len(), defaults.len());
    }

    #[test]
    fn matching_keys_load_and_are_named() {
        let s = Settings::load(
            None,
            env(&[("SHOPCUE__MATCHING__DENY_CLASSES", r#"["person","chair"]"#)]),
        )
        .unwrap();
        assert_eq!(s.matching.deny_classes, vec!["person", "chair"]);
        let err =
            Settings::load(None, env(&[("SHOPCUE__MATCHING__INTERVAL_MS", "0")])).unwrap_err();
        assert!(err.to_string().contains("`matching.interval_ms`"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_keeps_types() {
        let s = Settings::load(
            None,
            env(&[
                ("SHOPCUE__INGEST__VARIANT", "highest"),
                ("SHOPCUE__INGEST__SEGMENT_ATTEMPTS", "5"),
                ("SHOPCUE__INGEST__STALL_TARGET_DURATIONS", "4"),
                ("SHOPCUE__SERVER__ADMIN_KEY", "0123456789abcdef"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.ingest.variant, "highest");
        assert_eq!(s.ingest.segment_attempts, 5);
        assert_eq!(s.ingest.stall_target_durations, 4.0);
        assert_eq!(s.server.admin_key, "0123456789abcdef");
        let short = Settings::load(None, env(&[("SHOPCUE__SERVER__ADMIN_KEY", "12345")]));
        let e = short.unwrap_err().to_string();
        assert!(
            e.contains("server.admin_key") && e.contains("5 bytes"),
            "{e}"
        );
        let locked = Settings::load(None, env(&[("SHOPCUE__SERVER__PROTECT_OPS", "true")]));
        let e = locked.unwrap_err().to_string();
        assert!(
            e.contains("server.protect_ops") && e.contains("admin_key"),
            "{e}"
        );
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
