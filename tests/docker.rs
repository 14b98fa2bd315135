//! The container image, built and run here (`make docker-test`; not in `make test`, since
//! it starts a Docker engine and installs packages): `scripts/docker-image.sh` builds
//! `shopcue:local` (debootstrap + `docker import` base, the host's release binary), then
//! `shopcue demo` runs in it with `--network host`, the models, footage and Grocery
//! dataset mounted read-only and a writable work volume for the catalog, as a non-root user. Every
//! URL it prints that a player uses answers, and a product cue reaches a WebSocket client
//! of the printed cue feed. Ctrl-C (`docker kill --signal INT`) stops it cleanly.

mod common;

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use common::demo::Demo;
use futures::StreamExt;
use serde_json::Value;
use tokio::process::Command;

const IMAGE: &str = "shopcue:local";

/// Removes the container whatever happens to the test.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = StdCommand::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn build_image() {
    let ok = StdCommand::new(common::root().join("scripts/docker-image.sh"))
        .current_dir(common::root())
        .status()
        .expect("scripts/docker-image.sh runs");
    assert!(ok.success(), "scripts/docker-image.sh: {ok}");
}

/// A folder the container's user (uid 10001) may write, mounted at `/work`: it holds the
/// demo catalog (`/work/demo-catalog`) when it was built already; otherwise the demo
/// builds it there from the mounted dataset (its work files go beside it).
fn work_volume() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-work");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let built = common::root().join("data/demo-catalog");
    if built.join("CURRENT").is_file() {
        common::copy_catalog(&built, &dir.join("demo-catalog"));
    }
    let ok = StdCommand::new("chown")
        .args(["-R", "10001:10001"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success(), "chown the work volume");
    dir
}

fn demo_in_container(name: &str, work: &Path) -> Command {
    let root = common::root();
    let mount = |host: &str, at: &str| format!("{}:{at}:ro", root.join(host).display());
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", name, "--network", "host"])
        .args(["-v", &mount("models", "/models")])
        .args(["-v", &mount("data/footage", "/opt/shopcue/data/footage")])
        .args(["-v", &mount("data/grocery", "/opt/shopcue/data/grocery")])
        .args(["-v", &format!("{}:/work", work.display())])
        .args(["--entrypoint", "shopcue", IMAGE, "demo"])
        .args(["--listen", "127.0.0.1:0", "--origin-listen", "127.0.0.1:0"])
        .args(["--catalog", "/work/demo-catalog", "--duration", "600"])
        .args(["--input", "/opt/shopcue/data/footage/grocery_shots.mp4"])
        .args(["--dataset", "/opt/shopcue/data/grocery"])
        .stderr(std::process::Stdio::inherit());
    cmd
}

/// The first cue `start` on the feed, within `limit`.
async fn first_cue(feed: &str, limit: Duration) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(feed)
        .await
        .expect("the printed cue feed connects");
    tokio::time::timeout(limit, async {
        while let Some(Ok(m)) = ws.next().await {
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["type"] == "start" {
                return v;
            }
        }
        panic!("the feed closed before a cue");
    })
    .await
    .expect("a cue reaches the WebSocket client in time")
}

#[tokio::test]
#[ignore = "starts a Docker engine and builds an image: run by `make docker-test`"]
async fn the_image_runs_the_demo_and_cues_reach_a_websocket_client() {
    build_image();
    let name = format!("shopcue-docker-test-{}", std::process::id());
    let _container = Container(name.clone());
    let work = work_volume();
    let demo = Demo::start(demo_in_container(&name, &work), Duration::from_secs(420)).await;

    let playlist = reqwest::get(demo.url("rewritten playlist")).await.unwrap();
    assert!(playlist.status().is_success(), "{}", playlist.status());
    assert!(playlist.text().await.unwrap().starts_with("#EXTM3U"));
    let player = reqwest::get(demo.url("demo player")).await.unwrap();
    assert!(player.status().is_success(), "{}", player.status());

    let cue = first_cue(demo.url("cue feed"), Duration::from_secs(120)).await;
    eprintln!("first cue from the container: {cue}");
    assert!(cue["cue"]["product_id"].as_str().is_some(), "{cue}");

    let ok = StdCommand::new("docker")
        .args(["kill", "--signal", "INT", &name])
        .status()
        .unwrap();
    assert!(ok.success(), "docker kill --signal INT");
    let mut child = demo.child;
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the container stops within 40 s of Ctrl-C")
        .unwrap();
    assert!(
        status.success(),
        "the demo in the container exits 0: {status}"
    );
}
