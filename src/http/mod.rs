//! The HTTP layer: the only module that touches axum/hyper. Each feature adds a file here
//! with `pub fn router(state) -> axum::Router`; `server` (with the sidecar) merges them.
//! Status mapping lives in one place: [`ApiError`].

pub mod catalog;
pub mod channels;
pub mod console;
pub mod cors;
pub mod dashboard;
pub mod feed;
pub mod feedback;
pub mod file_origin;
pub mod proxy;
pub mod segment_cache;
pub mod server;
pub mod token;
pub mod web;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// Errors as HTTP answers: a status and one line for the client, never internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    /// Logged in full; the client sees only "internal error".
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answering a request");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// Check an admin request's key: header `x-api-key: KEY` or `authorization: Bearer KEY`.
/// An empty configured key refuses every admin request.
pub fn require_admin(headers: &HeaderMap, admin_key: &str) -> Result<(), ApiError> {
    if admin_key.is_empty() {
        return Err(ApiError::Forbidden(
            "admin endpoints are disabled: server.admin_key is not set".into(),
        ));
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        Some(k) if constant_time_eq(k.as_bytes(), admin_key.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_key_checks() {
        let mut h = HeaderMap::new();
        assert!(matches!(require_admin(&h, ""), Err(ApiError::Forbidden(_))));
        assert!(matches!(
            require_admin(&h, "k1"),
            Err(ApiError::Unauthorized)
        ));
        h.insert("x-api-key", "k1".parse().unwrap());
        assert!(require_admin(&h, "k1").is_ok());
        assert!(matches!(
            require_admin(&h, "k2"),
            Err(ApiError::Unauthorized)
        ));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer k1".parse().unwrap());
        assert!(require_admin(&h, "k1").is_ok());
    }
}
