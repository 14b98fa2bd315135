//! What the fleet tests read of their `shopcue run` processes: each one's status and the
//! channels it holds and runs, signals sent to it, and a wait for the fleet to reach a
//! state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Pod name → the channels it holds and runs.
pub type Seen = BTreeMap<String, BTreeSet<String>>;

/// One `shopcue run` process of a fleet test.
pub trait FleetPod {
    fn name(&self) -> &str;
    /// `http://host:port`.
    fn base(&self) -> String;
    fn pid(&self) -> Option<u32>;

    /// Its `/v1/status`, if it answers in 2 s.
    async fn status(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/status", self.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The channels it holds (`fleet.held`) and runs (`up`).
    async fn running(&self) -> Option<BTreeSet<String>> {
        let status = self.status().await?;
        let held: BTreeSet<String> = status["fleet"]["held"]
            .as_object()?
            .keys()
            .cloned()
            .collect();
        let up: BTreeSet<String> = status["channels"]
            .as_array()?
            .iter()
            .filter(|c| c["state"] == "up")
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect();
        Some(held.intersection(&up).cloned().collect())
    }

    /// `kill <sig>` it.
    fn signal(&self, sig: &str) {
        let who = self.name();
        let pid = self.pid().unwrap_or_else(|| panic!("{who} is not running"));
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {who}");
    }
}

/// Polls `pods` until `done` holds of what each runs (panics after `limit`, saying what
/// they ran); returns how long it took. No channel may ever run on two pods that both
/// answer.
pub async fn wait_for<P: FleetPod>(
    what: &str,
    pods: &[&P],
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let mut seen = Seen::new();
        for p in pods {
            if let Some(r) = p.running().await {
                seen.insert(p.name().to_string(), r);
            }
        }
        let mut all = BTreeSet::new();
        for c in seen.values().flatten() {
            assert!(all.insert(c.clone()), "{c} runs on two analysers: {seen:?}");
        }
        if seen.len() == pods.len() && done(&seen) {
            eprintln!("{what}: {:.1} s, {seen:?}", t0.elapsed().as_secs_f64());
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; running {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sets `cmd` (a `shopcue run`) up as one leased analyser `pod` of a fleet: the registry and
/// leases in Redis, the admin `key`, text logs at info to `<target tmp>/<folder>/<pod>.log`,
/// killed when dropped.
pub fn leased_analyser(cmd: &mut tokio::process::Command, folder: &str, pod: &str, key: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join(format!("{pod}.log"))).unwrap();
    cmd.env("SHOPCUE__REGISTRY__STORE", "redis")
        .env("SHOPCUE__FLEET__LEASES", "true")
        .env("SHOPCUE__FLEET__POD", pod)
        .env("SHOPCUE__SERVER__ADMIN_KEY", key)
        .env("RUST_LOG", "info")
        .env("SHOPCUE__LOG__FORMAT", "text")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
}
