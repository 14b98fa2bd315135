//! The `shopcue` binary's stable command-line contract: `shots --json` output shape and
//! values, live input with `--duration`, and one-line errors with a non-zero exit code.

mod common;

use std::process::Command;

use common::TestOrigin;

fn shopcue() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopcue"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn shots_json_of_a_file_matches_the_ground_truth() {
    let path = common::footage("intel_concat.mp4");
    let out = shopcue()
        .args(["shots", "--json", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["fps"], 25.0);
    assert_eq!(v["frames"], 501);
    let shots = v["shots"].as_array().unwrap();
    let starts: Vec<u64> = shots
        .iter()
        .map(|s| s["start_frame"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![0, 101, 201, 301, 401]);
    // Shot 0 as the contract shows it.
    assert_eq!(shots[0]["index"], 0);
    assert_eq!(shots[0]["start_time"], 0.0);
    assert_eq!(shots[0]["end_frame"], 100);
    assert_eq!(shots[0]["end_time"], 4.0);
    assert_eq!(shots[1]["start_time"], 4.04);
    let wc = shots[0]["start_wallclock"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(wc).is_ok() && wc.ends_with('Z') && wc.len() == 24,
        "{wc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shots_of_a_live_url_stop_after_duration() {
    let origin = TestOrigin::start("grocery_shots.mp4", 2.0, 4, true).await;
    let url = origin.master_url();
    let out = tokio::task::spawn_blocking(move || {
        shopcue()
            .args(["shots", "--json", "--duration", "4", "--input", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let v = json(&out);
    let frames = v["frames"].as_u64().unwrap();
    assert!(
        (99..=101).contains(&frames),
        "4 s of 25 fps: {frames} frames"
    );
    // Wall clocks come from the origin's PDT: the first shot starts on a segment boundary.
    let wc = v["shots"][0]["start_wallclock"].as_str().unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(wc)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let on_boundary = (0..10_000u64).any(|m| origin.origin.pdt_of(m) == Some(t));
    assert!(on_boundary, "{wc} is a segment's EXT-X-PROGRAM-DATE-TIME");
}

#[test]
fn bad_input_gives_one_line_and_a_failure_code() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/live.m3u8", listener.local_addr().unwrap());
    drop(listener);
    for (input, expect) in [
        ("/no/such/file.mp4", "no such file"),
        ("Cargo.toml", "not a video"),
        (dead.as_str(), "Connection refused"),
        ("gopher://127.0.0.1/x", "unsupported scheme"),
    ] {
        let out = shopcue()
            .args(["shots", "--json", "--input", input])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{input} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{input}: {err}");
        assert!(
            lines[0].starts_with("shopcue: error:") && lines[0].contains(expect),
            "{input}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_settings_name_the_key() {
    let out = shopcue()
        .args(["shots", "--input", "x.mp4"])
        .env("SHOPCUE__INGEST__VARIANT", "biggest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest.variant"));
}

/// `shopcue demo`: origin, catalog, sidecar; prints its URLs, serves them, stops cleanly
/// at `--duration` (Ctrl-C takes the same path).
#[test]
fn demo_serves_its_urls_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let catalog = common::grocery_catalog();
    let mut child = shopcue()
        .args(["demo", "--duration", "20", "--listen", "127.0.0.1:0"])
        .args(["--origin-listen", "127.0.0.1:0", "--catalog"])
        .arg(&catalog)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let addr = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            l.trim()
                .strip_prefix("cue feed")
                .and_then(|r| r.trim().strip_prefix("ws://"))
                .and_then(|r| r.split('/').next())
                .map(str::to_string)
        });
        if let Some(a) = found {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no URLs printed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for path in [
            "/healthz",
            "/demo/",
            "/sdk/shopcue.js",
            "/hls/grocery/master.m3u8",
            "/v1/status",
            "/metrics",
        ] {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
        }
    });
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(status.success(), "{out}");
    for want in [
        "dashboard",
        "demo player",
        "rewritten playlist",
        "stopped cleanly",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
}
