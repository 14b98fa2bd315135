//! The sidecar's HTTP server (`http::server::serve`) against clients that misbehave at
//! the HTTP level: a client that trickles its request headers (slow-loris) or never
//! sends them is disconnected after the header timeout, while a normal client is served;
//! shutdown finishes with such clients connected.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_headers_are_disconnected() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let router = Router::new().route("/", get(|| async { "ok" }));
    let server = {
        let stop = stop.clone();
        tokio::spawn(shopcue::http::server::serve_with(
            listener,
            router,
            async move { stop.cancelled().await },
            Duration::from_millis(300),
        ))
    };
    // Silent, half a request line, and trickling header bytes.
    let mut clients = Vec::new();
    for first in [&b""[..], b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(first).await.unwrap();
        clients.push(c);
    }
    let trickler = {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::spawn(async move {
            let t = Instant::now();
            for _ in 0..50 {
                if c.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return t.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            t.elapsed()
        })
    };
    // A normal client is served meanwhile.
    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    for (i, mut c) in clients.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        let t = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // e.g. a 408 before the close
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "client {i} without complete headers was kept over 5 s"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    let trickled = tokio::time::timeout(Duration::from_secs(10), trickler)
        .await
        .expect("the trickling client is cut off")
        .unwrap();
    assert!(
        trickled < Duration::from_secs(5),
        "trickled for {trickled:?} (50 header lines over 5 s)"
    );
    // Shutdown with a silent client connected still finishes.
    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
