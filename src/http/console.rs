//! The operator console's API (admin key on every route; the page itself is
//! `/dashboard/console`, served with the dashboard):
//!
//! - `GET /v1/console/channels`: each channel's pins, suppressions, threshold and latest
//!   cues (newest first), with whether a crop and evidence are held for each;
//! - `GET /v1/channels/{id}/cues/{cue_id}/crop`: the cue's crop (JPEG) as the channel saw
//!   it when the cue started;
//! - `POST /v1/channels/{id}/pins` `{"product_id"}` / `DELETE /v1/channels/{id}/pins/{product}`:
//!   a manual cue (`source: "operator"`) published to the feed and the playlists;
//! - `POST /v1/channels/{id}/suppressions` `{"product_id", "seconds"?}` /
//!   `DELETE /v1/channels/{id}/suppressions/{product}`: the product's automatic cues are
//!   held (an open one ends at once) for `seconds` or until lifted;
//! - `PUT /v1/channels/{id}/threshold` `{"min_similarity": 0.6 | null}`;
//! - `GET /v1/console/audit`: who (key id) did what, when, newest first.
//!
//! Confirm / reject / relabel go to the feedback routes (`http::feedback`), audited too.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{ApiError, require_admin};
use crate::catalog::Catalog;
use crate::cuebus::CueBus;
use crate::matching::EvidenceStore;
use crate::operator::{AuditEntry, AuditLog, ChannelControls, ControlsView, OperatorError, key_id};

/// One channel as the console reaches it.
#[derive(Clone)]
pub struct ConsoleChannel {
    pub controls: Arc<ChannelControls>,
    pub evidence: Arc<EvidenceStore>,
}

/// What the console routes need.
#[derive(Clone)]
pub struct ConsoleState {
    /// The channels analysed here now (added and removed at runtime).
    pub channels: Arc<std::sync::RwLock<HashMap<String, ConsoleChannel>>>,
    pub bus: Arc<dyn CueBus>,
    /// Product details for pins, and the check that a pinned product exists.
    pub catalog: Option<Arc<Catalog>>,
    pub audit: Arc<AuditLog>,
    pub admin_key: String,
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/v1/console/channels", get(channels))
        .route("/v1/console/audit", get(audit))
        .route("/v1/channels/{id}/cues/{cue_id}/crop", get(crop))
        .route("/v1/channels/{id}/pins", post(pin))
        .route("/v1/channels/{id}/pins/{product}", delete(unpin))
        .route("/v1/channels/{id}/suppressions", post(suppress))
        .route("/v1/channels/{id}/suppressions/{product}", delete(lift))
        .route("/v1/channels/{id}/threshold", put(threshold))
        .with_state(state)
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::AlreadyPinned(_) => ApiError::Conflict(e.to_string()),
            OperatorError::NotPinned(_) | OperatorError::NotSuppressed(_) => {
                ApiError::NotFound(e.to_string())
            }
            OperatorError::BadThreshold(_) | OperatorError::BadUntil(_) => {
                ApiError::BadRequest(e.to_string())
            }
        }
    }
}

/// The admin key's id, once the request is allowed.
fn admin(headers: &HeaderMap, st: &ConsoleState) -> Result<String, ApiError> {
    require_admin(headers, &st.admin_key)?;
    Ok(key_id(&st.admin_key))
}

fn channel(st: &ConsoleState, id: &str) -> Result<ConsoleChannel, ApiError> {
    st.channels
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("channel `{id}` is not analysed here")))
}

fn audit_action(st: &ConsoleState, key: String, channel: &str, action: &str, detail: String) {
    st.audit.record(AuditEntry {
        at: Utc::now(),
        key_id: key,
        channel: Some(channel.to_string()),
        action: action.into(),
        detail,
    });
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

#[derive(Serialize)]
struct ChannelView {
    #[serde(flatten)]
    controls: ControlsView,
    /// Cue ids of `recent` whose crop / evidence this process holds.
    crops: Vec<String>,
    evidence: Vec<String>,
}

async fn channels(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    admin(&headers, &st)?;
    let now = Utc::now();
    let channels: Vec<ConsoleChannel> = st
        .channels
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let mut out: Vec<ChannelView> = channels
        .iter()
        .map(|c| {
            let controls = c.controls.view(now);
            let held = |f: &dyn Fn(&str) -> bool| {
                controls
                    .recent
                    .iter()
                    .filter(|cue| f(&cue.id))
                    .map(|cue| cue.id.clone())
                    .collect()
            };
            let crops = held(&|id| c.evidence.crop(id).is_some());
            let evidence = held(&|id| c.evidence.get(id).is_some());
            ChannelView {
                controls,
                crops,
                evidence,
            }
        })
        .collect();
    out.sort_by(|a, b| a.controls.channel.cmp(&b.controls.channel));
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)))
}

