//! Cross-origin access for browsers: the read-only routes (`/hls/…`, `/v1/products/…`,
//! the player SDK and vendored scripts) answer pages on other origins, so a player on a
//! shop's own site can play the rewritten channel and show its products. Admin routes
//! never get CORS headers: a browser on another origin cannot call them.
//!
//! The allow-list is `server.cors_origins`: `["*"]` (the default: any origin, no
//! credentials) or exact origins such as `https://shop.example`. WebSocket handshakes are
//! not covered by CORS in browsers, so the feed checks the `Origin` header against the
//! same list ([`origin_allowed`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The wildcard entry of `server.cors_origins`.
pub const ANY: &str = "*";

/// Whether `entry` is a valid item of `server.cors_origins`: `*`, or
/// `scheme://host[:port]` with no path, query or trailing slash.
pub fn check_origin(entry: &str) -> Result<(), String> {
    if entry == ANY {
        return Ok(());
    }
    let url = url::Url::parse(entry).map_err(|e| format!("`{entry}` is not an origin: {e}"))?;
    let canonical = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || canonical != entry {
        return Err(format!(
            "`{entry}` is not an origin like `https://shop.example` (scheme, host and port only)"
        ));
    }
    Ok(())
}

/// The CORS layer of the read-only routes: GET and HEAD from the allowed origins, with
/// `Range` (segment byte ranges) as a request header and the length and range headers
/// readable by scripts. Preflight requests (OPTIONS) are answered by the layer.
pub fn read_only(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == ANY) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::RANGE, header::IF_NONE_MATCH])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::ETAG,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Whether a WebSocket handshake with these headers may open: no `Origin` (not a
/// browser), the page's own origin (its host equals `Host`), or an allowed origin.
pub fn origin_allowed(origins: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origins.iter().any(|o| o == ANY || o == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = url::Url::parse(origin).ok().and_then(|u| {
        let h = u.host_str()?.to_string();
        Some(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    });
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(&o))
}

/// `router` (WebSocket routes) with the `Origin` check of [`origin_allowed`] in front.
pub fn guard_websocket(router: Router, origins: &[String]) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(origins.to_vec()),
        websocket_origin_guard,
    ))
}

/// A handshake from a page whose origin is not allowed gets 403 with the reason.
async fn websocket_origin_guard(
    State(origins): State<Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if origin_allowed(&origins, request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "error": "this page's origin is not in server.cors_origins"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for ok in ["*", "https://shop.example", "http://127.0.0.1:8080"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://shop.example?x=1",
            "ftp://shop.example",
            "https://SHOP.example",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn websocket_origins() {
        let any = vec![ANY.to_string()];
        let shop = vec!["https://shop.example".to_string()];
        let host = "127.0.0.1:8080";
        assert!(origin_allowed(
            &any,
            &headers(Some("https://evil.example"), host)
        ));
        assert!(origin_allowed(&shop, &headers(None, host)));
        assert!(origin_allowed(
            &shop,
            &headers(Some("https://shop.example"), host)
        ));
        assert!(origin_allowed(
            &shop,
            &headers(Some("http://127.0.0.1:8080"), host)
        ));
        assert!(!origin_allowed(
            &shop,
            &headers(Some("https://evil.example"), host)
        ));
        assert!(!origin_allowed(
            &shop,
            &headers(Some("http://127.0.0.1:9999"), host)
        ));
        assert!(!origin_allowed(&shop, &headers(Some("null"), host)));
    }
}
