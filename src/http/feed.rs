//! The live cue feed: `GET /v1/channels/{id}/cues` upgraded to a WebSocket. The protocol
//! (message types, close codes, resuming with `?since=`) is documented in
//! `docs/websocket-protocol.md`.
//!
//! Fan-out: per channel one hub task reads the bus and serialises each event ONCE into a
//! shared `Utf8Bytes`; clients receive clones of it over a broadcast ring of
//! `feed.client_queue` messages. Each client is one task that moves messages from the ring
//! into its own queue (bounded by `feed.client_queue`) and from there into the socket. A
//! client that falls `client_queue` behind (ring or queue) is closed with 1008 and counted
//! in `slow_closed`; nobody else waits for it.
//!
//! Channels: each channel with clients costs a hub here and, on Redis, a reader with its
//! own Redis connection (`src/cuebus/redis.rs`). Without a fixed channel list any valid id
//! would open one, so at most `feed.max_channels` channels are served at once: a
//! connection to a NEW channel beyond that is answered 503 before the upgrade (counted in
//! `rejected_channels`); channels already served are not affected. A channel's slot is
//! freed a few seconds after its last client leaves (the hub's idle check, 5 s). One
//! shared Redis reader for all channels was the alternative; it would bound connections
//! but not the hubs and buffers each channel costs here, so the cap is needed anyway.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use super::ApiError;
use super::token;
use crate::cue::Cue;
use crate::cuebus::{BusError, CueBus, CueRecord, Offset, Replay};

/// Close codes the feed uses.
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Frames that break the WebSocket protocol (reserved bits or opcodes, unmasked).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Slow client, token expired, too many bad messages, keepalive timeout.
    pub const POLICY: u16 = 1008;
    /// A client message over `feed.max_client_message`.
    pub const TOO_BIG: u16 = 1009;
    /// The cue bus is unreachable or the channel's feed was interrupted: reconnect with `since`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The channel was removed (`DELETE /v1/channels/{id}`) after its last events were sent.
    pub const CHANNEL_REMOVED: u16 = 4404;
}

/// How long a removed channel's hub waits for the channel's last events before it closes
/// its clients anyway.
const REMOVE_GRACE: Duration = Duration::from_secs(3);

/// `[feed]`: the WebSocket cue feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettings {
    /// Messages a client may fall behind the live edge before it is closed (1008).
    pub client_queue: usize,
    /// Open feed connections allowed; more are answered 503 before the upgrade.
    pub max_connections: usize,
    /// A WebSocket ping every this many ms; a client silent for two intervals is closed.
    pub ping_interval_ms: u64,
    /// HMAC-SHA256 secret of `?token=` (see docs/websocket-protocol.md); empty: no token needed.
    pub token_secret: String,
    /// Largest message a client may send, in bytes; larger closes the connection (1009).
    pub max_client_message: usize,
    /// Channels served at once (each costs a hub and, on Redis, a reader connection); a
    /// connection to another channel beyond that is answered 503 before the upgrade.
    pub max_channels: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            client_queue: 256,
            max_connections: 20_000,
            ping_interval_ms: 30_000,
            token_secret: String::new(),
            max_client_message: 4096,
            max_channels: 1000,
        }
    }
}

