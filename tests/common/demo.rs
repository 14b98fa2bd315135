//! A running `shopcue demo` (the binary, or the binary in a container) and the URLs it
//! printed, read from its stdout as a user reads them.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The running demo and what it printed.
pub struct Demo {
    pub child: Child,
    /// Printed name (`dashboard`, `demo player`, …) → URL.
    pub urls: BTreeMap<String, String>,
}

impl Demo {
    /// Spawns `cmd` (stdout piped, killed on drop) and reads the URLs it prints after
    /// `shopcue demo is running`, waiting at most `limit`.
    pub async fn start(mut cmd: Command, limit: Duration) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("shopcue demo starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let urls = tokio::time::timeout(limit, async {
            let mut urls = BTreeMap::new();
            let mut running = false;
            while let Some(line) = lines.next_line().await.expect("stdout readable") {
                println!("demo: {line}");
                if line.starts_with("shopcue demo is running") {
                    running = true;
                } else if running && line.trim().is_empty() && !urls.is_empty() {
                    break;
                } else if running {
                    urls.extend(printed_urls(&line));
                }
            }
            urls
        })
        .await
        .expect("shopcue demo prints its URLs in time");
        // Keep draining stdout so the demo never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, urls }
    }

    pub fn url(&self, name: &str) -> &str {
        self.urls
            .get(name)
            .unwrap_or_else(|| panic!("shopcue demo printed no `{name}`: {:?}", self.urls))
    }
}

/// `  name   URL   name URL` → (name, URL) pairs, as `shopcue demo` prints them.
pub fn printed_urls(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = Vec::new();
    for word in line.split_whitespace() {
        if word.contains("://") {
            out.push((name.join(" "), word.to_string()));
            name.clear();
        } else {
            name.push(word);
        }
    }
    out
}
