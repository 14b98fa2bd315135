//! The channel registry's storage (`[registry]`): the channels added, changed and removed
//! at runtime (`/v1/channels`, `shopcue channels`), kept so that they survive a restart.
//!
//! Where: `registry.store = ""` keeps them in memory only (the default: what a benchmark
//! or a test that starts many sidecars wants); `"redis"` in the Redis hash
//! `<redis.key_prefix>:channels` (one JSON value per channel id) of `redis.url`; any other
//! value is the path of a JSON file, rewritten whole (temp file, then rename) on each
//! change.
//!
//! Seeding: the `[[channels]]` of the settings are added when absent, the stored registry
//! wins otherwise (a stored channel keeps its stored URL). Each config channel seeds once:
//! its id is remembered, so a config channel removed through the API stays removed after
//! a restart (a new config channel is still added).

pub mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cuebus::RedisSettings;
use crate::cuebus::redis::records::RedisRecords;
use crate::ingest::settings::ChannelSettings;

pub use fleet::FleetSettings;

/// `registry.store` value that keeps the registry in Redis.
pub const STORE_REDIS: &str = "redis";
/// Largest registry file read at start-up.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// `""` (memory only), `"redis"`, or the path of a JSON file.
    pub store: String,
    /// Most channels one process runs; a channel added beyond it is refused (409).
    pub max_channels: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            store: String::new(),
            max_channels: 256,
        }
    }
}

impl RegistrySettings {
    /// `Err((key, why))` with the key relative to `[registry]`.
    pub fn validate(&self, redis: &RedisSettings) -> Result<(), (&'static str, String)> {
        if !(1..=10_000).contains(&self.max_channels) {
            return Err(("max_channels", "must be from 1 to 10000".into()));
        }
        if self.store == STORE_REDIS && redis.url.trim().is_empty() {
            return Err(("store", "`redis` needs redis.url".into()));
        }
        if self.store.trim() != self.store {
            return Err(("store", "must not start or end with spaces".into()));
        }
        Ok(())
    }
}

/// What the registry refuses, and why; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("channel {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("no channel `{0}`")]
    NotFound(String),
    #[error("at most {0} channels (registry.max_channels)")]
    Full(usize),
    #[error("channel registry ({store}) {op}: {why}")]
    Store {
        store: String,
        op: &'static str,
        why: String,
    },
    #[error("the sidecar is shutting down")]
    ShuttingDown,
    #[error("channel `{id}` cannot be served: {why}")]
    Start { id: String, why: String },
}

impl RegistryError {
    /// The validation of the settings file's channels, as the registry's error.
    pub fn check(c: &ChannelSettings) -> Result<(), Self> {
        c.validate()
            .map_err(|(field, why)| Self::Invalid { field, why })
    }
}

/// What a store holds: the channels by id, and the config ids that have seeded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub channels: BTreeMap<String, ChannelSettings>,
    #[serde(default)]
    pub seeded: BTreeSet<String>,
}

impl Stored {
    /// The config channels not yet seeded and absent, added; their ids remembered. Returns
    /// the ids newly seeded (what a store must record).
    pub fn seed(&mut self, config: &[ChannelSettings]) -> Vec<String> {
        let mut new = Vec::new();
        for c in config {
            if self.seeded.insert(c.id.clone()) {
                self.channels
                    .entry(c.id.clone())
                    .or_insert_with(|| c.clone());
                new.push(c.id.clone());
            }
        }
        new
    }
}

/// Where the registry is kept.
pub enum Store {
    Memory,
    File(PathBuf),
    Redis(Box<RedisRecords>),
}

impl Store {
    pub fn open(settings: &RegistrySettings, redis: &RedisSettings) -> Result<Self, RegistryError> {
        match settings.store.as_str() {
            "" => Ok(Self::Memory),
            STORE_REDIS => {
                let key = format!("{}:channels", redis.key_prefix);
                RedisRecords::new(redis, &key)
                    .map(|r| Self::Redis(Box::new(r)))
                    .map_err(|e| store_error("redis", "open", e))
            }
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }

    /// How the store is named in errors and logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "memory".into(),
            Self::File(p) => p.display().to_string(),
            Self::Redis(r) => format!("redis hash {}", r.key()),
        }
    }

    /// What is stored (nothing yet: empty).
    pub async fn load(&self) -> Result<Stored, RegistryError> {
        match self {
            Self::Memory => Ok(Stored::default()),
            Self::File(path) => read_file(path),
            Self::Redis(r) => {
                let (all, seeded) = r.load().await.map_err(|e| self.error("load", e))?;
                let mut channels = BTreeMap::new();
                for (id, json) in all {
                    match serde_json::from_str::<ChannelSettings>(&json) {
                        Ok(c) if c.id == id && c.validate().is_ok() => {
                            channels.insert(id, c);
                        }
                        _ => {
                            tracing::warn!(channel = %id, key = %r.key(), "registry: a stored channel is not valid; skipped")
                        }
                    }
                }
                Ok(Stored { channels, seeded })
            }
        }
    }

    /// Record `c` (added or changed); `all` is the whole registry after the change (what a
    /// file store writes).
    pub async fn put(&self, c: &ChannelSettings, all: &Stored) -> Result<(), RegistryError> {
        match self {
            Self::Memory => Ok(()),
            Self::File(path) => write_file(path, all),
            Self::Redis(r) => self.put_redis(r, c).await,
        }
    }

    /// Forget channel `id`; `all` is the registry after the change.
    pub async fn remove(&self, id: &str, all: &Stored) -> Result<(), RegistryError> {
        match self {
            Self::Memory => Ok(()),
            Self::File(path) => write_file(path, all),
            Self::Redis(r) => r.remove(id).await.map_err(|e| self.error("remove", e)),
        }
    }

    /// Record a seeding: the channels of `ids` and the seeded ids.
    pub async fn seeded(&self, ids: &[String], all: &Stored) -> Result<(), RegistryError> {
        match self {
            Self::Memory => Ok(()),
            Self::File(path) => write_file(path, all),
            Self::Redis(r) => {
                for c in ids.iter().filter_map(|id| all.channels.get(id)) {
                    self.put_redis(r, c).await?;
                }
                r.mark(ids).await.map_err(|e| self.error("seed", e))
            }
        }
    }

    async fn put_redis(&self, r: &RedisRecords, c: &ChannelSettings) -> Result<(), RegistryError> {
        let json = serde_json::to_string(c).map_err(|e| self.error("encode", e))?;
        r.put(&c.id, &json).await.map_err(|e| self.error("put", e))
    }

    fn error(&self, op: &'static str, e: impl std::fmt::Display) -> RegistryError {
        store_error(&self.describe(), op, e)
    }
}

