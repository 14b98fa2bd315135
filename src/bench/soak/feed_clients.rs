//! The soak's WebSocket feed clients: each follows one channel's cue feed, leaves after a
//! random while (half the time with a close frame, half the time by dropping the
//! connection), pauses, and comes back with `?since=<last offset>`, as a viewer's page that
//! loses its network would. Each keeps the offsets it received; at the end they are
//! checked against the channel's stream as Redis holds it ([`check`]): none missing
//! (gap), none twice (dup).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use shopcue::cuebus::Offset;

/// How the clients come and go.
#[derive(Debug, Clone, Copy)]
pub struct Churn {
    /// A connection lasts a random time in this range, seconds.
    pub session_s: (f64, f64),
    /// Then the client is away a random time up to this, seconds.
    pub away_s: f64,
}

/// Running totals of all clients (read by the sampler).
#[derive(Debug, Default)]
pub struct FeedCounters {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    /// Cue events received (all clients, resumed replays included).
    pub events: AtomicU64,
    /// Events at or below an offset the client already had.
    pub dups: AtomicU64,
    /// `hello` with `resume_error`: the offset was no longer in the history.
    pub resume_errors: AtomicU64,
    /// Connections the server ended (close frame or error) before the client left.
    pub server_closes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What one client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientLog {
    pub channel: String,
    /// The offset of its first `hello` (a snapshot's): events after it are expected.
    pub base: Option<Offset>,
    /// Offsets of the events received, strictly increasing (dups are counted, not kept).
    pub received: Vec<Offset>,
    /// Reached the stream's head it was given at the end.
    pub caught_up: bool,
}

impl ClientLog {
    fn last(&self) -> Option<Offset> {
        self.received.last().copied().or(self.base)
    }
}

/// The fields of a feed message the client reads.
#[derive(serde::Deserialize)]
struct Msg {
    #[serde(rename = "type")]
    kind: String,
    offset: Option<String>,
    resume_error: Option<String>,
}

/// One feed client until `stop`, or until `head` gives it an offset to catch up to and it
/// has (then it stays connected and stops churning).
pub async fn run(
    ws_base: String,
    channel: String,
    churn: Churn,
    seed: u64,
    counters: Arc<FeedCounters>,
    mut head: watch::Receiver<Option<Offset>>,
    stop: CancellationToken,
) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog {
        channel: channel.clone(),
        ..ClientLog::default()
    };
    while !stop.is_cancelled() {
        if reached(&log, &head) {
            log.caught_up = true;
            break;
        }
        let mut url = format!("{ws_base}/v1/channels/{channel}/cues");
        if let Some(o) = log.last() {
            url.push_str(&format!("?since={o}"));
        }
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        );
        let ws = tokio::select! {
            _ = stop.cancelled() => break,
            r = connect => r,
        };
        let Ok(Ok((ws, _))) = ws else {
            bump(&counters.connect_errors);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        bump(&counters.connects);
        let stay = Duration::from_secs_f64(rng.random_range(churn.session_s.0..churn.session_s.1));
        let clean = rng.random_bool(0.5);
        session(ws, stay, clean, &mut log, &counters, &mut head, &stop).await;
        if head.borrow().is_none() {
            let away = rng.random_range(0.0..churn.away_s.max(0.001));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs_f64(away)) => {}
            }
        }
    }
    log
}

