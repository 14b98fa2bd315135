//! Learning from the operator over HTTP (admin key required):
//!
//! - `POST /v1/channels/{id}/cues/{cue_id}/feedback` with `{"verdict": "confirm"}`,
//!   `{"verdict": "reject"}` or `{"verdict": "relabel", "product_id": "..."}` stores the
//!   cue's evidence (its most similar sightings' query embeddings, kept by the channel for
//!   its latest `matching.evidence_cues` cues) as labelled photos of the product, or as
//!   negatives of the product it named, beside the catalog;
//! - `POST /v1/catalog/retrain` rebuilds the serving catalog from the stored photos (a
//!   projection learned again when they cover enough products) and swaps it in; searches
//!   never wait for it.
//!
//! Only the process that analysed a cue holds its evidence: on a fleet, send the verdict
//! to the channel's analyser.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::{ApiError, require_admin};
use crate::catalog::feedback::{self, FeedbackStore, Kind, NewPhoto, RetrainReport, Stored};
use crate::catalog::{Catalog, CatalogError, CatalogSettings};
use crate::matching::{CueEvidence, EvidenceStore};
use crate::operator::{AuditEntry, AuditLog, key_id};

/// Each channel's evidence store by channel id, shared with the sidecar (channels are
/// added and removed at runtime).
pub type EvidenceByChannel = Arc<std::sync::RwLock<HashMap<String, Arc<EvidenceStore>>>>;

/// What the feedback routes need.
#[derive(Clone)]
pub struct FeedbackState {
    pub catalog: Arc<Catalog>,
    pub store: Arc<FeedbackStore>,
    /// Each channel's evidence of its latest cues.
    /// Each channel's evidence of its latest cues (channels added and removed at runtime).
    pub evidence: EvidenceByChannel,
    pub settings: CatalogSettings,
    pub admin_key: String,
    /// One retrain at a time; a second request while one runs is answered 409.
    retraining: Arc<tokio::sync::Mutex<()>>,
    /// Where verdicts and retrains are recorded (the console's audit log).
    audit: Option<Arc<AuditLog>>,
}

impl FeedbackState {
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<FeedbackStore>,
        evidence: HashMap<String, Arc<EvidenceStore>>,
        settings: &CatalogSettings,
        admin_key: &str,
    ) -> Self {
        Self {
            catalog,
            store,
            evidence: Arc::new(std::sync::RwLock::new(evidence)),
            settings: settings.clone(),
            admin_key: admin_key.to_string(),
            retraining: Arc::default(),
            audit: None,
        }
    }

    /// Record verdicts and retrains in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit(&self, channel: Option<&str>, action: &str, detail: String) {
        if let Some(log) = &self.audit {
            log.record(AuditEntry {
                at: chrono::Utc::now(),
                key_id: key_id(&self.admin_key),
                channel: channel.map(str::to_string),
                action: action.into(),
                detail,
            });
        }
    }
}

