//! The channel registry's admin API (admin key on every route; `shopcue channels` is its
//! command line):
//!
//! - `GET /v1/channels`: every channel run here, `[{"id", "url", "state", "restarts"}]`
//!   (URLs redacted), sorted by id;
//! - `GET /v1/channels/{id}`: one of them (404 when absent);
//! - `PUT /v1/channels/{id}` `{"url": "…"}`: add the channel (201), or restart it with the
//!   new URL (200; the same URL: 200, nothing restarted);
//! - `DELETE /v1/channels/{id}`: stop it (open cues end and are published) and forget it
//!   (204).
//!
//! Changes are stored (`registry.store`) before they take effect, so a refused store write
//! changes nothing. The sidecar does the work behind [`ChannelAdmin`].

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{ApiError, require_admin};
use crate::ingest::settings::{ChannelSettings, MAX_CHANNEL_URL_BYTES};
use crate::registry::RegistryError;

/// Largest request body accepted (a channel's JSON: its URL and id).
pub const MAX_BODY_BYTES: usize = MAX_CHANNEL_URL_BYTES + 1024;

/// A channel as the API shows it: never its URL's credentials or query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    pub id: String,
    /// Redacted (`redact::redact_url`).
    pub url: String,
    pub state: String,
    pub restarts: u64,
}

/// What a PUT did.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome {
    Created(ChannelView),
    Restarted(ChannelView),
    Unchanged(ChannelView),
}

/// The registry as the routes reach it (the sidecar implements it).
pub trait ChannelAdmin: Send + Sync + 'static {
    fn list(&self) -> Vec<ChannelView>;
    fn put(&self, channel: ChannelSettings) -> BoxFuture<'_, Result<PutOutcome, RegistryError>>;
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>>;
}

/// What the channel routes need.
#[derive(Clone)]
pub struct ChannelsApiState {
    pub admin: Arc<dyn ChannelAdmin>,
    pub admin_key: String,
}

pub fn router(state: ChannelsApiState) -> Router {
    Router::new()
        .route("/v1/channels", get(list))
        .route("/v1/channels/{id}", get(one).put(put).delete(remove))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid { .. } | RegistryError::Start { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            RegistryError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RegistryError::Full(_) => ApiError::Conflict(e.to_string()),
            RegistryError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            RegistryError::Store { .. } => {
                tracing::warn!(error = %e, "channel registry: store failed; nothing changed");
                ApiError::Unavailable(
                    "the channel registry cannot be stored now; nothing changed".into(),
                )
            }
        }
    }
}

/// The body of a PUT: the URL, and the id when given (it must be the path's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    url: String,
    #[serde(default)]
    id: Option<String>,
}

fn no_store<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn list(
    State(st): State<ChannelsApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    Ok(no_store(StatusCode::OK, st.admin.list()))
}

async fn one(
    State(st): State<ChannelsApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let found = st.admin.list().into_iter().find(|c| c.id == id);
    let view = found.ok_or(RegistryError::NotFound(id))?;
    Ok(no_store(StatusCode::OK, view))
}

async fn put(
    State(st): State<ChannelsApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let body: PutBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("invalid body: {e} (expected {{\"url\": \"…\"}})"))
    })?;
    if body.id.as_ref().is_some_and(|b| *b != id) {
        return Err(ApiError::BadRequest(
            "the body's id differs from the path's".into(),
        ));
    }
    let channel = ChannelSettings { id, url: body.url };
    Ok(match st.admin.put(channel).await? {
        PutOutcome::Created(v) => no_store(StatusCode::CREATED, v),
        PutOutcome::Restarted(v) | PutOutcome::Unchanged(v) => no_store(StatusCode::OK, v),
    })
}

async fn remove(
    State(st): State<ChannelsApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    st.admin.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use futures::FutureExt;
    use tower::ServiceExt;

    const KEY: &str = "channels-unit-test-key";

    /// Accepts every valid channel (the registry's own check), holds nothing.
    struct Fake;

    impl ChannelAdmin for Fake {
        fn list(&self) -> Vec<ChannelView> {
            Vec::new()
        }
        fn put(&self, c: ChannelSettings) -> BoxFuture<'_, Result<PutOutcome, RegistryError>> {
            async move {
                RegistryError::check(&c)?;
                Ok(PutOutcome::Created(ChannelView {
                    id: c.id,
                    url: crate::redact::redact_url(&c.url),
                    state: "starting".into(),
                    restarts: 0,
                }))
            }
            .boxed()
        }
        fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
            async move { Err(RegistryError::NotFound(id.to_string())) }.boxed()
        }
    }

    async fn call(method: &str, path: &str, key: Option<&str>, body: Vec<u8>) -> (u16, String) {
        let app = router(ChannelsApiState {
            admin: Arc::new(Fake),
            admin_key: KEY.into(),
        });
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = app
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn requests_are_checked_before_the_registry_sees_them() {
        let good = br#"{"url": "https://u:p@cdn.example/live.m3u8?sig=1"}"#.to_vec();
        assert_eq!(call("GET", "/v1/channels", None, vec![]).await.0, 401);
        assert_eq!(
            call("PUT", "/v1/channels/a", Some("nope"), good.clone())
                .await
                .0,
            401
        );
        let (code, body) = call("PUT", "/v1/channels/a", Some(KEY), good).await;
        assert_eq!(code, 201, "{body}");
        assert!(
            body.contains("https://cdn.example/live.m3u8?…") && !body.contains("sig"),
            "{body}"
        );
        for (body, why) in [
            (b"not json".to_vec(), "invalid body"),
            (br#"{"url": 5}"#.to_vec(), "invalid body"),
            (
                br#"{"url": "http://h/x", "extra": 1}"#.to_vec(),
                "invalid body",
            ),
            (br#"{"url": "http://h/x", "id": "b"}"#.to_vec(), "differs"),
            (br#"{"url": "gopher://h/x"}"#.to_vec(), "channel url"),
            (br#"{"url": ""}"#.to_vec(), "channel url"),
        ] {
            let (code, text) = call("PUT", "/v1/channels/a", Some(KEY), body).await;
            assert_eq!(code, 400, "{text}");
            assert!(text.contains(why), "{why}: {text}");
        }
        let (code, text) = call(
            "PUT",
            "/v1/channels/a%20b",
            Some(KEY),
            br#"{"url": "http://h/x"}"#.to_vec(),
        )
        .await;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains("channel id"), "{text}");
        let huge = format!(r#"{{"url": "http://h/{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(
            call("PUT", "/v1/channels/a", Some(KEY), huge.into_bytes())
                .await
                .0,
            413
        );
        assert_eq!(
            call("DELETE", "/v1/channels/a", Some(KEY), vec![]).await.0,
            404
        );
        assert_eq!(
            call("GET", "/v1/channels/a", Some(KEY), vec![]).await.0,
            404
        );
    }
}