impl FeedSettings {
    /// `Err((key, why))` with the key relative to `[feed]`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000_000).contains(&self.client_queue) {
            return Err(("client_queue", "must be from 1 to 1000000".into()));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if !(1..=1_000_000).contains(&self.max_channels) {
            return Err(("max_channels", "must be from 1 to 1000000".into()));
        }
        if self.ping_interval_ms < 100 {
            return Err(("ping_interval_ms", "must be at least 100".into()));
        }
        if !(128..=1 << 20).contains(&self.max_client_message) {
            return Err(("max_client_message", "must be from 128 to 1048576".into()));
        }
        if !self.token_secret.is_empty() && self.token_secret.len() < 16 {
            return Err((
                "token_secret",
                "must be empty or at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of the feed (connections and channels now, and totals since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedStats {
    pub connected: u64,
    /// Channels served now (hubs; on Redis, each has a reader connection).
    pub channels: u64,
    pub accepted: u64,
    pub rejected_full: u64,
    pub rejected_auth: u64,
    /// Connections refused because `feed.max_channels` other channels were being served.
    pub rejected_channels: u64,
    pub slow_closed: u64,
    pub keepalive_closed: u64,
    pub bad_messages: u64,
    /// Connections closed for a message over `feed.max_client_message` (1009).
    pub oversized_closed: u64,
    /// Connections closed for frames that break the WebSocket protocol (1002).
    pub protocol_closed: u64,
    pub events_sent: u64,
    pub hub_lags: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    /// Mirrors `Inner::hubs.len()`, readable without the lock.
    channels: AtomicU64,
    accepted: AtomicU64,
    rejected_full: AtomicU64,
    rejected_auth: AtomicU64,
    rejected_channels: AtomicU64,
    slow_closed: AtomicU64,
    keepalive_closed: AtomicU64,
    bad_messages: AtomicU64,
    oversized_closed: AtomicU64,
    protocol_closed: AtomicU64,
    events_sent: AtomicU64,
    hub_lags: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why a client gets no hub.
#[derive(Debug, thiserror::Error)]
enum HubError {
    #[error("too many channels")]
    TooManyChannels,
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn set_channels(inner: &Inner, n: usize) {
    inner.counters.channels.store(n as u64, Ordering::Relaxed);
}

/// What a channel's hub sends its clients.
#[derive(Debug, Clone)]
enum HubMsg {
    Event {
        offset: Offset,
        text: Utf8Bytes,
    },
    /// The hub lost events it could not recover: clients must reconnect with `since`.
    Reset,
    /// The channel was removed: clients are closed once their queue is written.
    Removed,
}

/// Shared state of the feed; cheap to clone.
#[derive(Clone)]
pub struct FeedState {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Arc<dyn CueBus>,
    settings: FeedSettings,
    permits: Arc<Semaphore>,
    hubs: tokio::sync::Mutex<HashMap<String, broadcast::Sender<HubMsg>>>,
    counters: Counters,
    shutdown: CancellationToken,
    /// Only these channels are served, when set (changed at runtime).
    channels: Option<std::sync::RwLock<HashSet<String>>>,
    /// Channels being removed: their hubs close their clients once they have forwarded
    /// the channel's last offset, or at the deadline.
    removing: watch::Sender<HashMap<String, (Offset, tokio::time::Instant)>>,
}

impl FeedState {
    pub fn new(bus: Arc<dyn CueBus>, settings: FeedSettings) -> Self {
        let permits = Arc::new(Semaphore::new(
            settings.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        Self::build(bus, settings, permits, None)
    }

    /// Only these channels are served (others: 404). Without it any valid id is.
    pub fn with_channels(self, channels: impl IntoIterator<Item = String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.bus.clone(),
            i.settings.clone(),
            i.permits.clone(),
            Some(channels.into_iter().collect()),
        )
    }

    fn build(
        bus: Arc<dyn CueBus>,
        settings: FeedSettings,
        permits: Arc<Semaphore>,
        channels: Option<HashSet<String>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                settings,
                permits,
                hubs: tokio::sync::Mutex::new(HashMap::new()),
                counters: Counters::default(),
                shutdown: CancellationToken::new(),
                channels: channels.map(std::sync::RwLock::new),
                removing: watch::Sender::new(HashMap::new()),
            }),
        }
    }

    pub fn stats(&self) -> FeedStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FeedStats {
            connected: l(&c.connected),
            channels: l(&c.channels),
            accepted: l(&c.accepted),
            rejected_full: l(&c.rejected_full),
            rejected_auth: l(&c.rejected_auth),
            rejected_channels: l(&c.rejected_channels),
            slow_closed: l(&c.slow_closed),
            keepalive_closed: l(&c.keepalive_closed),
            bad_messages: l(&c.bad_messages),
            oversized_closed: l(&c.oversized_closed),
            protocol_closed: l(&c.protocol_closed),
            events_sent: l(&c.events_sent),
            hub_lags: l(&c.hub_lags),
        }
    }

    /// Serve `channel` (when the feed serves a fixed list of channels).
    pub fn allow(&self, channel: &str) {
        if let Some(set) = &self.inner.channels {
            set.write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(channel.to_string());
        }
        self.inner
            .removing
            .send_if_modified(|m| m.remove(channel).is_some());
    }

    /// `channel` was removed: new connections answer 404 (fixed list), and its clients are
    /// closed with [`close_code::CHANNEL_REMOVED`] once its events up to `last` are sent.
    pub fn remove(&self, channel: &str, last: Offset) {
        if let Some(set) = &self.inner.channels {
            set.write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(channel);
        }
        let now = tokio::time::Instant::now();
        self.inner.removing.send_modify(|m| {
            m.retain(|_, (_, deadline)| *deadline > now);
            m.insert(channel.to_string(), (last, now + REMOVE_GRACE));
        });
    }

    fn serves(&self, channel: &str) -> bool {
        self.inner.channels.as_ref().is_none_or(|set| {
            set.read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(channel)
        })
    }

    /// Close every client with 1001 and stop the hubs (and [`serve`]).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// A live receiver of the channel's hub, starting the hub if needed and there is room.
    async fn hub(&self, channel: &str) -> Result<broadcast::Receiver<HubMsg>, HubError> {
        let mut hubs = self.inner.hubs.lock().await;
        if let Some(tx) = hubs.get(channel) {
            return Ok(tx.subscribe());
        }
        if hubs.len() >= self.inner.settings.max_channels {
            return Err(HubError::TooManyChannels);
        }
        let bus_rx = self.inner.bus.subscribe(channel).await?;
        let (tx, rx) = broadcast::channel(self.inner.settings.client_queue);
        hubs.insert(channel.to_string(), tx.clone());
        set_channels(&self.inner, hubs.len());
        tokio::spawn(hub_task(
            self.inner.clone(),
            channel.to_string(),
            bus_rx,
            tx,
        ));
        Ok(rx)
    }
}

/// The feed's routes: `GET /v1/channels/{id}/cues`.
pub fn router(state: FeedState) -> Router {
    Router::new()
        .route("/v1/channels/{id}/cues", get(cues))
        .with_state(state)
}

/// Serve the feed alone on `listener` (TCP_NODELAY on every connection) until
/// [`FeedState::shutdown`].
pub async fn serve(listener: tokio::net::TcpListener, state: FeedState) -> std::io::Result<()> {
    let shutdown = state.inner.shutdown.clone();
    // TCP_NODELAY: small event frames must not wait for the peer's delayed ACK (Nagle).
    super::server::serve(listener, router(state), async move {
        shutdown.cancelled().await
    })
    .await
}

/// The wire form of a cue event: `{"type":"start","offset":"…","cue":{…}}`.
pub fn encode_event(record: &CueRecord) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        offset: String,
        cue: &'a Cue,
    }
    serde_json::to_string(&Event {
        kind: record.event.kind(),
        offset: record.offset.to_string(),
        cue: record.event.cue(),
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMsg<'a> {
    Hello {
        channel: &'a str,
        server_time: String,
        offset: String,
        resumed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        resume_error: Option<String>,
        ping_interval_ms: u64,
    },
    Snapshot {
        offset: String,
        cues: &'a [Cue],
    },
    Pong {
        server_time: String,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

impl ServerMsg<'_> {
    fn message(&self) -> Message {
        Message::Text(serde_json::to_string(self).unwrap_or_default().into())
    }
}

#[derive(Deserialize)]
struct ClientMsg {
    #[serde(rename = "type")]
    kind: String,
}

/// What a client's text message asks for.
#[derive(Debug, PartialEq)]
pub enum ClientRequest {
    Ping,
    /// A JSON object with another `type`: its first 32 characters, to name in the error.
    Unknown {
        kind: String,
    },
    /// Not a JSON object with a string `type`.
    Malformed,
}

/// Reads a client's text message (`{"type":"ping"}` is the only request).
pub fn read_client_message(text: &str) -> ClientRequest {
    match serde_json::from_str::<ClientMsg>(text) {
        Ok(m) if m.kind == "ping" => ClientRequest::Ping,
        Ok(m) => ClientRequest::Unknown {
            kind: m.kind.chars().take(32).collect(),
        },
        Err(_) => ClientRequest::Malformed,
    }
}

/// The query string of a feed request: `?since=<offset>&token=<token>`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    pub since: Option<String>,
    pub token: Option<String>,
}

impl FeedQuery {
    /// The offset to resume after, when given.
    pub fn since(&self) -> Result<Option<Offset>, String> {
        self.since.as_deref().map(str::parse::<Offset>).transpose()
    }
}

fn unauthorized(why: impl std::fmt::Display) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": why.to_string() })),
    )
        .into_response()
}

