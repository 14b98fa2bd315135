//! The sidecar's one HTTP server: every route of the process on one listener.
//!
//! `GET /healthz` (200 as soon as it listens), `GET /readyz` (200 once every channel is
//! up and the catalog is loaded, 503 with the reasons otherwise), `GET /metrics`
//! (Prometheus text), `GET /v1/status` (JSON for the dashboard), `GET /v1/status/history`
//! (the last minutes, one point a second per channel), plus the WebSocket feed,
//! the HLS proxy, the catalog and product API and whatever else the caller merges in.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiError;
use crate::metrics::Metrics;

/// Readiness: `Ok(())` or the reasons the process is not ready.
pub type ReadyFn = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;
/// The status document of `GET /v1/status`.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// The points newer than a time (ms since the epoch) of `GET /v1/status/history`:
/// `{channel: [points]}`.
pub type HistoryFn = Arc<dyn Fn(i64) -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    ready: ReadyFn,
    status: StatusFn,
    history: HistoryFn,
}

/// The operational routes; merge the feature routers into the result. With `key`, status,
/// history and metrics need it (`x-api-key` or a bearer token); the probes never do.
pub fn ops_router(
    metrics: Arc<Metrics>,
    ready: ReadyFn,
    status: StatusFn,
    history: HistoryFn,
    key: Option<String>,
) -> Router {
    let ops = Ops {
        metrics,
        ready,
        status,
        history,
    };
    let mut protected = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status_json))
        .route("/v1/status/history", get(history_json))
        .with_state(ops.clone());
    if let Some(key) = key {
        protected = protected.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let key = key.clone();
                async move {
                    match super::require_admin(req.headers(), &key) {
                        Ok(()) => next.run(req).await,
                        Err(e) => e.into_response(),
                    }
                }
            },
        ));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops)
        .merge(protected)
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(ops): State<Ops>) -> Response {
    match (ops.ready)() {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"ready": true})),
        )
            .into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"ready": false, "reasons": reasons})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.encode(),
    )
        .into_response()
}

async fn status_json(State(ops): State<Ops>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json((ops.status)()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    since: Option<String>,
}

/// `?since=<ms since the epoch>` (absent: everything kept); the dashboard passes the
/// newest `t` it has, so each poll carries only the new points.
async fn history_json(
    State(ops): State<Ops>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let since = match q.since.as_deref().map(str::trim) {
        None | Some("") => i64::MIN,
        Some(s) => s.parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "since: expected milliseconds since the epoch, got `{s}`"
            ))
        })?,
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json((ops.history)(since)),
    )
        .into_response())
}

/// A client has this long to send a request's headers, then its connection is closed: an
/// idle or trickling client (slow-loris) cannot hold a connection and its task for ever.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `router` on `listener` (TCP_NODELAY on every connection: small cue frames must
/// not wait for delayed ACKs) until `shutdown` completes; in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, HEADER_TIMEOUT).await
}

/// [`serve`] with another header timeout (tests).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // CONNECT protocol: WebSockets over HTTP/2.
    builder.http2().enable_connect_protocol();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never spin or stop.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's header timeout starts with a request's first byte: a client that
            // sends nothing at all is closed here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