fn reached(log: &ClientLog, head: &watch::Receiver<Option<Offset>>) -> bool {
    match *head.borrow() {
        Some(h) => log.last().is_some_and(|l| l >= h),
        None => false,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: read until `stay` is over (not once the end's head is set), the server
/// ends it, or the client has caught up with the head.
async fn session(
    mut ws: Ws,
    stay: Duration,
    clean: bool,
    log: &mut ClientLog,
    counters: &FeedCounters,
    head: &mut watch::Receiver<Option<Offset>>,
    stop: &CancellationToken,
) {
    let leave = tokio::time::sleep(stay);
    tokio::pin!(leave);
    loop {
        let ending = head.borrow().is_some();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut leave, if !ending => break,
            r = head.changed() => {
                if r.is_err() || reached(log, head) {
                    break;
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    read_message(t.as_str(), log, counters);
                    if reached(log, head) {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    bump(&counters.server_closes);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if clean {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

fn read_message(text: &str, log: &mut ClientLog, counters: &FeedCounters) {
    let Ok(m) = serde_json::from_str::<Msg>(text) else {
        return;
    };
    let offset = m.offset.as_deref().and_then(|o| o.parse::<Offset>().ok());
    match m.kind.as_str() {
        "hello" => {
            if m.resume_error.is_some() {
                bump(&counters.resume_errors);
            }
            if log.base.is_none() {
                log.base = offset;
            }
        }
        "start" | "update" | "end" => {
            let Some(o) = offset else { return };
            bump(&counters.events);
            if log.last().is_some_and(|l| o <= l) {
                bump(&counters.dups);
            } else {
                log.received.push(o);
            }
        }
        _ => {}
    }
}

/// One client's events against its channel's stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Stream records after the client's base, up to the last it received.
    pub expected: usize,
    pub received: usize,
    /// Expected and not received.
    pub gaps: usize,
    /// Received and not in the stream.
    pub unknown: usize,
}

impl std::ops::AddAssign for Check {
    fn add_assign(&mut self, o: Self) {
        self.expected += o.expected;
        self.received += o.received;
        self.gaps += o.gaps;
        self.unknown += o.unknown;
    }
}

/// `stream`: the channel's offsets, ascending. A merge of the two sorted lists.
pub fn check(stream: &[Offset], log: &ClientLog) -> Check {
    let (Some(base), Some(last)) = (log.base, log.last()) else {
        return Check::default();
    };
    let from = stream.partition_point(|o| *o <= base);
    let to = stream.partition_point(|o| *o <= last);
    let window = &stream[from..to.max(from)];
    let (mut i, mut matched) = (0, 0);
    for o in &log.received {
        while i < window.len() && window[i] < *o {
            i += 1;
        }
        if i < window.len() && window[i] == *o {
            matched += 1;
            i += 1;
        }
    }
    Check {
        expected: window.len(),
        received: log.received.len(),
        gaps: window.len() - matched,
        unknown: log.received.len() - matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(ms: u64) -> Offset {
        Offset { ms, seq: 0 }
    }

    fn log(base: u64, received: &[u64]) -> ClientLog {
        ClientLog {
            channel: "a".into(),
            base: Some(o(base)),
            received: received.iter().map(|m| o(*m)).collect(),
            caught_up: true,
        }
    }

    #[test]
    fn gaps_and_unknown_events_are_counted_inside_the_window_only() {
        let stream: Vec<Offset> = [1, 2, 3, 4, 5, 6, 7].map(o).to_vec();
        // Base 2: 3..=6 expected (7 came after the last received: not yet a gap).
        let ok = check(&stream, &log(2, &[3, 4, 5, 6]));
        assert_eq!((ok.expected, ok.gaps, ok.unknown), (4, 0, 0));
        let gap = check(&stream, &log(2, &[3, 6]));
        assert_eq!((gap.expected, gap.gaps, gap.unknown), (4, 2, 0));
        let odd = check(&stream, &log(0, &[1, 9]));
        assert_eq!((odd.expected, odd.gaps, odd.unknown), (7, 6, 1));
        assert_eq!(check(&stream, &ClientLog::default()), Check::default());
        // Nothing received: the window ends at the base.
        assert_eq!(check(&stream, &log(3, &[])).expected, 0);
    }

    #[test]
    fn messages_keep_offsets_in_order_and_count_repeats() {
        let c = FeedCounters::default();
        let mut l = ClientLog::default();
        read_message(
            r#"{"type":"hello","offset":"10-0","resumed":false}"#,
            &mut l,
            &c,
        );
        read_message(
            r#"{"type":"snapshot","offset":"10-0","cues":[]}"#,
            &mut l,
            &c,
        );
        read_message(r#"{"type":"start","offset":"11-0","cue":{}}"#, &mut l, &c);
        read_message(r#"{"type":"update","offset":"11-0","cue":{}}"#, &mut l, &c);
        read_message(
            r#"{"type":"hello","offset":"11-0","resumed":false,"resume_error":"trimmed"}"#,
            &mut l,
            &c,
        );
        read_message(r#"{"type":"end","offset":"12-1","cue":{}}"#, &mut l, &c);
        assert_eq!(l.base, Some(o(10)));
        assert_eq!(l.received, vec![o(11), Offset { ms: 12, seq: 1 }]);
        assert_eq!(c.dups.load(Ordering::Relaxed), 1);
        assert_eq!(c.events.load(Ordering::Relaxed), 3);
        assert_eq!(c.resume_errors.load(Ordering::Relaxed), 1);
    }
}