async fn cues(
    State(state): State<FeedState>,
    Path(channel): Path<String>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let inner = &state.inner;
    if let Err(why) = crate::cue::validate_channel_id(&channel) {
        return ApiError::BadRequest(format!("channel id: {why}")).into_response();
    }
    if !state.serves(&channel) {
        return ApiError::NotFound(format!("no channel `{channel}`")).into_response();
    }
    let since = match query.since() {
        Ok(s) => s,
        Err(why) => return ApiError::BadRequest(format!("since: {why}")).into_response(),
    };
    let mut expires = None;
    if !inner.settings.token_secret.is_empty() {
        let given = query.token.as_deref().or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
        let Some(given) = given else {
            bump(&inner.counters.rejected_auth);
            return unauthorized("token required");
        };
        match token::verify(
            &inner.settings.token_secret,
            given,
            &channel,
            Utc::now().timestamp(),
        ) {
            Ok(grant) => expires = Some(grant.expires_unix),
            Err(e @ token::TokenError::WrongChannel(_)) => {
                bump(&inner.counters.rejected_auth);
                return ApiError::Forbidden(e.to_string()).into_response();
            }
            Err(e) => {
                bump(&inner.counters.rejected_auth);
                return unauthorized(e);
            }
        }
    }
    let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
        bump(&inner.counters.rejected_full);
        return ApiError::Unavailable("too many feed connections".into()).into_response();
    };
    // The channel's live receiver is taken before the upgrade, so that a channel beyond
    // `feed.max_channels` is refused with a status, and before the starting point (in
    // `session`), so that no event falls between the two.
    let hub = match state.hub(&channel).await {
        Err(HubError::TooManyChannels) => {
            bump(&inner.counters.rejected_channels);
            return ApiError::Unavailable(format!(
                "too many channels: {} others are being served",
                inner.settings.max_channels
            ))
            .into_response();
        }
        Err(HubError::Bus(e)) => Err(e),
        Ok(rx) => Ok(rx),
    };
    let max = inner.settings.max_client_message;
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(state, channel, since, expires, permit, hub, socket))
}

