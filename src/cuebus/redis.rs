//! The Redis Streams bus: the only module that touches the `redis` crate.
//!
//! Layout, per channel `C` (prefix `redis.key_prefix`, default `shopcue`):
//! - `shopcue:cues:C`: a stream, one entry per event, field `e` = the event's JSON
//!   (`{"type":"start","cue":{…}}`) and field `w` = `<writer id>:<sequence>` (which bus
//!   wrote it, for exactly-once retries), trimmed with `XADD … MAXLEN bus.history`. The
//!   entry ids are the offsets.
//! - `shopcue:active:C`: a hash, cue id → cue JSON, for cues started and not ended. It is
//!   written by the same atomic Lua script as the XADD, so a snapshot (`HGETALL` + the
//!   stream's last id, read in one MULTI) is exactly the state as of that id.
//!
//! Publishing: `publish` puts the event in an outbox (bounded by `redis.outage_buffer`;
//! when full the OLDEST event is dropped, counted in `dropped` and logged) and one writer
//! task drains it in order, in batches of `redis.batch` split by channel (see [`writer`]).
//! While Redis is unreachable the writer retries with exponential back-off
//! (`redis.retry_initial_ms` doubling up to `redis.retry_max_ms`) and logs the outage once
//! when it starts and once when it ends. Delivery is exactly once per bus: a batch whose
//! reply is lost is sent again and the script skips what it already wrote. A channel whose
//! keys hold the wrong type is refused for good: its events are dropped, counted in
//! `rejected`, its error kept ([`RedisBus::rejection`]) and logged, and nothing waits on
//! it.
//!
//! Reading: one task per subscribed channel per process (`XREAD BLOCK` on its own
//! connection) feeds a local broadcast, so ten thousand WebSocket clients cost one Redis
//! reader. It resumes from its last id after an error. The task ends when the channel has
//! had no subscriber for one block interval. Each reader holds its own connection, so
//! readers are bounded by whoever subscribes: the WebSocket feed serves at most
//! `feed.max_channels` channels at once (any channel id a client asks for would otherwise
//! open one).
//!
//! Limits: a cue whose End was never published stays in the active hash (until an End for
//! it or the key is deleted). A reader that falls more than `bus.history` entries behind
//! (more than that many events between two XREADs) silently misses the trimmed ones: not
//! detected yet (XINFO's max-deleted-entry-id could tell). Redis restarted without persistence loses the streams and
//! hashes: clients resuming with an old offset get a fresh snapshot instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::{
    BusError, BusSettings, BusStats, CueBus, CueRecord, LIVE_CAPACITY, Offset, Replay, Snapshot,
};
use crate::cue::{Cue, CueEvent};

pub mod lease;
pub mod progress_mirror;
pub mod records;
mod writer;

/// `[redis]`: the Redis Streams bus. An empty `url` means the in-memory bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db` (or `rediss://…`); empty: no Redis, cues stay in-process.
    pub url: String,
    /// Prefix of the keys the bus writes: `<prefix>:cues:<channel>`, `<prefix>:active:<channel>`.
    pub key_prefix: String,
    /// Events kept while Redis is unreachable; when full the oldest is dropped and counted.
    pub outage_buffer: usize,
    /// Events taken from the outbox per write round (one script call per channel in it).
    pub batch: usize,
    /// Connect and reply timeout for ordinary commands.
    pub timeout_ms: u64,
    /// How long a reader's `XREAD BLOCK` waits before it loops (checks for shutdown).
    pub block_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "shopcue".into(),
            outage_buffer: 100_000,
            batch: 256,
            timeout_ms: 2_000,
            block_ms: 2_000,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
        }
    }
}

impl RedisSettings {
    /// `Err((key, why))` with the key relative to `[redis]`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = self.url.trim();
        if !url.is_empty()
            && let Err(e) = redis::Client::open(url)
        {
            return Err(("url", format!("not a redis url: {e}")));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(("key_prefix", "must be non-empty without spaces".into()));
        }
        for (key, v) in [
            ("outage_buffer", self.outage_buffer as u64),
            ("batch", self.batch as u64),
            ("timeout_ms", self.timeout_ms),
            ("block_ms", self.block_ms),
            ("retry_initial_ms", self.retry_initial_ms),
            ("retry_max_ms", self.retry_max_ms),
        ] {
            if v == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err((
                "retry_max_ms",
                "must be at least redis.retry_initial_ms".into(),
            ));
        }
        Ok(())
    }
}