fn store_error(store: &str, op: &'static str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store {
        store: store.to_string(),
        op,
        why: e.to_string(),
    }
}

/// The file's registry; a missing file is an empty one. Invalid channels are skipped.
fn read_file(path: &Path) -> Result<Stored, RegistryError> {
    let err = |op, e: &dyn std::fmt::Display| store_error(&path.display().to_string(), op, e);
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(e) => return Err(err("read", &e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(err("read", &format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read(path).map_err(|e| err("read", &e))?;
    let mut stored: Stored = serde_json::from_slice(&text).map_err(|e| err("parse", &e))?;
    stored.channels.retain(|id, c| {
        let ok = c.id == *id && c.validate().is_ok();
        if !ok {
            tracing::warn!(channel = %id, file = %path.display(), "registry: a stored channel is not valid; skipped");
        }
        ok
    });
    Ok(stored)
}

/// Write the whole registry: a temp file in the same folder, then a rename, so a crash
/// leaves the old file or the new one, never half of one.
fn write_file(path: &Path, all: &Stored) -> Result<(), RegistryError> {
    use std::io::Write;
    let err = |op, e: &dyn std::fmt::Display| store_error(&path.display().to_string(), op, e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| err("create folder", &e))?;
    let json = serde_json::to_vec_pretty(all).map_err(|e| err("encode", &e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| err("write", &e))?;
    tmp.write_all(&json).map_err(|e| err("write", &e))?;
    tmp.as_file().sync_all().map_err(|e| err("write", &e))?;
    tmp.persist(path).map_err(|e| err("rename", &e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, url: &str) -> ChannelSettings {
        ChannelSettings {
            id: id.into(),
            url: url.into(),
        }
    }

    #[test]
    fn config_channels_seed_once_and_the_store_wins() {
        let mut s = Stored::default();
        let config = [ch("a", "http://h/a.m3u8"), ch("b", "http://h/b.m3u8")];
        assert_eq!(s.seed(&config), vec!["a".to_string(), "b".to_string()]);
        // Changed and removed through the API…
        s.channels.insert("a".into(), ch("a", "http://h/new.m3u8"));
        s.channels.remove("b");
        // …and the next start keeps both changes; a new config channel is added.
        let config = [
            ch("a", "http://h/a.m3u8"),
            ch("b", "http://h/b.m3u8"),
            ch("c", "http://h/c.m3u8"),
        ];
        assert_eq!(s.seed(&config), vec!["c".to_string()]);
        assert_eq!(s.channels["a"].url, "http://h/new.m3u8");
        assert!(!s.channels.contains_key("b"));
        assert!(s.channels.contains_key("c"));
    }

    #[test]
    fn the_file_store_round_trips_and_skips_invalid_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/channels.json");
        assert_eq!(read_file(&path).unwrap(), Stored::default());
        let mut s = Stored::default();
        s.seed(&[ch("a", "http://h/a.m3u8")]);
        write_file(&path, &s).unwrap();
        assert_eq!(read_file(&path).unwrap(), s);
        std::fs::write(
            &path,
            r#"{"channels":{"ok":{"id":"ok","url":"http://h/x.m3u8"},"bad id":{"id":"bad id","url":"http://h/y"},"x":{"id":"y","url":"http://h/z"}}}"#,
        )
        .unwrap();
        let s = read_file(&path).unwrap();
        assert_eq!(s.channels.keys().collect::<Vec<_>>(), vec!["ok"]);
        std::fs::write(&path, "not json").unwrap();
        let e = read_file(&path).unwrap_err().to_string();
        assert!(e.contains("parse") && e.contains("channels.json"), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        let redis = RedisSettings::default();
        assert!(RegistrySettings::default().validate(&redis).is_ok());
        let s = RegistrySettings {
            store: STORE_REDIS.into(),
            ..RegistrySettings::default()
        };
        assert_eq!(s.validate(&redis).unwrap_err().0, "store");
        let s = RegistrySettings {
            max_channels: 0,
            ..RegistrySettings::default()
        };
        assert_eq!(s.validate(&redis).unwrap_err().0, "max_channels");
    }
}
