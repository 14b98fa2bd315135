//! Channel leases for a fleet of analysers sharing one Redis (`[fleet]`): who analyses
//! which channel, and the fencing token every write of that channel carries.
//!
//! Keys (prefix `redis.key_prefix`):
//! - `<p>:lease:C`: the lease of channel `C`, value `<pod>#<token>`, with a time to live
//!   (`SET NX PX`). Renewed and released only by a script that checks the value, so a
//!   former owner can neither extend nor drop a lease someone else took.
//! - `<p>:fence:C`: the channel's fencing counter; each claim takes the next token. The
//!   cue writer's script refuses a write whose lease value is not the key's value at that
//!   moment ([`super::writer`]), so a paused or cut-off former owner never writes again.
//! - `<p>:pods`: a sorted set of live analysers, scored by when their heartbeat expires
//!   (Redis's own clock, so the pods' clocks do not matter).

use super::RedisSettings;
use super::records::RedisRecords;
use crate::cuebus::BusError;

/// The lease key of `channel`.
pub fn lease_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}:lease:{channel}")
}

/// KEYS: the pods set. ARGV: pod, lease ms. Drops expired pods, renews this one, and
/// answers the live pods.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// KEYS: lease, fence counter. ARGV: pod, lease ms. The new token, or nil when held.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
return token
"#;

/// KEYS: lease. ARGV: holder, lease ms. 1 when renewed, 0 when not held by `holder`.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// KEYS: lease, pods set. ARGV: holder, pod. Deletes the lease if `holder` has it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: pods set. ARGV: pod. This analyser leaves the fleet.
const LEAVE: &str = r#"
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

/// One analyser's view of the leases: claim, renew and release its own, read everyone's.
pub struct RedisLeases {
    records: RedisRecords,
    prefix: String,
    pod: String,
    lease_ms: u64,
}

/// A lease this analyser holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: grows with each claim of the channel.
    pub token: u64,
    /// The lease key's value, `<pod>#<token>`: what every write of the channel carries.
    pub holder: String,
}

impl RedisLeases {
    /// Check the url; Redis need not be up yet. `pod` must not contain `#`.
    pub fn new(settings: &RedisSettings, pod: &str, lease_ms: u64) -> Result<Self, BusError> {
        let prefix = settings.key_prefix.clone();
        Ok(Self {
            records: RedisRecords::new(settings, &format!("{prefix}:pods"))?,
            prefix,
            pod: pod.to_string(),
            lease_ms,
        })
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    fn pods_key(&self) -> String {
        format!("{}:pods", self.prefix)
    }

    async fn eval<T: redis::FromRedisValue + Send + 'static>(
        &self,
        op: &'static str,
        script: &'static str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, BusError> {
        self.records
            .run(op, |mut c| async move {
                let script = redis::Script::new(script);
                let mut call = script.prepare_invoke();
                for k in keys {
                    call.key(k);
                }
                for a in args {
                    call.arg(a);
                }
                call.invoke_async(&mut c).await
            })
            .await
    }

    /// Say this analyser is alive (for one lease time); the live analysers, this one
    /// included.
    pub async fn heartbeat(&self) -> Result<Vec<String>, BusError> {
        let args = vec![self.pod.clone(), self.lease_ms.to_string()];
        self.eval("heartbeat", HEARTBEAT, vec![self.pods_key()], args)
            .await
    }

    /// Leave the fleet now (shutdown), so the others rebalance at once.
    pub async fn leave(&self) -> Result<(), BusError> {
        let _: i64 = self
            .eval(
                "leave",
                LEAVE,
                vec![self.pods_key()],
                vec![self.pod.clone()],
            )
            .await?;
        Ok(())
    }

    /// Take `channel` if nobody holds it.
    pub async fn claim(&self, channel: &str) -> Result<Option<Lease>, BusError> {
        let keys = vec![
            lease_key(&self.prefix, channel),
            format!("{}:fence:{channel}", self.prefix),
        ];
        let args = vec![self.pod.clone(), self.lease_ms.to_string()];
        let token: Option<u64> = self.eval("claim", CLAIM, keys, args).await?;
        Ok(token.map(|token| Lease {
            token,
            holder: format!("{}#{token}", self.pod),
        }))
    }

    /// Extend `lease` by one lease time: false when this analyser no longer holds it.
    pub async fn renew(&self, channel: &str, lease: &Lease) -> Result<bool, BusError> {
        let keys = vec![lease_key(&self.prefix, channel)];
        let args = vec![lease.holder.clone(), self.lease_ms.to_string()];
        let n: i64 = self.eval("renew", RENEW, keys, args).await?;
        Ok(n == 1)
    }

    /// Give `lease` up (nothing happens when someone else holds the channel now).
    pub async fn release(&self, channel: &str, lease: &Lease) -> Result<(), BusError> {
        let keys = vec![lease_key(&self.prefix, channel), self.pods_key()];
        let args = vec![lease.holder.clone(), self.pod.clone()];
        let _: i64 = self.eval("release", RELEASE, keys, args).await?;
        Ok(())
    }

    /// Who holds each of `channels` (`<pod>#<token>`), in order; `None`: free.
    pub async fn holders(&self, channels: &[String]) -> Result<Vec<Option<String>>, BusError> {
        let keys = channels.iter().map(|c| lease_key(&self.prefix, c));
        self.records.mget(keys.collect()).await
    }
}

/// The pod part of a lease value `<pod>#<token>`.
pub fn holder_pod(holder: &str) -> &str {
    holder.rsplit_once('#').map_or(holder, |(pod, _)| pod)
}