/// The Redis Streams [`CueBus`]. Dropping it stops its tasks (unflushed events are lost:
/// call [`CueBus::flush`] first on shutdown).
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// The url without its password, for logs.
    url: String,
    prefix: String,
    history: usize,
    settings: RedisSettings,
    outbox: Mutex<Outbox>,
    /// Wakes the writer when an event is queued.
    wake: Notify,
    /// Tells `flush` waiters that the writer made progress.
    progress: Notify,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    readers: tokio::sync::Mutex<HashMap<String, broadcast::Sender<Arc<CueRecord>>>>,
    published: AtomicU64,
    stored: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    healthy: AtomicBool,
    shutdown: CancellationToken,
    /// Random per bus: tags its stream entries so a retry can tell what it already wrote.
    writer_id: String,
    /// Events Redis refused for good (dropped, not retried), and the current refusal of
    /// each channel that has one.
    rejected: AtomicU64,
    faults: Mutex<HashMap<String, BusError>>,
    last_rejection: Mutex<Option<String>>,
    /// Fleet fencing: `None` until [`CueBus::fence`] is first called; then the lease
    /// holder of each channel this process holds.
    fences: Mutex<Option<HashMap<String, String>>>,
    /// Events refused by fencing.
    fenced: AtomicU64,
}

enum Q<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

#[derive(Default)]
struct Outbox {
    items: VecDeque<(u64, CueEvent)>,
    next_seq: u64,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

impl RedisBus {
    /// Check the url and start the writer; Redis need not be up yet.
    pub fn connect(bus: &BusSettings, settings: &RedisSettings) -> Result<Arc<Self>, BusError> {
        let url = settings.url.trim().to_string();
        let client = redis::Client::open(url.as_str()).map_err(|e| BusError::BadUrl {
            url: redact(&url),
            why: e.to_string(),
        })?;
        let inner = Arc::new(Inner {
            client,
            url: redact(&url),
            prefix: settings.key_prefix.clone(),
            history: bus.history.max(1),
            settings: settings.clone(),
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            progress: Notify::new(),
            conn: tokio::sync::Mutex::new(None),
            readers: tokio::sync::Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            writer_id: format!("{:016x}", rand::random::<u64>()),
            rejected: AtomicU64::new(0),
            faults: Mutex::new(HashMap::new()),
            last_rejection: Mutex::new(None),
            fences: Mutex::new(None),
            fenced: AtomicU64::new(0),
        });
        tokio::spawn(writer::run(inner.clone()));
        Ok(Arc::new(Self { inner }))
    }

    /// Why Redis refuses `channel`'s events, while it does (the last write of the channel
    /// was refused for good: for example its stream key holds a string). `None` once a
    /// write of the channel succeeds again.
    pub fn rejection(&self, channel: &str) -> Option<BusError> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .cloned()
    }
}

