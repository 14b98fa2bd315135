//! Catalog HTTP routes: the product API (`GET /v1/products/{id}`, enriched from the shop's
//! API when configured; `GET /v1/products/{id}/image`, the product's first catalog image,
//! for players to show) and the admin API that changes the catalog while it serves
//! (`POST /v1/catalog/products`, `PUT|DELETE /v1/catalog/products/{id}`, key required).
//! Embedding work runs on the blocking pool; a change becomes visible to searches in one
//! swap, after it is on disk.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde::Serialize;

use super::{ApiError, require_admin};
use crate::catalog::build::{ImageLoader, clutter_of, product_vectors};
use crate::catalog::product::ImageSource;
use crate::catalog::upstream::ProductService;
use crate::catalog::{CatalogError, CatalogSettings, Product, Skipped};
use crate::inference::Models;

/// What the catalog routes need.
#[derive(Clone)]
pub struct CatalogApiState {
    pub products: Arc<ProductService>,
    /// Detector and embedder for new product images (admin routes answer 503 without).
    pub models: Option<Models>,
    pub settings: CatalogSettings,
    /// `server.admin_key`.
    pub admin_key: String,
}

impl CatalogApiState {
    pub fn new(
        products: Arc<ProductService>,
        models: Option<Models>,
        settings: &CatalogSettings,
        admin_key: &str,
    ) -> Self {
        Self {
            products,
            models,
            settings: settings.clone(),
            admin_key: admin_key.to_string(),
        }
    }
}

/// The catalog's routes. `cors` wraps the read-only ones (`GET /v1/products/{id}`,
/// `GET /v1/catalog`), never the admin ones.
pub fn router(state: CatalogApiState, cors: tower_http::cors::CorsLayer) -> Router {
    Router::new()
        .route("/v1/products/{id}", get(get_product))
        .route("/v1/products/{id}/image", get(product_image))
        .route("/v1/catalog", get(catalog_info))
        .layer(cors)
        .route("/v1/catalog/products", post(add_product))
        .route(
            "/v1/catalog/products/{id}",
            put(put_product).delete(delete_product),
        )
        .with_state(state)
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::UnknownProduct(_) => ApiError::NotFound(e.to_string()),
            CatalogError::DuplicateProduct(_) => ApiError::Conflict(e.to_string()),
            CatalogError::InvalidProduct(_)
            | CatalogError::Input { .. }
            | CatalogError::Image { .. }
            | CatalogError::Empty(_) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

async fn get_product(
    State(st): State<CatalogApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.products.get(&id).await?))
}

/// Largest image file `GET /v1/products/{id}/image` serves.
const MAX_IMAGE_BYTES: u64 = 8 << 20;

/// The folder relative image paths of the catalog are read from (`catalog.images_root`,
/// else the catalog's own folder): new products' images and served product images alike.
fn images_root(st: &CatalogApiState) -> PathBuf {
    if st.settings.images_root.is_empty() {
        let catalog = st.products.catalog();
        catalog.dir().map(|d| d.to_path_buf()).unwrap_or_default()
    } else {
        PathBuf::from(&st.settings.images_root)
    }
}

