//! HTTP for the test origin: `/live/master.m3u8`, `/live/index.m3u8`, `/live/seg{N}.ts`,
//! and, for tests, `POST /_control/faults` and `GET /_control/requests`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ApiError;
use crate::origin::{Answer, Fault, LiveOrigin};

pub fn router(origin: Arc<LiveOrigin>) -> Router {
    Router::new()
        .route("/live/master.m3u8", get(master))
        .route("/live/index.m3u8", get(playlist))
        .route("/live/{file}", get(segment))
        .route("/_control/faults", post(fault))
        .route("/_control/requests", get(requests))
        .with_state(origin)
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

async fn master(State(o): State<Arc<LiveOrigin>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, PLAYLIST_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        o.multivariant(),
    )
        .into_response()
}

async fn answer(a: Answer, content_type: &'static str) -> Response {
    match a {
        Answer::Body(b) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            b,
        )
            .into_response(),
        Answer::Status(s) => StatusCode::from_u16(s)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Answer::Delayed(ms, b) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            ([(header::CONTENT_TYPE, content_type)], b).into_response()
        }
    }
}

async fn playlist(State(o): State<Arc<LiveOrigin>>) -> Response {
    answer(o.playlist(), PLAYLIST_TYPE).await
}

async fn segment(State(o): State<Arc<LiveOrigin>>, Path(file): Path<String>) -> Response {
    let msn = file
        .strip_prefix("seg")
        .and_then(|r| r.strip_suffix(".ts"))
        .and_then(|n| n.parse::<u64>().ok());
    match msn {
        Some(msn) => answer(o.segment(msn), "video/mp2t").await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fault(
    State(o): State<Arc<LiveOrigin>>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let fault: Fault = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a fault: {e}")))?;
    o.inject(fault);
    Ok(StatusCode::NO_CONTENT)
}

async fn requests(
    State(o): State<Arc<LiveOrigin>>,
) -> axum::Json<std::collections::BTreeMap<u64, u32>> {
    axum::Json(o.requests().into_iter().collect())
}

/// Serve the origin on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    origin: Arc<LiveOrigin>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(origin))
        .with_graceful_shutdown(shutdown)
        .await
}