impl Inner {
    fn stream_key(&self, channel: &str) -> String {
        format!("{}:cues:{channel}", self.prefix)
    }
    fn active_key(&self, channel: &str) -> String {
        format!("{}:active:{channel}", self.prefix)
    }
    fn lease_key(&self, channel: &str) -> String {
        lease::lease_key(&self.prefix, channel)
    }
    /// What a write of `channel` must carry: `""` when not fencing; else this process's
    /// lease holder of it, or `-` (matches no lease) when it holds none.
    fn fence_of(&self, channel: &str) -> String {
        match &*self.fences.lock().unwrap_or_else(|p| p.into_inner()) {
            None => String::new(),
            Some(map) => map.get(channel).cloned().unwrap_or_else(|| "-".into()),
        }
    }
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    async fn open(&self, response_timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The shared connection for ordinary commands, opened on demand.
    async fn conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.open(self.timeout()).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forget the shared connection after an error, so the next call reconnects.
    async fn drop_conn(&self) {
        *self.conn.lock().await = None;
    }

    /// Run a command or a MULTI on the shared connection; a broken connection is dropped
    /// so the next call reconnects.
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        channel: &str,
        q: Q<'_>,
    ) -> Result<T, BusError> {
        let fail = |e: redis::RedisError| BusError::Redis {
            op,
            channel: channel.to_string(),
            why: e.to_string(),
        };
        let mut conn = self.conn().await.map_err(fail)?;
        let result = match q {
            Q::Cmd(c) => c.query_async(&mut conn).await,
            Q::Pipe(p) => p.query_async(&mut conn).await,
        };
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.drop_conn().await;
                }
                Err(fail(e))
            }
        }
    }

    fn outbox_len(&self) -> usize {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .items
            .len()
    }

    /// Take these events out of the outbox (written or refused). They are all among its
    /// first `redis.batch` entries, at or below the highest of them.
    fn remove_from_outbox(&self, done: &HashSet<u64>) {
        let Some(&last) = done.iter().max() else {
            return;
        };
        let mut ob = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let head = ob.items.iter().take_while(|(s, _)| *s <= last).count();
        let kept: Vec<_> = ob
            .items
            .drain(..head)
            .filter(|(s, _)| !done.contains(s))
            .collect();
        for item in kept.into_iter().rev() {
            ob.items.push_front(item);
        }
    }

    /// Redis refused `n` events of `channel` for good: count them and keep the error as
    /// the channel's fault, logged when it starts or changes.
    fn reject(&self, channel: &str, n: usize, error: BusError) {
        let total = self.rejected.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let message = error.to_string();
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let new = faults
            .get(channel)
            .is_none_or(|old| old.to_string() != message);
        if new {
            tracing::error!(channel = %channel, events = n, rejected_total = total, error = %message, "cue bus: redis refuses this channel's cue events; dropping them (not retried)");
        } else {
            tracing::debug!(channel = %channel, events = n, rejected_total = total, "cue bus: redis still refuses this channel's cue events");
        }
        faults.insert(channel.to_string(), error);
    }

    /// A write of `channel` went through: its fault, if any, is over.
    fn clear_fault(&self, channel: &str) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if faults.remove(channel).is_some() {
            tracing::info!(channel = %channel, "cue bus: redis accepts this channel's cue events again");
        }
    }
}

/// One channel's reader: XREAD BLOCK from `last` on, into the local broadcast.
async fn reader(
    inner: Arc<Inner>,
    channel: String,
    last: Offset,
    tx: broadcast::Sender<Arc<CueRecord>>,
) {
    let backoff = Duration::from_millis(inner.settings.retry_initial_ms);
    let mut r = StreamReader {
        key: inner.stream_key(&channel),
        inner,
        channel,
        last,
        tx,
        backoff,
        conn: None,
        failing: false,
    };
    // Both ends (idle, or shut down) only stop it.
    let _ = r.run().await;
}

/// The bus is shutting down.
struct ShutDown;

/// The state of one channel's [`reader`].
struct StreamReader {
    inner: Arc<Inner>,
    channel: String,
    key: String,
    /// The offset of the last entry read.
    last: Offset,
    tx: broadcast::Sender<Arc<CueRecord>>,
    /// The next pause after a failure.
    backoff: Duration,
    conn: Option<MultiplexedConnection>,
    /// A failure was reported and nothing worked since.
    failing: bool,
}

