//! Small records kept in Redis beside the cue streams: a hash of JSON values by id, and a
//! set of ids (the channel registry keeps its channels and its seeded ids this way). The
//! `redis` crate stays inside the bus; callers see strings and [`BusError`]s.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::{RedisSettings, redact};
use crate::cuebus::BusError;

/// A hash `key` (field: id, value: JSON text) and a set `<key>:seeded`, on the Redis of
/// `redis.url`. One shared connection, opened on demand and dropped after an error.
pub struct RedisRecords {
    client: redis::Client,
    key: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisRecords {
    /// Check the url; Redis need not be up yet.
    pub fn new(settings: &RedisSettings, key: &str) -> Result<Self, BusError> {
        let url = settings.url.trim();
        let client = redis::Client::open(url).map_err(|e| BusError::BadUrl {
            url: redact(url),
            why: e.to_string(),
        })?;
        Ok(Self {
            client,
            key: key.to_string(),
            timeout: Duration::from_millis(settings.timeout_ms),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The hash's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn seeded_key(&self) -> String {
        format!("{}:seeded", self.key)
    }

    fn error(&self, op: &'static str, e: impl std::fmt::Display) -> BusError {
        BusError::Redis {
            op,
            channel: self.key.clone(),
            why: e.to_string(),
        }
    }

    async fn conn(&self) -> Result<MultiplexedConnection, BusError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error("connect", e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Run one command; a failed one drops the connection so the next call reconnects.
    pub(super) async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, BusError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(self.error(op, e))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(self.error(op, format!("no answer within {:?}", self.timeout)))
            }
        }
    }

    /// The values of `keys` (any keys, not the hash's fields), in order; `None`: absent.
    pub async fn mget(&self, keys: Vec<String>) -> Result<Vec<Option<String>>, BusError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run("MGET", |mut c| async move {
            redis::cmd("MGET").arg(keys).query_async(&mut c).await
        })
        .await
    }

    /// Every `(id, value)` of the hash, and the ids of the set.
    pub async fn load(&self) -> Result<(Vec<(String, String)>, BTreeSet<String>), BusError> {
        let key = self.key.clone();
        let all: Vec<(String, String)> = self
            .run("HGETALL", |mut c| async move { c.hgetall(key).await })
            .await?;
        let key = self.seeded_key();
        let seeded: BTreeSet<String> = self
            .run("SMEMBERS", |mut c| async move { c.smembers(key).await })
            .await?;
        Ok((all, seeded))
    }

    pub async fn put(&self, id: &str, value: &str) -> Result<(), BusError> {
        let (key, id, value) = (self.key.clone(), id.to_string(), value.to_string());
        self.run("HSET", |mut c| async move { c.hset(key, id, value).await })
            .await
    }

    pub async fn remove(&self, id: &str) -> Result<(), BusError> {
        let (key, id) = (self.key.clone(), id.to_string());
        self.run("HDEL", |mut c| async move { c.hdel(key, id).await })
            .await
    }

    /// Add `ids` to the set (nothing to do when empty).
    pub async fn mark(&self, ids: &[String]) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (key, ids) = (self.seeded_key(), ids.to_vec());
        self.run("SADD", |mut c| async move { c.sadd(key, ids).await })
            .await
    }
}