async fn audit(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    admin(&headers, &st)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(st.audit.entries()),
    ))
}

async fn crop(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path((id, cue_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin(&headers, &st)?;
    let jpeg = channel(&st, &id)?
        .evidence
        .crop(&cue_id)
        .ok_or_else(|| ApiError::NotFound(format!("no crop of cue `{cue_id}` on `{id}`")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        jpeg.as_ref().clone(),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    product_id: String,
}

async fn pin(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let key = admin(&headers, &st)?;
    let b: PinBody = parse(&body)?;
    let ch = channel(&st, &id)?;
    let product = match &st.catalog {
        Some(c) => Some(
            c.product(&b.product_id)
                .map(|p| crate::pipeline::product_summary(&p))
                .ok_or_else(|| {
                    ApiError::NotFound(format!("unknown product id `{}`", b.product_id))
                })?,
        ),
        None => None,
    };
    let event = ch.controls.pin(&b.product_id, product, Utc::now())?;
    let cue = event.cue().clone();
    st.bus.publish(event);
    audit_action(
        &st,
        key,
        &id,
        "pin",
        format!("{} ({})", b.product_id, cue.id),
    );
    Ok((StatusCode::CREATED, Json(cue)))
}

async fn unpin(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path((id, product)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let key = admin(&headers, &st)?;
    let event = channel(&st, &id)?.controls.unpin(&product, Utc::now())?;
    let cue = event.cue().clone();
    st.bus.publish(event);
    audit_action(&st, key, &id, "unpin", format!("{product} ({})", cue.id));
    Ok(Json(cue))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressBody {
    product_id: String,
    /// For this long (absent: until lifted).
    #[serde(default)]
    seconds: Option<u64>,
}

#[derive(Serialize)]
struct Suppressed {
    product_id: String,
    /// Open cues of the product ended by it.
    ended: Vec<String>,
}

/// Longest suppression with a time limit: a week.
const MAX_SUPPRESS_S: u64 = 7 * 24 * 3600;

async fn suppress(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let key = admin(&headers, &st)?;
    let b: SuppressBody = parse(&body)?;
    let ch = channel(&st, &id)?;
    let now = Utc::now();
    let until = match b.seconds {
        None => None,
        Some(s) if (1..=MAX_SUPPRESS_S).contains(&s) => {
            Some(now + chrono::TimeDelta::seconds(s as i64))
        }
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "seconds must be from 1 to {MAX_SUPPRESS_S}, got {s}"
            )));
        }
    };
    let ends = ch
        .controls
        .suppress(&b.product_id, until, now, |e| st.bus.publish(e))?;
    let ended: Vec<String> = ends.iter().map(|e| e.cue().id.clone()).collect();
    let how_long = b
        .seconds
        .map_or_else(|| "until lifted".to_string(), |s| format!("for {s} s"));
    audit_action(
        &st,
        key,
        &id,
        "suppress",
        format!("{} {how_long}", b.product_id),
    );
    Ok((
        StatusCode::CREATED,
        Json(Suppressed {
            product_id: b.product_id,
            ended,
        }),
    ))
}

async fn lift(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path((id, product)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let key = admin(&headers, &st)?;
    channel(&st, &id)?.controls.lift(&product)?;
    audit_action(&st, key, &id, "lift", product);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdBody {
    min_similarity: Option<f32>,
}

async fn threshold(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let key = admin(&headers, &st)?;
    let b: ThresholdBody = parse(&body)?;
    channel(&st, &id)?
        .controls
        .set_threshold(b.min_similarity)?;
    let what = b
        .min_similarity
        .map_or_else(|| "configured".to_string(), |t| format!("{t}"));
    audit_action(&st, key, &id, "threshold", format!("min_similarity {what}"));
    Ok(Json(
        serde_json::json!({ "channel": id, "min_similarity": b.min_similarity }),
    ))
}