impl StreamReader {
    /// Read until nobody listens (`Ok`) or the bus shuts down; a lost connection is
    /// opened again, with back-off.
    async fn run(&mut self) -> Result<(), ShutDown> {
        let block = self.inner.settings.block_ms;
        loop {
            if self.idle().await {
                return Ok(());
            }
            let mut c = match self.conn.take() {
                Some(c) => c,
                None => match self
                    .inner
                    .open(Duration::from_millis(block) + self.inner.timeout())
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        if self.first_failure() {
                            tracing::warn!(channel = %self.channel, url = %crate::redact::redact_url(&self.inner.url), error = %e, "cue bus: redis reader cannot connect; retrying");
                        }
                        self.pause().await?;
                        continue;
                    }
                },
            };
            match self.read(&mut c, block).await? {
                Ok(v) => {
                    if self.failing {
                        tracing::info!(channel = %self.channel, last = %self.last, "cue bus: redis reader reconnected, resuming");
                        self.failing = false;
                    }
                    self.backoff = Duration::from_millis(self.inner.settings.retry_initial_ms);
                    self.conn = Some(c);
                    self.forward(v);
                }
                Err(e) => {
                    if self.first_failure() {
                        tracing::warn!(channel = %self.channel, url = %crate::redact::redact_url(&self.inner.url), error = %e, "cue bus: redis reader lost its connection; retrying");
                    }
                    self.pause().await?;
                }
            }
        }
    }

    /// Nobody listens to the channel any more: the reader leaves the registry (unless a
    /// newer reader took its place) and stops.
    async fn idle(&self) -> bool {
        if self.tx.receiver_count() > 0 {
            return false;
        }
        let mut readers = self.inner.readers.lock().await;
        if self.tx.receiver_count() > 0 {
            return false;
        }
        if readers
            .get(&self.channel)
            .is_some_and(|t| t.same_channel(&self.tx))
        {
            readers.remove(&self.channel);
        }
        tracing::debug!(channel = %self.channel, "cue bus: redis reader idle, stopping");
        true
    }

    /// One XREAD BLOCK of up to 512 entries after `last`, waiting up to `block` ms.
    async fn read(
        &self,
        c: &mut MultiplexedConnection,
        block: u64,
    ) -> Result<redis::RedisResult<Value>, ShutDown> {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(self.last.to_string());
        let read = xread.query_async::<Value>(c);
        tokio::select! {
            r = read => Ok(r),
            _ = self.inner.shutdown.cancelled() => Err(ShutDown),
        }
    }

    /// Hand the entries of an XREAD reply newer than `last` to the local broadcast; a
    /// malformed one is skipped, with a warning.
    fn forward(&mut self, v: Value) {
        for (stream, entries) in xread_streams(v) {
            if stream != self.key {
                continue;
            }
            for entry in entries {
                let Some((offset, event)) = decode_entry(&entry) else {
                    continue;
                };
                if offset <= self.last {
                    continue;
                }
                self.last = offset;
                match event {
                    Some(event) => {
                        let _ = self.tx.send(Arc::new(CueRecord { offset, event }));
                    }
                    None => {
                        tracing::warn!(channel = %self.channel, %offset, "cue bus: skipping a malformed stream entry")
                    }
                }
            }
        }
    }

    /// Whether this failure is the first since the reader last worked (the one to log).
    fn first_failure(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// Wait the back-off after a failure (doubling it, up to `retry_max_ms`).
    async fn pause(&mut self) -> Result<(), ShutDown> {
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = self.inner.shutdown.cancelled() => return Err(ShutDown),
        }
        let max = Duration::from_millis(self.inner.settings.retry_max_ms);
        self.backoff = (self.backoff * 2).min(max);
        Ok(())
    }
}

impl CueBus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, event: CueEvent) {
        let inner = &self.inner;
        inner.published.fetch_add(1, Ordering::Relaxed);
        let dropped_now = {
            let mut ob = inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
            let seq = ob.next_seq;
            ob.next_seq += 1;
            ob.items.push_back((seq, event));
            let mut dropped = 0u64;
            while ob.items.len() > inner.settings.outage_buffer {
                ob.items.pop_front();
                dropped += 1;
            }
            dropped
        };
        if dropped_now > 0 {
            let total = inner.dropped.fetch_add(dropped_now, Ordering::Relaxed) + dropped_now;
            // Log the first drop of an outage and then every 1000th, not every one.
            if total == dropped_now || total % 1000 < dropped_now {
                tracing::warn!(
                    url = %crate::redact::redact_url(&inner.url),
                    dropped_total = total,
                    outage_buffer = inner.settings.outage_buffer,
                    "cue bus: outage buffer full, dropping the oldest buffered cue events"
                );
            }
        }
        inner.wake.notify_one();
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<Arc<CueRecord>>, BusError>> {
        async move {
            let inner = &self.inner;
            let mut readers = inner.readers.lock().await;
            if let Some(tx) = readers.get(channel) {
                return Ok(tx.subscribe());
            }
            // Start reading from the stream's current end, before anyone takes a snapshot.
            let key = inner.stream_key(channel);
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
            let last: Value = inner.query("XREVRANGE", channel, Q::Cmd(&cmd)).await?;
            let last = stream_entries(last)
                .first()
                .and_then(decode_entry)
                .map(|(o, _)| o)
                .unwrap_or(Offset::ZERO);
            let (tx, rx) = broadcast::channel(LIVE_CAPACITY);
            readers.insert(channel.to_string(), tx.clone());
            tokio::spawn(reader(inner.clone(), channel.to_string(), last, tx));
            Ok(rx)
        }
        .boxed()
    }

