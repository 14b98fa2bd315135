//! The writer: the one task that drains the outbox into Redis, in order.
//!
//! Each round takes up to `redis.batch` events from the front of the outbox, splits them by
//! channel (keeping each channel's order) and writes every channel's part with one call of
//! [`WRITE_SCRIPT`], all calls in flight together on the shared connection. The script is
//! atomic and all-or-nothing: it checks the key types first, so a channel whose key holds
//! something else is refused before anything of it is written.
//!
//! What happens to a channel's part depends on how its write ends ([`classify`]):
//! - written: removed from the outbox;
//! - refused by Redis for good (`WRONGTYPE`, a script error, any server error not listed
//!   as transient): removed, counted in `rejected`, kept as the channel's fault
//!   ([`super::RedisBus::rejection`]) and logged once per fault; never retried, so it
//!   cannot hold up the channels behind it;
//! - transient (connection refused or lost, timeout, `LOADING`, `BUSY`, `OOM`, `READONLY`,
//!   …): kept in the outbox and retried with back-off (`redis.retry_initial_ms` doubling up
//!   to `redis.retry_max_ms`) while the outbox's own bound (`redis.outage_buffer`, oldest
//!   dropped and counted) limits what waits.
//!
//! Exactly once: every stream entry carries, beside the event (`e`), its writer's id and
//! outbox sequence (`w` = `<writer>:<seq>`). Before adding, the script looks at the
//! stream's last 16 entries for this writer's newest sequence and skips events at or below
//! it, so a retry after a lost reply (Redis crashed after writing, before answering) does
//! not add them twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Inner;
use crate::cue::CueEvent;
use crate::cuebus::BusError;

/// KEYS: the stream, the active hash, the channel's lease. ARGV: MAXLEN, the writer id,
/// the fence (empty: not fencing; else the lease's value the write is made under), then
/// four per event: its outbox sequence, the event JSON, the cue id, the cue JSON (empty:
/// the cue ended).
const WRITE_SCRIPT: &str = r#"
local function wrong(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t ..
      ', the cue bus needs a ' .. want .. ' there')
  end
end
local err = wrong(KEYS[1], 'stream') or wrong(KEYS[2], 'hash')
if err then return err end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return redis.error_reply('FENCED ' .. KEYS[3] .. ' is not held by ' .. ARGV[3])
end
local done = -1
local mine = ARGV[2] .. ':'
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 16)) do
  local fields = entry[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'w' and string.sub(fields[i + 1], 1, #mine) == mine then
      done = tonumber(string.sub(fields[i + 1], #mine + 1)) or -1
    end
  end
  if done >= 0 then break end
end
local written = 0
for i = 4, #ARGV, 4 do
  if tonumber(ARGV[i]) > done then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'e', ARGV[i + 1], 'w', mine .. ARGV[i])
    if ARGV[i + 3] == '' then
      redis.call('HDEL', KEYS[2], ARGV[i + 2])
    else
      redis.call('HSET', KEYS[2], ARGV[i + 2], ARGV[i + 3])
    end
    written = written + 1
  end
end
return written
"#;

/// Server error codes that say "not now" rather than "never": retried with back-off.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "NOAUTH",
    "NOPERM",
    "MOVED",
    "ASK",
];

/// One channel's part of a batch, in outbox order.
struct Part {
    channel: String,
    events: Vec<(u64, CueEvent)>,
}

enum Failure {
    /// Redis refused it for good: drop and report, never retry.
    Permanent(BusError),
    /// Written under a lease this process no longer holds: dropped, counted in `fenced`.
    Fenced(String),
    /// Try again later.
    Transient(String),
}

/// Writer state that lives across rounds.
struct Round {
    backoff: Duration,
    outage_since: Option<Instant>,
}

/// The writer task: drains the outbox until the bus is dropped.
pub(super) async fn run(inner: Arc<Inner>) {
    let script = redis::Script::new(WRITE_SCRIPT);
    let initial = Duration::from_millis(inner.settings.retry_initial_ms);
    let max = Duration::from_millis(inner.settings.retry_max_ms);
    let mut round = Round {
        backoff: initial,
        outage_since: None,
    };
    loop {
        let batch = take_batch(&inner);
        if batch.is_empty() {
            inner.progress.notify_waiters();
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.shutdown.cancelled() => return,
            }
        }
        let parts = split_by_channel(batch);
        let outcomes =
            futures::future::join_all(parts.iter().map(|p| write_part(&inner, &script, p))).await;
        let mut done = HashSet::new();
        let mut transient = None;
        for (part, outcome) in parts.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    done.extend(part.events.iter().map(|(s, _)| *s));
                    inner
                        .stored
                        .fetch_add(part.events.len() as u64, Ordering::Relaxed);
                    inner.clear_fault(&part.channel);
                }
                Err(Failure::Permanent(e)) => {
                    done.extend(part.events.iter().map(|(s, _)| *s));
                    inner.reject(&part.channel, part.events.len(), e);
                }
                Err(Failure::Fenced(why)) => {
                    done.extend(part.events.iter().map(|(s, _)| *s));
                    let n = part.events.len() as u64;
                    let total = inner.fenced.fetch_add(n, Ordering::Relaxed) + n;
                    tracing::warn!(channel = %part.channel, events = n, fenced_total = total, why = %why, "cue bus: events written under a lease this process no longer holds are refused (fencing)");
                }
                Err(Failure::Transient(why)) => transient = Some(why),
            }
        }
        inner.remove_from_outbox(&done);
        if !done.is_empty() {
            inner.progress.notify_waiters();
        }
        match transient {
            None => recovered(&inner, &mut round, initial),
            Some(why) => {
                failing(&inner, &mut round, &why);
                // Something else went through: go on at once; nothing did: back off.
                if done.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(round.backoff) => {}
                        _ = inner.shutdown.cancelled() => return,
                    }
                    round.backoff = (round.backoff * 2).min(max);
                }
            }
        }
    }
}

