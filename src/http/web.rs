//! The player SDK, the demo page and the vendored hls.js, embedded in the binary (no files
//! to deploy next to it): `/sdk/shopcue.js`, `/demo/` (+ `demo.js`, `demo.css`),
//! `/vendor/hls.min.js` (+ its licence). Sources live in `web/` (docs/player-sdk.md).
//!
//! Each asset has a strong `ETag` (SHA-256 of its bytes, computed once) and answers
//! `If-None-Match` with 304. The SDK and demo are revalidated after 5 minutes; hls.js is
//! pinned (web/package.json) and cached for a day.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const JS: &str = "text/javascript; charset=utf-8";
const SHORT_CACHE: &str = "public, max-age=300, must-revalidate";
const LONG_CACHE: &str = "public, max-age=86400";

/// One embedded file.
pub struct Asset {
    /// URL path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: &'static [u8],
}

macro_rules! web_file {
    ($rel:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $rel))
    };
}

/// Every asset the router serves.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/sdk/shopcue.js",
        content_type: JS,
        cache_control: SHORT_CACHE,
        body: web_file!("sdk/shopcue.js"),
    },
    Asset {
        path: "/demo/",
        content_type: "text/html; charset=utf-8",
        cache_control: SHORT_CACHE,
        body: web_file!("demo/index.html"),
    },
    Asset {
        path: "/demo/demo.js",
        content_type: JS,
        cache_control: SHORT_CACHE,
        body: web_file!("demo/demo.js"),
    },
    Asset {
        path: "/demo/demo.css",
        content_type: "text/css; charset=utf-8",
        cache_control: SHORT_CACHE,
        body: web_file!("demo/demo.css"),
    },
    Asset {
        path: "/vendor/hls.min.js",
        content_type: JS,
        cache_control: LONG_CACHE,
        body: web_file!("vendor/hls.min.js"),
    },
    Asset {
        path: "/vendor/LICENSE-hls.js",
        content_type: "text/plain; charset=utf-8",
        cache_control: LONG_CACHE,
        body: web_file!("vendor/LICENSE-hls.js"),
    },
];

fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        use sha2::Digest;
        ASSETS
            .iter()
            .map(|a| {
                let digest = sha2::Sha256::digest(a.body);
                HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(asset.cache_control),
        ),
        (header::ETAG, etag.clone()),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

/// The routes of [`ASSETS`], plus `/demo` and `/demo/index.html` redirecting to `/demo/`.
/// Stateless: merge it into any router.
pub fn router() -> Router {
    let mut r = Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route(
            "/demo/index.html",
            get(|| async { Redirect::permanent("/demo/") }),
        );
    for (index, asset) in ASSETS.iter().enumerate() {
        r = r.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router on a loopback listener; its base URL.
    async fn serve_router() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router()).await });
        base
    }

    async fn get(base: &str, path: &str, inm: Option<&str>) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut req = client.get(format!("{base}{path}"));
        if let Some(t) = inm {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        req.send().await.unwrap()
    }

    #[tokio::test]
    async fn every_asset_is_served_with_type_cache_and_etag() {
        let base = serve_router().await;
        for a in ASSETS {
            let r = get(&base, a.path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], a.content_type, "{}", a.path);
            assert_eq!(h[header::CACHE_CONTROL], a.cache_control, "{}", a.path);
            let etag = h[header::ETAG].to_str().unwrap().to_string();
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert_eq!(r.bytes().await.unwrap().as_ref(), a.body, "{}", a.path);
            let r = get(&base, a.path, Some(&etag)).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{}", a.path);
            let r = get(&base, a.path, Some("\"other\"")).await;
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
        }
        let r = get(&base, "/demo", None).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "/demo/");
        assert_eq!(
            get(&base, "/sdk/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_demo_references_only_served_assets() {
        let html = std::str::from_utf8(ASSETS[1].body).unwrap();
        for path in ["/demo/demo.css", "/vendor/hls.min.js", "/demo/demo.js"] {
            assert!(html.contains(path), "index.html loads {path}");
            assert!(ASSETS.iter().any(|a| a.path == path));
        }
        let demo = std::str::from_utf8(ASSETS[2].body).unwrap();
        assert!(demo.contains("from '/sdk/shopcue.js'"));
    }
}