    fn snapshot<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Snapshot, BusError>> {
        async move {
            let inner = &self.inner;
            let (akey, skey) = (inner.active_key(channel), inner.stream_key(channel));
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("HGETALL").arg(&akey).cmd("XREVRANGE").arg(&skey).arg("+").arg("-").arg("COUNT").arg(1);
            let (active, last): (HashMap<String, String>, Value) = inner.query("snapshot", channel, Q::Pipe(&pipe)).await?;
            let offset = stream_entries(last).first().and_then(decode_entry).map(|(o, _)| o).unwrap_or(Offset::ZERO);
            let mut cues = Vec::with_capacity(active.len());
            for (id, json) in active {
                match serde_json::from_str::<Cue>(&json) {
                    Ok(c) => cues.push(c),
                    Err(e) => tracing::warn!(channel = %channel, cue = id, error = %e, "cue bus: skipping a malformed active cue"),
                }
            }
            super::sort_cues(&mut cues);
            Ok(Snapshot { offset, cues })
        }
        .boxed()
    }

    fn replay<'a>(
        &'a self,
        channel: &'a str,
        after: Offset,
    ) -> BoxFuture<'a, Result<Replay, BusError>> {
        async move {
            let inner = &self.inner;
            let key = inner.stream_key(channel);
            if after == Offset::ZERO {
                // The whole history, if nothing was ever trimmed (Redis 7: entries-added).
                let mut exists = redis::cmd("EXISTS");
                exists.arg(&key);
                let exists: bool = inner.query("EXISTS", channel, Q::Cmd(&exists)).await?;
                if exists {
                    let mut info = redis::cmd("XINFO");
                    info.arg("STREAM").arg(&key);
                    let info: Value = inner.query("XINFO STREAM", channel, Q::Cmd(&info)).await?;
                    let (length, added) = (
                        info_field(&info, "length"),
                        info_field(&info, "entries-added"),
                    );
                    match (length, added) {
                        (Some(l), Some(a)) if l == a => {}
                        _ => return Ok(Replay::NotInHistory),
                    }
                }
            } else {
                let at = after.to_string();
                let mut found = redis::cmd("XRANGE");
                found.arg(&key).arg(&at).arg(&at);
                let found: Value = inner.query("XRANGE", channel, Q::Cmd(&found)).await?;
                if stream_entries(found).is_empty() {
                    return Ok(Replay::NotInHistory);
                }
            }
            // Page through what follows; bounded by the history (plus what arrives meanwhile).
            let page = 1000usize;
            let cap = inner.history.saturating_mul(2).max(page);
            let mut records = Vec::new();
            let mut from = after;
            loop {
                let start = if from == Offset::ZERO {
                    "-".to_string()
                } else {
                    format!("({from}")
                };
                let mut range = redis::cmd("XRANGE");
                range.arg(&key).arg(&start).arg("+").arg("COUNT").arg(page);
                let v: Value = inner.query("XRANGE", channel, Q::Cmd(&range)).await?;
                let entries = stream_entries(v);
                let n = entries.len();
                for entry in &entries {
                    let Some((offset, event)) = decode_entry(entry) else {
                        continue;
                    };
                    from = from.max(offset);
                    if let Some(event) = event {
                        records.push(Arc::new(CueRecord { offset, event }));
                    }
                }
                if n < page || records.len() >= cap {
                    break;
                }
            }
            Ok(Replay::Records(records))
        }
        .boxed()
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        async move {
            let inner = &self.inner;
            let wait = async {
                loop {
                    let progress = inner.progress.notified();
                    tokio::pin!(progress);
                    progress.as_mut().enable();
                    if inner.outbox_len() == 0 {
                        return;
                    }
                    inner.wake.notify_one();
                    progress.await;
                }
            };
            tokio::time::timeout(timeout, wait).await.is_ok()
        }
        .boxed()
    }

    fn stats(&self) -> BusStats {
        let i = &self.inner;
        BusStats {
            published: i.published.load(Ordering::Relaxed),
            stored: i.stored.load(Ordering::Relaxed),
            buffered: i.outbox_len(),
            dropped: i.dropped.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
            healthy: i.healthy.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
            last_rejection: i
                .last_rejection
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            fenced: i.fenced.load(Ordering::Relaxed),
        }
    }

    fn fence(&self, channel: &str, holder: Option<String>) {
        let mut fences = self.inner.fences.lock().unwrap_or_else(|p| p.into_inner());
        let map = fences.get_or_insert_with(HashMap::new);
        match holder {
            Some(h) => map.insert(channel.to_string(), h),
            None => map.remove(channel),
        };
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `[[id, [field, value, …]], …]` → the entries as values.
fn stream_entries(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// XREAD's reply (RESP2 array of `[key, entries]` or RESP3 map) → `(key, entries)`.
fn xread_streams(v: Value) -> Vec<(String, Vec<Value>)> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|kv| match kv {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, e)| Some((text(&k)?, stream_entries(e))))
        .collect()
}