fn take_batch(inner: &Inner) -> Vec<(u64, CueEvent)> {
    let ob = inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
    ob.items
        .iter()
        .take(inner.settings.batch)
        .cloned()
        .collect()
}

/// The batch's events grouped by channel, channels in order of first appearance.
fn split_by_channel(batch: Vec<(u64, CueEvent)>) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for (seq, event) in batch {
        let channel = &event.cue().channel;
        match parts.iter_mut().find(|p| &p.channel == channel) {
            Some(p) => p.events.push((seq, event)),
            None => parts.push(Part {
                channel: channel.clone(),
                events: vec![(seq, event)],
            }),
        }
    }
    parts
}

async fn write_part(inner: &Inner, script: &redis::Script, part: &Part) -> Result<(), Failure> {
    let mut call = script.prepare_invoke();
    call.key(inner.stream_key(&part.channel))
        .key(inner.active_key(&part.channel))
        .key(inner.lease_key(&part.channel))
        .arg(inner.history)
        .arg(&inner.writer_id)
        .arg(inner.fence_of(&part.channel));
    for (seq, event) in &part.events {
        let cue = event.cue();
        let cue_json = match event {
            CueEvent::Start(c) | CueEvent::Update(c) => {
                serde_json::to_string(c).unwrap_or_default()
            }
            CueEvent::End(_) => String::new(),
        };
        call.arg(*seq)
            .arg(serde_json::to_string(event).unwrap_or_default())
            .arg(&cue.id)
            .arg(cue_json);
    }
    let mut conn = inner
        .conn()
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
    match call.invoke_async::<u64>(&mut conn).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                inner.drop_conn().await;
            }
            Err(classify(inner, &part.channel, &e))
        }
    }
}

/// Transient or permanent; a permanent error names the key it is about.
fn classify(inner: &Inner, channel: &str, e: &redis::RedisError) -> Failure {
    let Some(code) = e.code() else {
        // No answer from the server (refused, dropped, timed out, unparsable): transient.
        return Failure::Transient(e.to_string());
    };
    let detail = e.detail().unwrap_or_default();
    if code == "FENCED" {
        return Failure::Fenced(detail.to_string());
    }
    if TRANSIENT_CODES.contains(&code)
        || (code == "ERR" && detail.contains("max number of clients"))
    {
        return Failure::Transient(e.to_string());
    }
    let (stream, active) = (inner.stream_key(channel), inner.active_key(channel));
    let (key, why) = if let Some(rest) = detail.strip_prefix(&format!("{stream} ")) {
        (stream, format!("{rest} ({code})"))
    } else if let Some(rest) = detail.strip_prefix(&format!("{active} ")) {
        (active, format!("{rest} ({code})"))
    } else {
        (stream, e.to_string())
    };
    Failure::Permanent(BusError::Rejected {
        channel: channel.to_string(),
        key,
        why,
    })
}

/// A round without transient failures: end the outage, if there was one.
fn recovered(inner: &Inner, round: &mut Round, initial: Duration) {
    inner.healthy.store(true, Ordering::Relaxed);
    round.backoff = initial;
    if let Some(since) = round.outage_since.take() {
        inner.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            url = %crate::redact::redact_url(&inner.url),
            outage_ms = since.elapsed().as_millis() as u64,
            buffered = inner.outbox_len(),
            dropped_total = inner.dropped.load(Ordering::Relaxed),
            "cue bus: redis reachable again, flushing buffered cues"
        );
    }
}

fn failing(inner: &Inner, round: &mut Round, why: &str) {
    inner.healthy.store(false, Ordering::Relaxed);
    if round.outage_since.is_none() {
        round.outage_since = Some(Instant::now());
        tracing::warn!(
            url = %crate::redact::redact_url(&inner.url),
            error = %why,
            buffered = inner.outbox_len(),
            "cue bus: cannot write to redis; buffering cues and retrying"
        );
    } else {
        tracing::debug!(url = %crate::redact::redact_url(&inner.url), error = %why, "cue bus: redis write retry failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_batch_by_channel_keeping_each_channels_order() {
        let cue = |ch: &str, id: &str| {
            crate::cue::Cue {
            id: id.into(),
            channel: ch.into(),
            ..serde_json::from_str(
                r#"{"id":"x","channel":"x","product_id":"p","start":"2026-11-21T10:00:00.000Z","pts":1.0,"score":0.5,"shot":1,"boxes":[]}"#,
            )
            .unwrap()
        }
        };
        let batch = vec![
            (0, CueEvent::Start(cue("a", "1"))),
            (1, CueEvent::Start(cue("b", "2"))),
            (2, CueEvent::End(cue("a", "1"))),
            (3, CueEvent::Start(cue("c", "3"))),
            (4, CueEvent::Start(cue("b", "4"))),
        ];
        let parts = split_by_channel(batch);
        let got: Vec<(String, Vec<u64>)> = parts
            .iter()
            .map(|p| {
                (
                    p.channel.clone(),
                    p.events.iter().map(|(s, _)| *s).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), vec![0, 2]),
                ("b".into(), vec![1, 4]),
                ("c".into(), vec![3]),
            ]
        );
    }
}