pub fn router(state: FeedbackState) -> Router {
    Router::new()
        .route(
            "/v1/channels/{id}/cues/{cue_id}/feedback",
            post(give_feedback),
        )
        .route("/v1/catalog/retrain", post(retrain))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Verdict {
    verdict: String,
    #[serde(default)]
    product_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct FeedbackAnswer {
    cue_id: String,
    /// What was stored, by product: `positive` photos and `negative` ones.
    stored: Vec<StoredFor>,
}

#[derive(Debug, Serialize)]
struct StoredFor {
    product_id: String,
    kind: Kind,
    #[serde(flatten)]
    done: Stored,
}

/// `(kind, product)` pairs a verdict on a cue of `cue_product` stores its evidence as.
fn targets(
    v: &Verdict,
    cue_product: &str,
    catalog: &Catalog,
) -> Result<Vec<(Kind, String)>, ApiError> {
    let other = v.product_id.as_deref().map(str::trim);
    match (v.verdict.as_str(), other) {
        ("confirm", None) => Ok(vec![(Kind::Positive, cue_product.to_string())]),
        ("reject", None) => Ok(vec![(Kind::Negative, cue_product.to_string())]),
        ("confirm" | "reject", Some(_)) => Err(ApiError::BadRequest(format!(
            "`product_id` goes with `relabel` only, not `{}`",
            v.verdict
        ))),
        ("relabel", None | Some("")) => Err(ApiError::BadRequest(
            "`relabel` needs `product_id`: the product the cue really shows".into(),
        )),
        ("relabel", Some(p)) if p == cue_product => Err(ApiError::BadRequest(format!(
            "the cue already names `{p}`: use `confirm`"
        ))),
        ("relabel", Some(p)) => {
            if catalog.product(p).is_none() {
                return Err(ApiError::NotFound(
                    CatalogError::UnknownProduct(p.to_string()).to_string(),
                ));
            }
            Ok(vec![
                (Kind::Positive, p.to_string()),
                (Kind::Negative, cue_product.to_string()),
            ])
        }
        (other, _) => Err(ApiError::BadRequest(format!(
            "unknown verdict `{other}`: expected confirm, reject or relabel"
        ))),
    }
}

fn evidence_of(st: &FeedbackState, channel: &str, cue_id: &str) -> Result<CueEvidence, ApiError> {
    let store = st
        .evidence
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(channel)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("channel `{channel}` is not analysed here")))?;
    store.get(cue_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no evidence of cue `{cue_id}` on channel `{channel}`: unknown, older than the channel's last matching.evidence_cues cues, or analysed by another process"
        ))
    })
}

async fn give_feedback(
    State(st): State<FeedbackState>,
    headers: HeaderMap,
    Path((channel, cue_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let verdict: Verdict = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid verdict: {e}")))?;
    let evidence = evidence_of(&st, &channel, &cue_id)?;
    let targets = targets(&verdict, &evidence.product_id, &st.catalog)?;
    let sha = st.catalog.manifest().embedder_sha256;
    let store = st.store.clone();
    let stored = tokio::task::spawn_blocking(move || -> Result<Vec<StoredFor>, CatalogError> {
        let mut out = Vec::new();
        for (kind, product_id) in targets {
            let photos: Vec<NewPhoto<'_>> = evidence
                .sightings
                .iter()
                .map(|(_, e)| NewPhoto {
                    kind,
                    product_id: &product_id,
                    cue_id: &evidence.cue_id,
                    channel: &evidence.channel,
                    embedder_sha256: &sha,
                    embedding: e,
                })
                .collect();
            let done = store.record(&photos)?;
            out.push(StoredFor {
                product_id: product_id.clone(),
                kind,
                done,
            });
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("feedback task: {e}")))??;
    let what: Vec<String> = stored
        .iter()
        .map(|s| format!("{} {:?} +{}", s.product_id, s.kind, s.done.stored))
        .collect();
    st.audit(
        Some(&channel),
        "feedback",
        format!("{} {cue_id}: {}", verdict.verdict, what.join(", ")),
    );
    Ok((StatusCode::CREATED, Json(FeedbackAnswer { cue_id, stored })))
}

async fn retrain(
    State(st): State<FeedbackState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let report = retrain_now(&st).await?;
    st.audit(
        None,
        "retrain",
        format!(
            "{} photos of {} products; {} -> {} vectors{}",
            report.photos,
            report.products,
            report.vectors_before,
            report.vectors_after,
            if report.projection_learned {
                ", projection learned"
            } else {
                ""
            }
        ),
    );
    Ok(Json(report))
}

/// Retrain from the stored feedback now, off the async workers (the admin route and the
/// periodic retrain); `Conflict` while another retrain runs.
pub async fn retrain_now(st: &FeedbackState) -> Result<RetrainReport, ApiError> {
    let _one = st
        .retraining
        .clone()
        .try_lock_owned()
        .map_err(|_| ApiError::Conflict("a retrain is already running".into()))?;
    let (catalog, store, settings) = (st.catalog.clone(), st.store.clone(), st.settings.clone());
    let report =
        tokio::task::spawn_blocking(move || feedback::retrain(&catalog, &store, &settings))
            .await
            .map_err(|e| ApiError::Internal(format!("retrain task: {e}")))??;
    tracing::info!(
        photos = report.photos,
        products = report.products,
        projection = report.projection_learned,
        "catalog retrained from operator feedback"
    );
    Ok(report)
}