/// One stream entry → its offset and, if field `e` holds a valid event, the event.
fn decode_entry(entry: &Value) -> Option<(Offset, Option<CueEvent>)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let offset: Offset = text(parts.first()?)?.parse().ok()?;
    let fields: &[Value] = match parts.get(1) {
        Some(Value::Array(f)) => f,
        _ => &[],
    };
    let mut event = None;
    for kv in fields.chunks(2) {
        if let [k, v] = kv
            && text(k).as_deref() == Some("e")
        {
            event = text(v).and_then(|j| serde_json::from_str::<CueEvent>(&j).ok());
        }
    }
    Some((offset, event))
}

/// A numeric field of XINFO STREAM's reply (flat array or map).
fn info_field(info: &Value, name: &str) -> Option<i64> {
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    };
    match info {
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] if text(k).as_deref() == Some(name) => num(v),
            _ => None,
        }),
        Value::Map(pairs) => pairs
            .iter()
            .find_map(|(k, v)| (text(k).as_deref() == Some(name)).then(|| num(v)).flatten()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn decodes_xread_replies_defensively() {
        let event = r#"{"type":"end","cue":{"id":"c1","channel":"news","product_id":"p","start":"2026-11-21T10:00:00.000Z","end":"2026-11-21T10:00:01.000Z","pts":1.0,"score":0.5,"shot":1,"boxes":[]}}"#;
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("shopcue:cues:news"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("5-0"),
                    Value::Array(vec![bulk("e"), bulk(event)]),
                ]),
                Value::Array(vec![
                    bulk("6-1"),
                    Value::Array(vec![bulk("e"), bulk("{not json")]),
                ]),
                Value::Array(vec![bulk("not-an-id")]),
                Value::Int(3),
            ]),
        ])]);
        let streams = xread_streams(reply);
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].0, "shopcue:cues:news");
        let decoded: Vec<_> = streams[0].1.iter().map(decode_entry).collect();
        let (o, e) = decoded[0].clone().unwrap();
        assert_eq!(o, Offset { ms: 5, seq: 0 });
        assert_eq!(e.unwrap().kind(), "end");
        assert_eq!(
            decoded[1].clone().unwrap(),
            (Offset { ms: 6, seq: 1 }, None)
        );
        assert!(decoded[2].is_none() && decoded[3].is_none());
        assert!(xread_streams(Value::Nil).is_empty());
    }

    #[test]
    fn reads_xinfo_fields_and_redacts_urls() {
        let info = Value::Array(vec![
            bulk("length"),
            Value::Int(3),
            bulk("entries-added"),
            Value::Int(5),
        ]);
        assert_eq!(info_field(&info, "length"), Some(3));
        assert_eq!(info_field(&info, "entries-added"), Some(5));
        assert_eq!(info_field(&info, "nope"), None);
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert!(RedisSettings::default().validate().is_ok());
        let bad = RedisSettings {
            url: "http://x".into(),
            ..RedisSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "url");
    }
}
