//! The product API's connector to the shop: catalog data, optionally refreshed with live
//! fields (price, availability…) from the shop's own HTTP API, cached briefly. When the shop
//! does not answer in time (or answers badly) the answer degrades to the catalog's data (or
//! the last live data seen), marked stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Catalog, CatalogError};

/// `[catalog.upstream]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// URL of one product in the shop's API, `{id}` standing for the (percent-encoded)
    /// product id, e.g. `https://shop.example/api/products/{id}`. Empty: no enrichment.
    pub url_template: String,
    pub timeout_ms: u64,
    /// How long a live answer is reused.
    pub cache_ttl_ms: u64,
    /// After a failure, the shop is not asked again about that product for this long.
    pub failure_backoff_ms: u64,
    /// Fields copied from the answer: `name` (a top-level key) or `name=/json/pointer`.
    pub fields: Vec<String>,
    /// Optional header sent with each request (e.g. `authorization` / `Bearer …`).
    pub header_name: String,
    pub header_value: String,
    /// Larger answers are refused.
    pub max_bytes: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url_template: String::new(),
            timeout_ms: 800,
            cache_ttl_ms: 30_000,
            failure_backoff_ms: 2_000,
            fields: ["price", "currency", "availability"]
                .map(String::from)
                .to_vec(),
            header_name: String::new(),
            header_value: String::new(),
            max_bytes: 1 << 20,
        }
    }
}

impl UpstreamSettings {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.url_template.is_empty() {
            if !self.url_template.contains("{id}") {
                return Err(("url_template".into(), "must contain `{id}`".into()));
            }
            let probe = self.url_template.replace("{id}", "x");
            match url::Url::parse(&probe) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err((
                        "url_template".into(),
                        format!("`{}` is not an http(s) URL", self.url_template),
                    ));
                }
            }
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms".into(), "must be greater than 0".into()));
        }
        for f in &self.fields {
            let (name, pointer) = split_field(f);
            if name.is_empty() || pointer.is_some_and(|p| !p.starts_with('/')) {
                return Err((
                    "fields".into(),
                    format!("`{f}` is not `name` or `name=/json/pointer`"),
                ));
            }
        }
        if self.header_name.is_empty() != self.header_value.is_empty() {
            return Err((
                "header_name".into(),
                "header_name and header_value go together".into(),
            ));
        }
        Ok(())
    }
}

fn split_field(f: &str) -> (&str, Option<&str>) {
    match f.split_once('=') {
        Some((n, p)) => (n.trim(), Some(p.trim())),
        None => (f.trim(), None),
    }
}

/// Pick the configured fields out of an upstream answer.
pub fn extract_fields(answer: &Value, fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let (name, pointer) = split_field(f);
        let v = match pointer {
            Some(p) => answer.pointer(p),
            None => answer.get(name),
        };
        if let Some(v) = v {
            out.insert(name.to_string(), v.clone());
        }
    }
    out
}

/// Where the live fields of an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Catalog data only (no upstream configured, or it failed with nothing cached).
    Catalog,
    /// Live fields from the shop (possibly from the short cache).
    Upstream,
}

/// The answer of `GET /v1/products/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductAnswer {
    /// The catalog product, with live fields laid over it.
    pub product: Value,
    pub source: Source,
    /// True when the shop was asked but did not answer usably: prices may be out of date.
    pub stale: bool,
    /// When the live fields were fetched (RFC 3339), if any.
    pub fetched_at: Option<String>,
    /// Why the shop's answer is missing, when stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Cached {
    fields: Map<String, Value>,
    fetched: Instant,
    fetched_at: String,
}

#[derive(Debug, Default)]
struct CacheSlot {
    good: Option<Cached>,
    failed_until: Option<(Instant, String)>,
}

/// Product look-ups for the HTTP API.
pub struct ProductService {
    catalog: Arc<Catalog>,
    settings: UpstreamSettings,
    client: reqwest::Client,
    cache: Mutex<HashMap<String, CacheSlot>>,
}