/// The product's first image: a redirect when it is a web URL, the file (JPEG or PNG, at
/// most [`MAX_IMAGE_BYTES`]) when it is a catalog path. Only paths the catalog itself lists
/// are ever read; the client names a product, never a path.
async fn product_image(
    State(st): State<CatalogApiState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let product = st
        .products
        .catalog()
        .product(&id)
        .ok_or_else(|| ApiError::from(CatalogError::UnknownProduct(id.clone())))?;
    let spec = product
        .images
        .first()
        .ok_or_else(|| ApiError::NotFound(format!("product `{id}` has no image")))?;
    let path = match ImageSource::resolve(spec, &images_root(&st)) {
        ImageSource::Url(url) => {
            return Ok(axum::response::Redirect::temporary(&url).into_response());
        }
        ImageSource::File(path) => path,
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let content_type = match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => {
            return Err(ApiError::NotFound(format!(
                "product `{id}`: image is not JPEG or PNG"
            )));
        }
    };
    let unavailable = |why: String| {
        tracing::warn!(product = %id, path = %path.display(), %why, "product image unavailable");
        ApiError::NotFound(format!("product `{id}`: image unavailable"))
    };
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(unavailable(format!("{} bytes", meta.len())));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

async fn catalog_info(State(st): State<CatalogApiState>) -> impl IntoResponse {
    Json(st.products.catalog().manifest())
}

#[derive(Debug, Serialize)]
struct ChangeAnswer {
    id: String,
    vectors: usize,
    skipped: Vec<Skipped>,
}

fn parse_product(body: &[u8]) -> Result<Product, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    Product::from_json(text).map_err(|why| ApiError::BadRequest(format!("invalid product: {why}")))
}

#[derive(Clone, Copy)]
enum Mode {
    Add,
    Upsert,
}

/// Embed the product's images and apply the change, off the async workers.
async fn change(
    st: CatalogApiState,
    product: Product,
    mode: Mode,
) -> Result<ChangeAnswer, ApiError> {
    let models = st.models.clone().ok_or_else(|| {
        ApiError::Unavailable("no models loaded: the catalog cannot take new images".into())
    })?;
    if product.images.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "product `{}` has no images",
            product.id
        )));
    }
    let catalog = st.products.catalog().clone();
    let settings = st.settings.clone();
    let root = images_root(&st);
    tokio::task::spawn_blocking(move || -> Result<ChangeAnswer, ApiError> {
        if matches!(mode, Mode::Add) && catalog.product(&product.id).is_some() {
            return Err(CatalogError::DuplicateProduct(product.id.clone()).into());
        }
        let loader = ImageLoader::for_admin(&root, &settings);
        // New vectors are made the way the serving catalog's were.
        let snapshot = catalog.snapshot();
        let mut settings = settings;
        settings.synthetic_views = snapshot.manifest.synthetic_views;
        let shelf: Vec<&Product> = snapshot.products().map(|p| p.as_ref()).collect();
        // The shelf is the catalog's own images (trusted); the request's go through `loader`.
        let clutter = clutter_of(
            &settings,
            &ImageLoader::new(&root, &settings),
            shelf.into_iter(),
        );
        let (vectors, skipped) = product_vectors(
            &models,
            &settings,
            &loader,
            &product,
            &format!("product {}", product.id),
            &clutter,
        );
        if vectors.is_empty() {
            let why = skipped
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ApiError::BadRequest(format!("no usable image: {why}")));
        }
        let answer = ChangeAnswer {
            id: product.id.clone(),
            vectors: vectors.len(),
            skipped,
        };
        match mode {
            Mode::Add => catalog.add(product, vectors)?,
            Mode::Upsert => catalog.upsert(product, vectors)?,
        }
        Ok(answer)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("catalog update task: {e}")))?
}

async fn add_product(
    State(st): State<CatalogApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let product = parse_product(&body)?;
    let answer = change(st, product, Mode::Add).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn put_product(
    State(st): State<CatalogApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    // The id may be left out of the body; if present it must be the path's.
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid product: {e}")))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("invalid product: not a JSON object".into()))?;
    match obj.get("id") {
        None => {
            obj.insert("id".into(), serde_json::Value::String(id.clone()));
        }
        Some(v) if v.as_str() == Some(id.as_str()) => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "the body's id differs from the path's".into(),
            ));
        }
    }
    let product = parse_product(value.to_string().as_bytes())?;
    Ok(Json(change(st, product, Mode::Upsert).await?))
}

async fn delete_product(
    State(st): State<CatalogApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&headers, &st.admin_key)?;
    let catalog = st.products.catalog().clone();
    tokio::task::spawn_blocking(move || catalog.remove(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("catalog update task: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}
