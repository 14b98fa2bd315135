//! Helpers shared by the integration tests: footage paths and a live origin on loopback.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use shopcue::origin::LiveOrigin;
use tokio_util::sync::CancellationToken;

/// A file of the shared footage (copied to data/ by the set-up, else read from ../shared).
pub fn footage(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in ["data/footage", "../shared/data/footage"] {
        let p = root.join(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("footage {name} not found: run scripts/setup.sh (needs ../shared/data/footage)");
}

/// A running test origin: its base URL and a handle to inject faults.
pub struct TestOrigin {
    pub origin: Arc<LiveOrigin>,
    pub base: String,
    stop: CancellationToken,
}

impl TestOrigin {
    pub async fn start(file: &str, segment_secs: f64, window: usize, with_pdt: bool) -> Self {
        let path = footage(file);
        let origin = tokio::task::spawn_blocking(move || {
            LiveOrigin::from_file(&path, segment_secs, window, with_pdt)
        })
        .await
        .unwrap()
        .expect("origin builds from the footage");
        let origin = Arc::new(origin);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(shopcue::http::origin::serve(
            listener,
            origin.clone(),
            async move { s.cancelled().await },
        ));
        Self { origin, base, stop }
    }

    pub fn media_url(&self) -> String {
        format!("{}/live/index.m3u8", self.base)
    }

    pub fn master_url(&self) -> String {
        format!("{}/live/master.m3u8", self.base)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
