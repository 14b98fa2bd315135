//! HTTP for the test origin: `/live/master.m3u8`, `/live/index.m3u8` (blocking with
//! `_HLS_msn`/`_HLS_part` when the origin has parts), `/live/seg{N}.ts`, parts
//! `/live/seg{N}.{K}.ts`, and, for tests, `POST /_control/faults` and
//! `GET /_control/requests`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ApiError;
use crate::file_origin::{Answer, Fault, LiveOrigin};

/// The origin's routes. Playlists and segments answer pages on any origin (CORS), as a
/// CDN in front of a live origin does, so players can read them directly
/// (`manifest.segment_uris = "absolute"`); the test controls do not.
pub fn router(origin: Arc<LiveOrigin>) -> Router {
    Router::new()
        .route("/live/master.m3u8", get(master))
        .route("/live/index.m3u8", get(playlist))
        .route("/live/{file}", get(segment))
        .layer(super::cors::read_only(&[super::cors::ANY.to_string()]))
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

/// Blocking playlist reload (RFC 8216bis §6.2.5.2) query parameters.
#[derive(Debug, serde::Deserialize)]
struct BlockingQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<usize>,
}

async fn playlist(
    State(o): State<Arc<LiveOrigin>>,
    query: Result<Query<BlockingQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return (StatusCode::BAD_REQUEST, "bad _HLS_msn or _HLS_part").into_response();
    };
    match (q.msn, q.part) {
        (None, Some(_)) => {
            return (StatusCode::BAD_REQUEST, "_HLS_part without _HLS_msn").into_response();
        }
        (Some(msn), part) if o.part_target().is_some() => match o.blocking_wait(msn, part) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                return (StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead").into_response();
            }
        },
        _ => {}
    }
    answer(o.playlist(), PLAYLIST_TYPE).await
}

async fn segment(State(o): State<Arc<LiveOrigin>>, Path(file): Path<String>) -> Response {
    let name = file.strip_prefix("seg").and_then(|r| r.strip_suffix(".ts"));
    let (msn, part) = match name.map(|n| n.split_once('.').unwrap_or((n, ""))) {
        Some((msn, "")) => (msn.parse::<u64>().ok(), None),
        Some((msn, k)) => (msn.parse::<u64>().ok(), Some(k.parse::<usize>().ok())),
        None => (None, None),
    };
    match (msn, part) {
        (Some(msn), None) => answer(o.segment(msn), "video/mp2t").await,
        (Some(msn), Some(Some(k))) => match o.part(msn, k) {
            Some((wait, data)) => {
                answer(Answer::Delayed(wait.as_millis() as u64, data), "video/mp2t").await
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
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