type WsSink = SplitSink<WebSocket, Message>;

/// Decrements the connected gauge however the session ends.
struct Connected<'a>(&'a AtomicU64);
impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(
    state: FeedState,
    channel: String,
    since: Option<Offset>,
    expires_unix: Option<i64>,
    _permit: OwnedSemaphorePermit,
    hub: Result<broadcast::Receiver<HubMsg>, BusError>,
    socket: WebSocket,
) {
    let inner = &state.inner;
    let counters = &inner.counters;
    bump(&counters.accepted);
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(&counters.connected);
    let (mut sink, stream) = socket.split();
    let mut queue: VecDeque<Message> = VecDeque::new();

    let rx = match hub {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(channel = %channel, error = %e, "feed: cannot subscribe to the cue bus");
            close(
                &mut sink,
                &mut queue,
                close_code::TRY_AGAIN_LATER,
                "cue bus unavailable",
            )
            .await;
            return;
        }
    };
    let last = match start(
        inner.bus.as_ref(),
        &channel,
        since,
        inner.settings.ping_interval_ms,
    )
    .await
    {
        Ok((messages, last)) => {
            queue.extend(messages);
            last
        }
        Err(e) => {
            tracing::warn!(channel = %channel, error = %e, "feed: cannot read the cue bus");
            close(
                &mut sink,
                &mut queue,
                close_code::TRY_AGAIN_LATER,
                "cue bus unavailable",
            )
            .await;
            return;
        }
    };
    let backlog = queue.len();
    let ending = run(
        inner,
        &mut sink,
        stream,
        &mut queue,
        BroadcastStream::new(rx),
        last,
        backlog,
        expires_unix,
    )
    .await;
    if let Some((code, reason)) = ending {
        close(&mut sink, &mut queue, code, &reason).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
}

const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bad messages a client may send before it is closed.
const MAX_BAD_MESSAGES: u32 = 100;

