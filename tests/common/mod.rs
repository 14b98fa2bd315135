//! Helpers shared by the integration tests: footage paths, a live origin on loopback, a
//! real redis-server on a free loopback port, and cue fixtures.
#![allow(dead_code)]

pub mod browser;
pub mod demo;
pub mod fleet;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shopcue::file_origin::LiveOrigin;
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
        Self::start_with(file, segment_secs, window, with_pdt, None).await
    }

    /// An origin listening on `ip` (an address of this host other than loopback, such as
    /// the end of a test network), port chosen by the system.
    pub async fn start_at(ip: &str, file: &str, segment_secs: f64, window: usize) -> Self {
        Self::start_bound(ip, file, segment_secs, window, true, None).await
    }

    /// A Low-Latency HLS origin: segments published in parts of about `part_secs`.
    pub async fn start_ll(file: &str, segment_secs: f64, window: usize, part_secs: f64) -> Self {
        Self::start_with(file, segment_secs, window, true, Some(part_secs)).await
    }

    async fn start_with(
        file: &str,
        segment_secs: f64,
        window: usize,
        with_pdt: bool,
        part_secs: Option<f64>,
    ) -> Self {
        Self::start_bound("127.0.0.1", file, segment_secs, window, with_pdt, part_secs).await
    }

    async fn start_bound(
        ip: &str,
        file: &str,
        segment_secs: f64,
        window: usize,
        with_pdt: bool,
        part_secs: Option<f64>,
    ) -> Self {
        let path = footage(file);
        let origin = tokio::task::spawn_blocking(move || {
            let o = LiveOrigin::from_file(&path, segment_secs, window, with_pdt)?;
            match part_secs {
                Some(p) => o.with_parts(p),
                None => Ok(o),
            }
        })
        .await
        .unwrap()
        .expect("origin builds from the footage");
        let origin = Arc::new(origin);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(shopcue::http::file_origin::serve(
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

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shopcue::cue::{BoxSample, Cue, CueEvent, cue_id};

/// A redis-server child on 127.0.0.1:`port`, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

/// Redis settings for tests: the server at `url`, quick retries and short timeouts.
pub fn redis_settings(url: &str) -> shopcue::cuebus::RedisSettings {
    shopcue::cuebus::RedisSettings {
        url: url.into(),
        retry_initial_ms: 50,
        retry_max_ms: 300,
        block_ms: 500,
        timeout_ms: 1000,
        ..shopcue::cuebus::RedisSettings::default()
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// A server on a free port. A port picked by `free_port` can be taken by another test
    /// before redis binds it (then our child exits, and the port answers with somebody
    /// else's server), so the server is identified by its pid and another port is tried.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::spawn(free_port()) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// A server on this port (to come back after `kill`).
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port).unwrap_or_else(|why| panic!("redis-server did not start: {why}"))
    }

    /// A server that keeps its data in `dir`: an append-only file fsynced before every
    /// reply (`appendfsync always`), so a `kill` (SIGKILL, a crash) followed by
    /// `start_persistent_on(port, dir)` loses nothing the server acknowledged.
    pub fn start_persistent(dir: &std::path::Path) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::spawn_with(free_port(), Some(dir)) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// A persistent server on this port, reloading what `dir` holds (after `kill`).
    pub fn start_persistent_on(port: u16, dir: &std::path::Path) -> Self {
        Self::spawn_with(port, Some(dir))
            .unwrap_or_else(|why| panic!("redis-server did not start: {why}"))
    }

    fn spawn(port: u16) -> Result<Self, String> {
        Self::spawn_with(port, None)
    }

    fn spawn_with(port: u16, data_dir: Option<&std::path::Path>) -> Result<Self, String> {
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""];
        let dir_arg = data_dir.map(|d| d.display().to_string());
        match dir_arg.as_deref() {
            Some(dir) => args.extend([
                "--dir",
                dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh)");
        let pid = child.id();
        let mut server = Self {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                server.child = None;
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            match server_pid(port) {
                Some(p) if p == pid => return Ok(server),
                Some(p) => {
                    return Err(format!(
                        "port {port} is served by another redis-server (pid {p})"
                    ));
                }
                None if Instant::now() >= deadline => {
                    return Err(format!("redis-server did not listen on {port}"));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill it now (an outage); `start_on(self.port)` brings one back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pid of the redis-server answering on `port` (from `INFO server`), if one answers.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    conn.write_all(b"INFO server\r\n").ok()?;
    // A bulk string: `$<len>\r\n<len bytes>\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(reply.get(1..eol)?).ok()?.parse().ok()?;
            if reply.len() >= eol + 2 + len {
                break;
            }
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_795_000_000_000 + ms).expect("valid time")
}

/// Cue number `n` of `channel` (shot `n`, product `sku-n`).
pub fn cue(channel: &str, n: u64) -> Cue {
    let product_id = format!("sku-{n}");
    Cue {
        source: Default::default(),
        id: cue_id(channel, n, &product_id),
        channel: channel.into(),
        product_id,
        start: t(n as i64 * 1000),
        end: None,
        pts: n as f64,
        score: 0.5,
        shot: n,
        boxes: vec![BoxSample {
            t: t(n as i64 * 1000),
            x: 0.1,
            y: 0.2,
            w: 0.3,
            h: 0.4,
        }],
        product: None,
    }
}

pub fn start(channel: &str, n: u64) -> CueEvent {
    CueEvent::Start(cue(channel, n))
}

pub fn update(channel: &str, n: u64, score: f32) -> CueEvent {
    let mut c = cue(channel, n);
    c.score = score;
    CueEvent::Update(c)
}

pub fn end(channel: &str, n: u64) -> CueEvent {
    let mut c = cue(channel, n);
    c.end = Some(t(n as i64 * 1000 + 500));
    CueEvent::End(c)
}

/// Env switch set by `make test` (and so by CI): a test whose peer is missing fails.
pub const REQUIRE_PEERS: &str = "SHOPCUE_REQUIRE_PEERS";

/// A test peer (Chromium, node, ffmpeg, python3-yaml) is missing. Under `make test`
/// ([`REQUIRE_PEERS`] set, as CI does) the test fails with `why`; a developer running
/// `cargo test` without the peer gets a loud SKIPPED line instead.
pub fn peer_missing(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_PEERS).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: {why}; {REQUIRE_PEERS} is set (make test), so this is a failure");
    }
    eprintln!("SKIPPED {test}: {why} (set {REQUIRE_PEERS}=1 to fail instead)");
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Grocery Store dataset (copied to data/ by the set-up, else ../shared).
pub fn grocery_dataset() -> PathBuf {
    for dir in ["data/grocery", "../shared/data/grocery"] {
        let p = root().join(dir);
        if p.join("classes.csv").is_file() {
            return p;
        }
    }
    panic!("Grocery dataset not found: run scripts/setup.sh (needs ../shared/data/grocery)");
}

/// Settings for tests: models from models/, CPU only, listen on a free loopback port.
pub fn test_settings() -> shopcue::config::Settings {
    let mut s = shopcue::config::Settings::default();
    s.inference.models_dir = root().join("models").display().to_string();
    s.inference.providers = vec!["cpu".into()];
    s.server.listen = "127.0.0.1:0".into();
    s
}

/// Photos per product the test catalog learns its projection from (fewer: quicker build).
pub const TEST_CATALOG_PHOTOS: usize = 10;

/// The demo catalog (81 grocery products, iconic images, projection learned from
/// [`TEST_CATALOG_PHOTOS`] labelled photos each, never the footage's own photos), built
/// once per checkout under target/ and reused: building takes about a minute.
pub fn grocery_catalog() -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut g = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = g.as_ref() {
        return p.clone();
    }
    // v2: generations keep raw.f32 beside a projection (`catalog retrain` learns it again).
    let dir = root().join(format!(
        "target/test-data/grocery-catalog-v2-{TEST_CATALOG_PHOTOS}"
    ));
    if !dir.join("CURRENT").is_file() {
        // Built aside and renamed, so concurrent test binaries never see half a catalog.
        let tmp = root().join(format!(
            "target/test-data/grocery-catalog-tmp-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(tmp.with_file_name(format!(
            "grocery-catalog-tmp-{}.sources",
            std::process::id()
        )));
        std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        let s = test_settings();
        let models = shopcue::inference::Models::load(&s.inference)
            .expect("models load (run scripts/setup.sh)");
        shopcue::catalog::grocery::build_catalog(
            &models,
            &s.catalog,
            &grocery_dataset(),
            &tmp,
            Some(TEST_CATALOG_PHOTOS),
            false,
        )
        .expect("grocery catalog builds");
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test binary won the race; use its catalog.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    assert!(
        dir.join("CURRENT").is_file(),
        "no catalog in {}",
        dir.display()
    );
    *g = Some(dir.clone());
    dir
}

/// grocery_shots.mp4: the product of each 2 s shot, in order (ground_truth.json).
pub const GROCERY_PRODUCTS: [&str; 6] = [
    "Bravo-Apple-Juice",
    "Arla-Standard-Milk",
    "Oatly-Oat-Milk",
    "Arla-Natural-Yoghurt",
    "God-Morgon-Orange-Juice",
    "Alpro-Fresh-Soy-Milk",
];

/// Serves the files of `dir` at `/vod/{file}` on 127.0.0.1:0 (refusing paths with `/` or
/// `..`); answers the URL of `/vod/index.m3u8`.
pub async fn serve_dir(dir: PathBuf) -> String {
    use axum::extract::Path;
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/vod/{file}",
        axum::routing::get(move |Path(file): Path<String>| {
            let dir = dir.clone();
            async move {
                if file.contains('/') || file.contains("..") {
                    return Err(StatusCode::BAD_REQUEST);
                }
                tokio::fs::read(dir.join(&file))
                    .await
                    .map_err(|_| StatusCode::NOT_FOUND)
            }
        }),
    );
    format!("{}/vod/index.m3u8", serve_router(app).await)
}

/// `app` on a loopback listener (port 0) for the rest of the test; its base URL.
pub async fn serve_router(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A copy of a catalog folder's live generation, for a test that changes it (operator
/// feedback, retrains) without touching the shared one.
pub fn copy_catalog(from: &Path, to: &Path) {
    let current = std::fs::read_to_string(from.join("CURRENT")).unwrap();
    let generation = current.trim();
    std::fs::create_dir_all(to.join(generation)).unwrap();
    for f in std::fs::read_dir(from.join(generation)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(generation).join(f.file_name())).unwrap();
    }
    std::fs::write(to.join("CURRENT"), current).unwrap();
}

/// A raw HTTP/1.1 origin on 127.0.0.1:0 for hand-written answers: each request's target
/// (path and query) goes to `answer` (with the origin's address) and its return value is
/// written back whole, then the connection closes.
pub async fn scripted_origin(
    answer: impl Fn(std::net::SocketAddr, &str) -> String + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split(' ').nth(1).unwrap_or("");
                let _ = sock.write_all(answer(addr, target).as_bytes()).await;
            });
        }
    });
    addr
}
