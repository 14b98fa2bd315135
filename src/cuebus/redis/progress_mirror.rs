//! Each channel's analysis progress shared through Redis, so that every process of a
//! fleet rewrites the channel's playlists the same way (`[fleet]`): the analysing process
//! writes it, the others read it. Values are opaque text (JSON made by the caller) under
//! `<p>:progress:C`, each with a time to live, so a dead analyser's progress goes away.

use super::RedisSettings;
use super::records::RedisRecords;
use crate::cuebus::BusError;

/// The progress key of `channel`.
pub fn progress_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}:progress:{channel}")
}

/// Writes and reads the progress values of channels.
pub struct RedisProgress {
    records: RedisRecords,
    prefix: String,
    ttl_ms: u64,
}

impl RedisProgress {
    /// Values live `ttl_ms` after their last write. Checks the url; Redis need not be up.
    pub fn new(settings: &RedisSettings, ttl_ms: u64) -> Result<Self, BusError> {
        let prefix = settings.key_prefix.clone();
        Ok(Self {
            records: RedisRecords::new(settings, &format!("{prefix}:progress"))?,
            prefix,
            ttl_ms: ttl_ms.max(1),
        })
    }

    /// Write each `(channel, value)` in one round trip.
    pub async fn write(&self, values: &[(String, String)]) -> Result<(), BusError> {
        if values.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, value) in values {
            pipe.cmd("SET")
                .arg(progress_key(&self.prefix, channel))
                .arg(value)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        self.records
            .run("SET progress", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// The value of each of `channels`, in order; `None`: none (or expired).
    pub async fn read(&self, channels: &[String]) -> Result<Vec<Option<String>>, BusError> {
        let keys = channels.iter().map(|c| progress_key(&self.prefix, c));
        self.records.mget(keys.collect()).await
    }
}