/// hello + snapshot, or hello + the replayed events; and the offset they reach.
async fn start(
    bus: &dyn CueBus,
    channel: &str,
    since: Option<Offset>,
    ping_interval_ms: u64,
) -> Result<(Vec<Message>, Offset), BusError> {
    let server_time = || crate::frame::rfc3339_ms(&Utc::now());
    let mut resume_error = None;
    if let Some(since) = since {
        match bus.replay(channel, since).await? {
            Replay::Records(records) => {
                let mut out = Vec::with_capacity(records.len() + 1);
                out.push(
                    ServerMsg::Hello {
                        channel,
                        server_time: server_time(),
                        offset: since.to_string(),
                        resumed: true,
                        resume_error: None,
                        ping_interval_ms,
                    }
                    .message(),
                );
                let last = records.last().map(|r| r.offset).unwrap_or(since).max(since);
                out.extend(
                    records
                        .iter()
                        .map(|r| Message::Text(encode_event(r).into())),
                );
                return Ok((out, last));
            }
            Replay::NotInHistory => {
                resume_error = Some(format!(
                    "offset {since} is not in the retained history; starting from a snapshot"
                ));
            }
        }
    }
    let snap = bus.snapshot(channel).await?;
    let offset = snap.offset.to_string();
    let out = vec![
        ServerMsg::Hello {
            channel,
            server_time: server_time(),
            offset: offset.clone(),
            resumed: false,
            resume_error,
            ping_interval_ms,
        }
        .message(),
        ServerMsg::Snapshot {
            offset,
            cues: &snap.cues,
        }
        .message(),
    ];
    Ok((out, snap.offset))
}

/// How a session ends: the close code and reason to send, or None when the client went
/// away (or closed) by itself.
type Ending = Option<(u16, String)>;

/// A close with `code` and `reason`.
fn ending(code: u16, reason: impl Into<String>) -> ControlFlow<Ending> {
    ControlFlow::Break(Some((code, reason.into())))
}

/// The session's loop; returns the close code and reason to send, or None when the client
/// went away (or closed) by itself.
#[allow(clippy::too_many_arguments)]
async fn run(
    inner: &Inner,
    sink: &mut WsSink,
    mut stream: SplitStream<WebSocket>,
    queue: &mut VecDeque<Message>,
    mut live: BroadcastStream<HubMsg>,
    last: Offset,
    backlog: usize,
    expires_unix: Option<i64>,
) -> Ending {
    let mut s = SessionLoop {
        inner,
        limit: inner.settings.client_queue + backlog,
        last,
        bad: 0,
        flush_pending: false,
        last_heard: tokio::time::Instant::now(),
    };
    let ping_every = Duration::from_millis(inner.settings.ping_interval_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry = expires_unix.map(|e| {
        let left = (e - Utc::now().timestamp()).max(0) as u64;
        tokio::time::Instant::now() + Duration::from_secs(left)
    });
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let expired = tokio::time::sleep_until(expiry.unwrap_or(far));
    tokio::pin!(expired);
    let shutdown = inner.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        let step = tokio::select! {
            biased;
            _ = &mut shutdown => ending(close_code::GOING_AWAY, "server shutting down"),
            item = live.next() => s.on_live(item, sink, queue).await,
            res = drain(sink, queue), if !queue.is_empty() || s.flush_pending => s.on_drained(res),
            msg = stream.next() => s.on_client(msg, sink, queue).await,
            _ = ping.tick() => s.on_ping_tick(ping_every, queue),
            _ = &mut expired, if expiry.is_some() => ending(close_code::POLICY, "token expired"),
        };
        if let ControlFlow::Break(end) = step {
            return end;
        }
    }
}

/// The state of a session's loop ([`run`]) between its events.
struct SessionLoop<'a> {
    inner: &'a Inner,
    /// Most messages queued before the client counts as too slow.
    limit: usize,
    /// The offset of the last event queued.
    last: Offset,
    /// Bad messages the client sent.
    bad: u32,
    /// The WebSocket layer holds a reply to flush.
    flush_pending: bool,
    last_heard: tokio::time::Instant,
}