impl ProductService {
    pub fn new(catalog: Arc<Catalog>, settings: &UpstreamSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            catalog,
            settings: settings.clone(),
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The product `id`, enriched when an upstream is configured.
    pub async fn get(&self, id: &str) -> Result<ProductAnswer, CatalogError> {
        let product = self
            .catalog
            .product(id)
            .ok_or_else(|| CatalogError::UnknownProduct(id.to_string()))?;
        let base = serde_json::to_value(product.as_ref()).unwrap_or(Value::Null);
        if self.settings.url_template.is_empty() {
            return Ok(ProductAnswer {
                product: base,
                source: Source::Catalog,
                stale: false,
                fetched_at: None,
                upstream_error: None,
            });
        }
        let now = Instant::now();
        let ttl = Duration::from_millis(self.settings.cache_ttl_ms);
        let (fresh, backoff, last_good) = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(id) {
                Some(slot) => (
                    slot.good
                        .clone()
                        .filter(|c| now.duration_since(c.fetched) < ttl),
                    slot.failed_until
                        .clone()
                        .filter(|(until, _)| now < *until)
                        .map(|(_, why)| why),
                    slot.good.clone(),
                ),
                None => (None, None, None),
            }
        };
        if let Some(c) = fresh {
            return Ok(merge(base, Some(&c), false, None));
        }
        let outcome = match backoff {
            Some(why) => Err(why),
            None => self.fetch(id).await,
        };
        match outcome {
            Ok(fields) => {
                let c = Cached {
                    fields,
                    fetched: Instant::now(),
                    fetched_at: crate::frame::rfc3339_ms(&chrono::Utc::now()),
                };
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                let slot = cache.entry(id.to_string()).or_default();
                slot.good = Some(c.clone());
                slot.failed_until = None;
                Ok(merge(base, Some(&c), false, None))
            }
            Err(why) => {
                tracing::warn!(product = id, reason = %why, "upstream product API failed; answering stale catalog data");
                {
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    let slot = cache.entry(id.to_string()).or_default();
                    if slot.failed_until.is_none() {
                        let until = Instant::now()
                            + Duration::from_millis(self.settings.failure_backoff_ms);
                        slot.failed_until = Some((until, why.clone()));
                    }
                }
                Ok(merge(base, last_good.as_ref(), true, Some(why)))
            }
        }
    }

    async fn fetch(&self, id: &str) -> Result<Map<String, Value>, String> {
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let url = self
            .settings
            .url_template
            .replace("{id}", &encoded.replace('+', "%20"));
        let mut req = self.client.get(&url).header("accept", "application/json");
        if !self.settings.header_name.is_empty() {
            req = req.header(
                self.settings.header_name.as_str(),
                self.settings.header_value.as_str(),
            );
        }
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let max = self.settings.max_bytes;
        let work = async {
            let mut resp = req.send().await.map_err(|e| short_reqwest_error(&e))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| short_reqwest_error(&e))? {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(format!("answer larger than {max} bytes"));
                }
            }
            let v: Value =
                serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
            if !v.is_object() {
                return Err("answer is not a JSON object".into());
            }
            Ok(extract_fields(&v, &self.settings.fields))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("no answer within {} ms", self.settings.timeout_ms))?
    }
}

fn short_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

fn merge(
    mut base: Value,
    live: Option<&Cached>,
    stale: bool,
    error: Option<String>,
) -> ProductAnswer {
    if let (Some(c), Some(obj)) = (live, base.as_object_mut()) {
        for (k, v) in &c.fields {
            if k != "id" {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    ProductAnswer {
        product: base,
        source: if live.is_some() {
            Source::Upstream
        } else {
            Source::Catalog
        },
        stale,
        fetched_at: live.map(|c| c.fetched_at.clone()),
        upstream_error: error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_name_and_pointer() {
        let v = serde_json::json!({"price": 3.5, "offer": {"stock": [{"state": "in_stock"}]}, "other": 1});
        let f = extract_fields(
            &v,
            &[
                "price".into(),
                "availability=/offer/stock/0/state".into(),
                "missing".into(),
            ],
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f["availability"], "in_stock");
    }

    #[test]
    fn settings_checks() {
        UpstreamSettings::default().validate().unwrap();
        let s = UpstreamSettings {
            url_template: "https://shop/api/{id}".into(),
            ..Default::default()
        };
        s.validate().unwrap();
        let s = UpstreamSettings {
            url_template: "https://shop/api/".into(),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "url_template");
        let s = UpstreamSettings {
            fields: vec!["x=nopointer".into()],
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "fields");
    }

    #[test]
    fn merge_marks_staleness() {
        let base = serde_json::json!({"id": "a", "price": 1.0});
        let c = Cached {
            fields: extract_fields(
                &serde_json::json!({"price": 2.0, "id": "zzz"}),
                &["price".into(), "id".into()],
            ),
            fetched: Instant::now(),
            fetched_at: "t".into(),
        };
        let a = merge(base.clone(), Some(&c), false, None);
        assert_eq!(a.product["price"], 2.0);
        assert_eq!(a.product["id"], "a");
        assert_eq!(a.source, Source::Upstream);
        let a = merge(base, None, true, Some("HTTP 500".into()));
        assert_eq!((a.source, a.stale), (Source::Catalog, true));
        assert_eq!(a.product["price"], 1.0);
    }
}
