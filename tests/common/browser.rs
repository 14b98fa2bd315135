//! `node web/tests/driver.mjs`: one headless Chromium page (Debian's /usr/bin/chromium,
//! driven by playwright-core), commanded by JSON lines; shared by the browser tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// `node web/tests/driver.mjs`: one headless Chromium page, driven by JSON lines.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Why the browser tests cannot run here, if they cannot.
pub fn missing_browser() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is missing (scripts/setup.sh test installs it)"
        ));
    }
    if !super::root()
        .join("web/node_modules/playwright-core")
        .is_dir()
    {
        return Some(
            "web/node_modules is missing (scripts/setup.sh test: npm ci --prefix web)".into(),
        );
    }
    None
}

impl Browser {
    /// The browser, or None (after saying why) when chromium or web/node_modules is missing.
    pub async fn launch(test: &str) -> Option<Self> {
        if let Some(why) = missing_browser() {
            super::peer_missing(test, &why);
            return None;
        }
        let mut child = tokio::process::Command::new("node")
            .arg(super::root().join("web/tests/driver.mjs"))
            .current_dir(super::root().join("web"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/setup.sh)");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("driver stdout");
        let mut b = Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        let hello = b.read(Duration::from_secs(30)).await;
        assert_eq!(hello["ready"], true, "driver did not start: {hello}");
        Some(b)
    }

    pub async fn read(&mut self, limit: Duration) -> Value {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .expect("driver answers in time")
            .expect("driver stdout readable")
            .expect("driver still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }

    pub async fn command(&mut self, cmd: Value, timeout_ms: u64) -> Result<Value, Value> {
        let mut cmd = cmd;
        cmd["timeout_ms"] = json!(timeout_ms);
        let stdin = self.stdin.as_mut().expect("driver stdin open");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write to driver");
        stdin.flush().await.expect("flush driver stdin");
        let answer = self
            .read(Duration::from_millis(timeout_ms) + Duration::from_secs(10))
            .await;
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(answer)
        }
    }

    pub async fn goto(&mut self, url: &str) {
        if let Err(e) = self
            .command(json!({"op": "goto", "url": url}), 15_000)
            .await
        {
            panic!("goto {url}: {e}");
        }
    }

    /// Evaluate a JavaScript expression in the page (promises are awaited).
    pub async fn eval(&mut self, js: &str) -> Value {
        match self.command(json!({"op": "eval", "js": js}), 15_000).await {
            Ok(v) => v,
            Err(e) => panic!("eval {js}: {e}"),
        }
    }

    /// Poll `js` until it is truthy; its value.
    pub async fn wait(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        let ms = timeout.as_millis() as u64;
        match self.command(json!({"op": "wait", "js": js}), ms).await {
            Ok(v) => v,
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }

    /// [`Self::wait`], and on a timeout the value of `dump` in the panic message.
    pub async fn wait_or_dump(
        &mut self,
        what: &str,
        js: &str,
        timeout: Duration,
        dump: &str,
    ) -> Value {
        let ms = timeout.as_millis() as u64;
        match self.command(json!({"op": "wait", "js": js}), ms).await {
            Ok(v) => v,
            Err(e) => {
                let state = self.command(json!({"op": "eval", "js": dump}), 5000).await;
                panic!("waiting for {what}: {e}\nstate: {state:?}")
            }
        }
    }

    /// The page's requests so far that failed or were answered with a status >= 400.
    pub async fn failures(&mut self) -> Vec<Value> {
        match self.command(json!({"op": "failures"}), 5_000).await {
            Ok(Value::Array(v)) => v,
            other => panic!("failures: {other:?}"),
        }
    }

    /// Take a screenshot of the page to `path` (PNG).
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        let cmd = json!({"op": "screenshot", "path": path.display().to_string()});
        if let Err(e) = self.command(cmd, 15_000).await {
            panic!("screenshot {}: {e}", path.display());
        }
    }

    /// Run a driver command that answers nothing (`viewport`, `focus`, `press`…).
    pub async fn act(&mut self, cmd: Value) {
        if let Err(e) = self.command(cmd.clone(), 15_000).await {
            panic!("{cmd}: {e}");
        }
    }

    /// Close the browser (stdin closed: the driver closes Chromium and exits).
    pub async fn close(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