impl SessionLoop<'_> {
    /// An event from the channel's hub: queued (once), or the end of the session when
    /// the client is too slow, the channel was removed (after its last events are sent)
    /// or the feed was interrupted.
    async fn on_live(
        &mut self,
        item: Option<Result<HubMsg, BroadcastStreamRecvError>>,
        sink: &mut WsSink,
        queue: &mut VecDeque<Message>,
    ) -> ControlFlow<Ending> {
        let counters = &self.inner.counters;
        match item {
            Some(Ok(HubMsg::Event { offset, text })) => {
                if offset <= self.last {
                    return ControlFlow::Continue(());
                }
                self.last = offset;
                if queue.len() >= self.limit {
                    bump(&counters.slow_closed);
                    return ending(
                        close_code::POLICY,
                        format!(
                            "client too slow: more than {} messages behind",
                            self.inner.settings.client_queue
                        ),
                    );
                }
                queue.push_back(Message::Text(text));
                bump(&counters.events_sent);
                ControlFlow::Continue(())
            }
            Some(Ok(HubMsg::Removed)) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain(sink, queue)).await;
                ending(close_code::CHANNEL_REMOVED, "channel removed")
            }
            Some(Ok(HubMsg::Reset)) | None => ending(
                close_code::TRY_AGAIN_LATER,
                "feed interrupted: reconnect with since",
            ),
            Some(Err(BroadcastStreamRecvError::Lagged(n))) => {
                bump(&counters.slow_closed);
                ending(
                    close_code::POLICY,
                    format!("client too slow: {n} messages behind"),
                )
            }
        }
    }

    /// The queue was written out (or the write failed: the client is gone).
    fn on_drained(&mut self, res: Result<(), axum::Error>) -> ControlFlow<Ending> {
        self.flush_pending = false;
        match res {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                tracing::debug!(error = %e, "feed: write failed");
                ControlFlow::Break(None)
            }
        }
    }

    /// A message from the client (or its stream's end or error): answered, and the end
    /// of the session when the client broke the protocol, closed, sent too many bad
    /// messages or let its answers pile up.
    async fn on_client(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
        sink: &mut WsSink,
        queue: &mut VecDeque<Message>,
    ) -> ControlFlow<Ending> {
        let Some(msg) = msg else {
            return ControlFlow::Break(None);
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return ControlFlow::Break(self.client_error(&e)),
        };
        self.last_heard = tokio::time::Instant::now();
        if let Message::Close(_) = msg {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
            return ControlFlow::Break(None);
        }
        self.answer(msg, queue);
        if self.bad > MAX_BAD_MESSAGES {
            return ending(close_code::POLICY, "too many bad messages");
        }
        if queue.len() > self.limit {
            bump(&self.inner.counters.slow_closed);
            return ending(close_code::POLICY, "client too slow: queue full");
        }
        ControlFlow::Continue(())
    }

    /// The close for an error of the client's stream: a fault of the client's is named
    /// and counted; a peer that vanished gets none.
    fn client_error(&self, e: &axum::Error) -> Ending {
        let counters = &self.inner.counters;
        let text = e.to_string();
        tracing::debug!(error = %text, "feed: client stream error");
        match client_fault(&text) {
            Some(ClientFault::TooBig) => {
                bump(&counters.oversized_closed);
                Some((close_code::TOO_BIG, "message too big".to_string()))
            }
            Some(ClientFault::BadUtf8) => {
                bump(&counters.protocol_closed);
                Some((
                    close_code::INVALID_DATA,
                    "text message is not UTF-8".to_string(),
                ))
            }
            Some(ClientFault::Protocol) => {
                bump(&counters.protocol_closed);
                Some((
                    close_code::PROTOCOL_ERROR,
                    "websocket protocol error".to_string(),
                ))
            }
            None => None,
        }
    }

    /// Queue the answer to a client message (not a close): a pong, or an error for a
    /// message that is not understood (counted as bad).
    fn answer(&mut self, msg: Message, queue: &mut VecDeque<Message>) {
        let error = |code, message: String| ServerMsg::Error { code, message }.message();
        match msg {
            Message::Text(t) => match read_client_message(t.as_str()) {
                ClientRequest::Ping => queue.push_back(
                    ServerMsg::Pong {
                        server_time: crate::frame::rfc3339_ms(&Utc::now()),
                    }
                    .message(),
                ),
                ClientRequest::Unknown { kind } => {
                    self.count_bad();
                    queue.push_back(error(
                        "unknown_type",
                        format!("unknown message type `{kind}`"),
                    ));
                }
                ClientRequest::Malformed => {
                    self.count_bad();
                    queue.push_back(error(
                        "bad_message",
                        "expected a JSON object with a `type`".into(),
                    ));
                }
            },
            Message::Binary(_) => {
                self.count_bad();
                queue.push_back(error(
                    "bad_message",
                    "binary messages are not accepted".into(),
                ));
            }
            // The WebSocket layer queues the pong (or the close reply): flush it.
            Message::Ping(_) => self.flush_pending = true,
            Message::Pong(_) | Message::Close(_) => {}
        }
    }

    /// One more bad message from the client.
    fn count_bad(&mut self) {
        self.bad += 1;
        bump(&self.inner.counters.bad_messages);
    }

    /// Time to ping: the client that was not heard for two ping intervals is closed.
    fn on_ping_tick(
        &mut self,
        ping_every: Duration,
        queue: &mut VecDeque<Message>,
    ) -> ControlFlow<Ending> {
        if self.last_heard.elapsed() > ping_every * 2 {
            bump(&self.inner.counters.keepalive_closed);
            return ending(close_code::POLICY, "keepalive timeout");
        }
        queue.push_back(Message::Ping(Default::default()));
        ControlFlow::Continue(())
    }
}

