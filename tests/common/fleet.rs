//! What the fleet tests read of one `shopcue run` process: its status, the channels it
//! holds and runs, and signals sent to it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

/// `/v1/status` of the process at `base` (`http://host:port`), if it answers in 2 s.
pub async fn status(base: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The channels a status says the process holds (`fleet.held`) and runs (`up`).
pub fn running(status: &Value) -> Option<BTreeSet<String>> {
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

/// `kill <sig> <pid>`; panics naming `who` when it fails.
pub fn signal(pid: Option<u32>, sig: &str, who: &str) {
    let pid = pid
        .unwrap_or_else(|| panic!("{who} is not running"))
        .to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {who}");
}
