//! The ops dashboard: `GET /dashboard` and its assets under `/dashboard/…`, a static page
//! that polls `GET /v1/status` every second and `GET /v1/status/history?since=` for its
//! charts. The files live in `web/dashboard/` (plain HTML, CSS and JavaScript, no build
//! step) and `web/vendor/uplot/` (uPlot, vendored from npm), and are compiled into the
//! binary so the sidecar serves them with nothing on disk.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: its path under `/dashboard/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../../web/dashboard/index.html");
/// The operator console (its API needs the admin key; the page itself holds nothing).
const CONSOLE: &str = include_str!("../../web/dashboard/console.html");

const ASSETS: &[Asset] = &[
    Asset {
        path: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/dashboard/dashboard.js"),
    },
    Asset {
        path: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/dashboard/console.js"),
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/dashboard/console.css"),
    },
    Asset {
        path: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/dashboard/dashboard.css"),
    },
    Asset {
        path: "vendor/uplot/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uplot/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uplot/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_str!("../../web/vendor/uplot/LICENSE"),
    },
];

/// Same-origin only: the page talks to the sidecar that served it and nothing else.
/// uPlot sizes its elements through inline styles, hence `'unsafe-inline'` for styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'";

/// The dashboard routes; merge into the sidecar's router.
pub fn router() -> Router {
    let mut r = Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route(
            "/dashboard/console",
            get(|| async { file("text/html; charset=utf-8", CONSOLE) }),
        );
    for a in ASSETS {
        r = r.route(
            &format!("/dashboard/{}", a.path),
            get(move || async move { file(a.content_type, a.body) }),
        );
    }
    r
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change only with the binary; revalidating each load is cheap enough.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_assets_that_are_served() {
        let served: Vec<String> = ASSETS
            .iter()
            .map(|a| format!("/dashboard/{}", a.path))
            .collect();
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for part in [INDEX, CONSOLE].iter().flat_map(|p| p.split(attr).skip(1)) {
                let url = part.split('"').next().unwrap_or("");
                if url.starts_with("/dashboard/") {
                    assert!(served.iter().any(|s| s == url), "{url} is not served");
                    named += 1;
                }
            }
        }
        assert!(named >= 4, "index.html names {named} dashboard assets");
    }
}