/// What a client did wrong, from the WebSocket layer's error.
#[derive(Debug, PartialEq)]
enum ClientFault {
    /// A frame or message over `feed.max_client_message`.
    TooBig,
    /// A text message that is not UTF-8.
    BadUtf8,
    /// Any other broken framing: reserved bits or opcodes, an unmasked frame, …
    Protocol,
}

/// The WebSocket layer reports errors as `axum::Error` around tungstenite's error, so
/// they are told apart by their text. A peer that just vanished is no fault.
fn client_fault(error: &str) -> Option<ClientFault> {
    if error.contains("Space limit exceeded") || error.contains("too long") {
        Some(ClientFault::TooBig)
    } else if error.contains("UTF-8") {
        Some(ClientFault::BadUtf8)
    } else if error.contains("protocol error") && !error.contains("without closing handshake") {
        Some(ClientFault::Protocol)
    } else {
        None
    }
}

/// Hand queued messages to the socket and flush; cancel-safe (a message leaves the queue
/// only when the socket layer has taken it).
async fn drain(sink: &mut WsSink, queue: &mut VecDeque<Message>) -> Result<(), axum::Error> {
    std::future::poll_fn(|cx| {
        loop {
            if queue.is_empty() {
                return sink.poll_flush_unpin(cx);
            }
            futures::ready!(sink.poll_ready_unpin(cx))?;
            if let Some(m) = queue.pop_front() {
                sink.start_send_unpin(m)?;
            }
        }
    })
    .await
}

async fn close(sink: &mut WsSink, queue: &mut VecDeque<Message>, code: u16, reason: &str) {
    queue.clear();
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        sink.send(frame).await?;
        sink.close().await
    })
    .await;
}

