//! `[fleet]`: analysers sharing the registry's channels through Redis leases, and the
//! pure plan of what one analyser claims and gives up on each round (no I/O).
//!
//! Balance: with `n` registered channels and `p` live analysers, each takes channels while
//! it holds fewer than `ceil(n / p)` (and fewer than its `capacity`), and gives one up per
//! round while it holds more than `ceil(n / p)`: a new analyser gets its share as the
//! others hand channels over, one at a time, each drained cleanly before it is released.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// `[fleet]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// Share the registry's channels (`registry.store = "redis"`) among every analyser on
    /// the same Redis with leases; off: this process runs every registered channel.
    pub leases: bool,
    /// This analyser's name in the fleet; `""`: host name, process id and a random suffix.
    pub pod: String,
    /// Lease time in ms: a dead analyser's channels are taken over within about this long.
    /// Leases are renewed every third of it.
    pub lease_ms: u64,
    /// Most channels this analyser holds (0: no limit but `registry.max_channels`).
    pub capacity: usize,
    /// Analyse channels (claim leases); off: an edge process that only serves every
    /// registered channel's playlists and feed.
    pub analyse: bool,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            leases: false,
            pod: String::new(),
            lease_ms: 10_000,
            capacity: 0,
            analyse: true,
        }
    }
}

impl FleetSettings {
    /// `Err((key, why))` with the key relative to `[fleet]`.
    /// `registry_in_redis`: `registry.store` is `"redis"`.
    pub fn validate(&self, registry_in_redis: bool) -> Result<(), (&'static str, String)> {
        if !(3_000..=600_000).contains(&self.lease_ms) {
            return Err(("lease_ms", "must be from 3000 to 600000".into()));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.pod.len() > 64 || !self.pod.chars().all(ok) {
            return Err((
                "pod",
                "at most 64 characters from A-Z a-z 0-9 - _ .".to_string(),
            ));
        }
        if self.leases && !registry_in_redis {
            return Err((
                "leases",
                "needs the registry in Redis (registry.store = \"redis\")".into(),
            ));
        }
        if !self.analyse && !self.leases {
            // Without leases every process runs every registered channel: an edge that
            // was meant to analyse nothing would analyse everything.
            return Err((
                "analyse",
                "false (an edge process) needs fleet.leases = true".into(),
            ));
        }
        Ok(())
    }

    /// The pod name: the setting, or `<host>-<pid>-<random>`.
    pub fn pod_name(&self) -> String {
        if !self.pod.is_empty() {
            return self.pod.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect();
        let host = if host.is_empty() { "pod".into() } else { host };
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    }
}

/// What one analyser sees at the start of a round.
#[derive(Debug, Clone)]
pub struct Round<'a> {
    /// This analyser.
    pub pod: &'a str,
    /// Live analysers (this one included).
    pub live: usize,
    /// Registered channels: id → the pod holding its lease (`None`: free).
    pub channels: &'a BTreeMap<String, Option<String>>,
    /// Channels this analyser runs now.
    pub mine: &'a BTreeSet<String>,
    /// `[fleet] capacity` (0: none) and `registry.max_channels`.
    pub capacity: usize,
    pub max_channels: usize,
}

/// What to do this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Channels to stop and give up (unregistered, or one above the fair share).
    pub release: Vec<String>,
    /// Free channels to try to claim, in order.
    pub claim: Vec<String>,
}

/// `ceil(channels / live)`, at least 1 when there are channels.
pub fn fair_share(channels: usize, live: usize) -> usize {
    channels.div_ceil(live.max(1))
}

/// The round's plan (see the module docs).
pub fn plan(r: &Round<'_>) -> Plan {
    let mut out = Plan::default();
    let mut held: Vec<&String> = r.mine.iter().collect();
    for id in &held {
        if !r.channels.contains_key(*id) {
            out.release.push((*id).clone());
        }
    }
    held.retain(|id| r.channels.contains_key(*id));
    let share = fair_share(r.channels.len(), r.live);
    let mut limit = share.min(r.max_channels);
    if r.capacity > 0 {
        limit = limit.min(r.capacity);
    }
    if held.len() > limit {
        // One hand-over per round: the others need a round to take it.
        if let Some(last) = held.pop() {
            out.release.push(last.clone());
        }
        return out;
    }
    let room = limit - held.len();
    let mut free: Vec<&String> = r
        .channels
        .iter()
        .filter(|(id, holder)| holder.is_none() && !r.mine.contains(*id))
        .map(|(id, _)| id)
        .collect();
    // Each pod tries the free channels in its own order, so pods claiming at the same
    // moment mostly try different ones.
    free.sort_by_key(|id| spread(r.pod, id));
    out.claim = free.into_iter().take(room).cloned().collect();
    out
}