/// One per channel: bus records → one serialisation → every client of the channel.
async fn hub_task(
    inner: Arc<Inner>,
    channel: String,
    mut bus_rx: broadcast::Receiver<Arc<CueRecord>>,
    tx: broadcast::Sender<HubMsg>,
) {
    let mut last: Option<Offset> = None;
    let forward = |record: &CueRecord, last: &mut Option<Offset>| {
        if last.is_some_and(|l| record.offset <= l) {
            return;
        }
        *last = Some(record.offset);
        let text = Utf8Bytes::from(encode_event(record));
        let _ = tx.send(HubMsg::Event {
            offset: record.offset,
            text,
        });
    };
    let mut idle = tokio::time::interval(Duration::from_secs(5));
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = inner.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut removing = inner.removing.subscribe();
    let mut closing: Option<(Offset, tokio::time::Instant)> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        if closing.is_some_and(|(after, _)| last.unwrap_or(Offset::ZERO) >= after) {
            let _ = tx.send(HubMsg::Removed);
            break;
        }
        tokio::select! {
            _ = removing.changed() => closing = removing.borrow_and_update().get(&channel).copied(),
            _ = tokio::time::sleep_until(closing.map_or(far, |(_, d)| d)), if closing.is_some() => {
                let _ = tx.send(HubMsg::Removed);
                break;
            }
            r = bus_rx.recv() => match r {
                Ok(record) => forward(&record, &mut last),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    bump(&inner.counters.hub_lags);
                    tracing::warn!(channel = %channel, missed = n, "feed: hub fell behind the bus; recovering from history");
                    let recovered = match last {
                        Some(l) => inner.bus.replay(&channel, l).await.ok(),
                        None => None,
                    };
                    match recovered {
                        Some(Replay::Records(records)) => records.iter().for_each(|r| forward(r, &mut last)),
                        _ => {
                            tracing::warn!(channel = %channel, "feed: events lost; asking clients to reconnect");
                            let _ = tx.send(HubMsg::Reset);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(HubMsg::Reset);
                    break;
                }
            },
            _ = idle.tick() => {
                if tx.receiver_count() == 0 {
                    let mut hubs = inner.hubs.lock().await;
                    if tx.receiver_count() == 0 {
                        if hubs.get(&channel).is_some_and(|t| t.same_channel(&tx)) {
                            hubs.remove(&channel);
                            set_channels(&inner, hubs.len());
                        }
                        return;
                    }
                }
            }
            _ = &mut shutdown => return,
        }
    }
    let mut hubs = inner.hubs.lock().await;
    if hubs.get(&channel).is_some_and(|t| t.same_channel(&tx)) {
        hubs.remove(&channel);
        set_channels(&inner, hubs.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cue::{CueEvent, cue_id};

    #[test]
    fn events_encode_with_type_offset_and_cue() {
        let t = chrono::DateTime::from_timestamp_millis(1_795_000_000_040).unwrap();
        let cue = Cue {
            source: Default::default(),
            id: cue_id("news", 1, "sku"),
            channel: "news".into(),
            product_id: "sku".into(),
            start: t,
            end: None,
            pts: 1.5,
            score: 0.5,
            shot: 1,
            boxes: vec![],
            product: None,
        };
        let record = CueRecord {
            offset: Offset {
                ms: 1_795_000_000_040,
                seq: 2,
            },
            event: CueEvent::Update(cue),
        };
        let v: serde_json::Value = serde_json::from_str(&encode_event(&record)).unwrap();
        assert_eq!(v["type"], "update");
        assert_eq!(v["offset"], "1795000000040-2");
        assert_eq!(v["cue"]["start"], "2026-11-18T11:06:40.040Z");
        assert!(v["cue"]["end"].is_null());
        let hello = ServerMsg::Hello {
            channel: "news",
            server_time: "x".into(),
            offset: "0-0".into(),
            resumed: false,
            resume_error: None,
            ping_interval_ms: 5,
        };
        let v = serde_json::to_value(&hello).unwrap();
        assert_eq!(v["type"], "hello");
        assert!(v.get("resume_error").is_none());
    }

    #[test]
    fn client_faults_are_told_from_their_error_text() {
        let cases = [
            (
                "Space limit exceeded: Message too long: 65536 > 4096",
                Some(ClientFault::TooBig),
            ),
            (
                "WebSocket protocol error: Reserved bits are non-zero",
                Some(ClientFault::Protocol),
            ),
            (
                "WebSocket protocol error: Received an unmasked frame from client",
                Some(ClientFault::Protocol),
            ),
            (
                "UTF-8 encoding error: invalid utf-8 sequence",
                Some(ClientFault::BadUtf8),
            ),
            (
                "WebSocket protocol error: Connection reset without closing handshake",
                None,
            ),
            ("IO error: Connection reset by peer (os error 104)", None),
        ];
        for (text, want) in cases {
            assert_eq!(client_fault(text), want, "{text}");
        }
    }

    #[test]
    fn default_settings_validate() {
        assert!(FeedSettings::default().validate().is_ok());
        let short = FeedSettings {
            token_secret: "short".into(),
            ..FeedSettings::default()
        };
        assert_eq!(short.validate().unwrap_err().0, "token_secret");
        let no_channels = FeedSettings {
            max_channels: 0,
            ..FeedSettings::default()
        };
        assert_eq!(no_channels.validate().unwrap_err().0, "max_channels");
    }
}