fn spread(pod: &str, channel: &str) -> u64 {
    // FNV-1a: stable across processes (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod.bytes().chain([0u8]).chain(channel.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(spec: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        spec.iter()
            .map(|(id, h)| (id.to_string(), h.map(str::to_string)))
            .collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn round<'a>(
        live: usize,
        ch: &'a BTreeMap<String, Option<String>>,
        mine: &'a BTreeSet<String>,
    ) -> Round<'a> {
        Round {
            pod: "a",
            live,
            channels: ch,
            mine,
            capacity: 0,
            max_channels: 256,
        }
    }

    #[test]
    fn claims_up_to_the_fair_share() {
        let ch = channels(&[
            ("1", None),
            ("2", None),
            ("3", None),
            ("4", None),
            ("5", None),
        ]);
        let mine = set(&[]);
        // 5 channels, 2 pods: at most 3 each.
        let p = plan(&round(2, &ch, &mine));
        assert_eq!(p.claim.len(), 3);
        assert!(p.release.is_empty());
        // Alone: everything.
        assert_eq!(plan(&round(1, &ch, &mine)).claim.len(), 5);
    }

    #[test]
    fn never_claims_a_held_channel_and_respects_capacity() {
        let ch = channels(&[("1", Some("b")), ("2", None), ("3", Some("a")), ("4", None)]);
        let mine = set(&["3"]);
        let p = plan(&round(1, &ch, &mine));
        // 4 channels, 1 pod: share 4; it holds 3, the 1 held elsewhere is not free.
        let claimed: BTreeSet<String> = p.claim.iter().cloned().collect();
        assert_eq!(claimed, set(&["2", "4"]));
        let capped = Round {
            capacity: 2,
            ..round(1, &ch, &mine)
        };
        assert_eq!(plan(&capped).claim.len(), 1);
        let full = Round {
            capacity: 1,
            ..round(1, &ch, &mine)
        };
        assert_eq!(plan(&full), Plan::default());
    }

    #[test]
    fn hands_over_one_channel_a_round_when_above_the_share() {
        // 6 channels held by this pod; a second and third pod joined: share 2.
        let ch = channels(&[
            ("1", Some("a")),
            ("2", Some("a")),
            ("3", Some("a")),
            ("4", Some("a")),
            ("5", Some("a")),
            ("6", Some("a")),
        ]);
        let mine = set(&["1", "2", "3", "4", "5", "6"]);
        let p = plan(&round(3, &ch, &mine));
        assert_eq!(p.release, vec!["6".to_string()]);
        assert!(p.claim.is_empty());
        // At the share: nothing moves.
        let mine = set(&["1", "2"]);
        assert_eq!(plan(&round(3, &ch, &mine)), Plan::default());
    }

    #[test]
    fn gives_up_unregistered_channels() {
        let ch = channels(&[("1", Some("a"))]);
        let mine = set(&["1", "gone"]);
        let p = plan(&round(1, &ch, &mine));
        assert_eq!(p.release, vec!["gone".to_string()]);
    }

    #[test]
    fn pods_try_free_channels_in_different_orders() {
        let ids: Vec<String> = (0..8).map(|i| format!("ch{i}")).collect();
        let mut a = ids.clone();
        a.sort_by_key(|c| spread("pod-a", c));
        let mut b = ids;
        b.sort_by_key(|c| spread("pod-b", c));
        assert_ne!(a, b);
    }

    #[test]
    fn settings_are_checked() {
        assert!(FleetSettings::default().validate(false).is_ok());
        let on = FleetSettings {
            leases: true,
            ..FleetSettings::default()
        };
        assert_eq!(on.validate(false).unwrap_err().0, "leases");
        assert!(on.validate(true).is_ok());
        let bad = FleetSettings {
            pod: "a#b".into(),
            ..FleetSettings::default()
        };
        assert_eq!(bad.validate(false).unwrap_err().0, "pod");
        let bad = FleetSettings {
            lease_ms: 100,
            ..FleetSettings::default()
        };
        assert_eq!(bad.validate(false).unwrap_err().0, "lease_ms");
        let edge = FleetSettings {
            analyse: false,
            ..FleetSettings::default()
        };
        assert_eq!(edge.validate(true).unwrap_err().0, "analyse");
        let edge = FleetSettings {
            leases: true,
            ..edge
        };
        assert!(edge.validate(true).is_ok());
        let name = FleetSettings::default().pod_name();
        assert!(!name.is_empty() && !name.contains('#'), "{name}");
    }
}
