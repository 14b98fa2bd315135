//! Products and the JSON Lines files they come in. Pure parsing: no I/O beyond reading the
//! text handed in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A catalog product. Unknown fields are kept and returned as they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Absolute paths, paths relative to the JSONL file's folder, or http(s) URLs.
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Product {
    /// Parse one JSON object and check the id.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let p: Product = serde_json::from_str(text).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    pub fn check(&self) -> Result<(), String> {
        validate_id(&self.id)?;
        if let Some(p) = self.price
            && (!p.is_finite() || p < 0.0)
        {
            return Err(format!("price {p} is not a non-negative number"));
        }
        Ok(())
    }
}

/// Product ids appear in URLs and logs: 1 to 256 characters, no control characters, no `/`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("id is empty".into());
    }
    if id.len() > 256 {
        return Err("id is longer than 256 bytes".into());
    }
    if id.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!(
            "id `{}` holds a control character or `/`",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    File(PathBuf),
    Url(String),
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::File(p) => write!(f, "{}", p.display()),
            ImageSource::Url(u) => f.write_str(u),
        }
    }
}

impl ImageSource {
    /// A URL stays a URL; a relative path is taken relative to `base`.
    pub fn resolve(spec: &str, base: &Path) -> Self {
        let lower = spec.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return ImageSource::Url(spec.to_string());
        }
        let p = Path::new(spec);
        if p.is_absolute() {
            ImageSource::File(p.to_path_buf())
        } else {
            ImageSource::File(base.join(p))
        }
    }
}

/// One line that could not be used, by file and line number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// `file:line`, or `file:line image` for one image of a product.
    pub at: String,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// A parsed product and the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductLine {
    pub line: usize,
    pub product: Product,
}

/// Parse a products JSONL text: blank lines ignored; malformed lines, bad ids and duplicate
/// ids are reported (the first occurrence of an id wins).
pub fn parse_products(text: &str, file: &str) -> (Vec<ProductLine>, Vec<Skipped>) {
    let mut products = Vec::new();
    let mut skipped = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let at = format!("{file}:{line}");
        match Product::from_json(raw) {
            Err(why) => skipped.push(Skipped { at, reason: why }),
            Ok(p) => {
                if let Some(first) = first_line.get(&p.id) {
                    skipped.push(Skipped {
                        at,
                        reason: format!("duplicate product id `{}` (first on line {first})", p.id),
                    });
                } else {
                    first_line.insert(p.id.clone(), line);
                    products.push(ProductLine { line, product: p });
                }
            }
        }
    }
    (products, skipped)
}

/// A labelled photo for learning: `{"product_id": "…", "image": "…"}` per line (or
/// `"images": […]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPhoto {
    pub product_id: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub images: Vec<String>,
}

/// Parse a training-photos JSONL: `(line, product id, image spec)` per image.
pub fn parse_train_photos(text: &str, file: &str) -> (Vec<(usize, String, String)>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let at = format!("{file}:{line}");
        match serde_json::from_str::<TrainPhoto>(raw) {
            Err(e) => skipped.push(Skipped {
                at,
                reason: e.to_string(),
            }),
            Ok(t) => {
                if let Err(why) = validate_id(&t.product_id) {
                    skipped.push(Skipped { at, reason: why });
                    continue;
                }
                let images: Vec<String> = t.image.into_iter().chain(t.images).collect();
                if images.is_empty() {
                    skipped.push(Skipped {
                        at,
                        reason: "no image".into(),
                    });
                }
                for img in images {
                    out.push((line, t.product_id.clone(), img));
                }
            }
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_fields_round_trip() {
        let p = Product::from_json(r#"{"id":"a1","title":"Milk","price":1.5,"images":["x.jpg"],"sku":"123","dims":{"w":3}}"#)
            .unwrap();
        assert_eq!(p.title.as_deref(), Some("Milk"));
        assert_eq!(p.extra["sku"], "123");
        let back: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(back["dims"]["w"], 3);
        assert_eq!(back["price"], 1.5);
        assert!(back.get("brand").is_none());
    }

    #[test]
    fn bad_products() {
        assert!(
            Product::from_json(r#"{"title":"x"}"#)
                .unwrap_err()
                .contains("id")
        );
        assert!(Product::from_json(r#"{"id":""}"#).is_err());
        assert!(Product::from_json(r#"{"id":"a/b"}"#).is_err());
        assert!(Product::from_json(r#"{"id":"a","price":-1}"#).is_err());
        assert!(Product::from_json(r#"{"id":"a","price":"cheap"}"#).is_err());
        assert!(Product::from_json(r#"{"id":"a","images":"one.jpg"}"#).is_err());
    }

    #[test]
    fn jsonl_reports_lines() {
        let text =
            "{\"id\":\"a\"}\n\n{not json\n{\"id\":\"b\"}\n{\"id\":\"a\",\"title\":\"again\"}\n";
        let (ok, skipped) = parse_products(text, "p.jsonl");
        assert_eq!(ok.iter().map(|p| p.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].at, "p.jsonl:3");
        assert_eq!(skipped[1].at, "p.jsonl:5");
        assert!(
            skipped[1]
                .reason
                .contains("duplicate product id `a` (first on line 1)")
        );
    }

    #[test]
    fn image_sources() {
        let base = Path::new("/data/cat");
        assert_eq!(
            ImageSource::resolve("a/b.jpg", base),
            ImageSource::File("/data/cat/a/b.jpg".into())
        );
        assert_eq!(
            ImageSource::resolve("/x.jpg", base),
            ImageSource::File("/x.jpg".into())
        );
        assert_eq!(
            ImageSource::resolve("HTTPS://h/x.jpg", base),
            ImageSource::Url("HTTPS://h/x.jpg".into())
        );
    }

    #[test]
    fn train_photos() {
        let text = "{\"product_id\":\"a\",\"image\":\"1.jpg\"}\n{\"product_id\":\"b\",\"images\":[\"2.jpg\",\"3.jpg\"]}\n{\"product_id\":\"c\"}\n{\"x\":1}\n";
        let (ok, skipped) = parse_train_photos(text, "t.jsonl");
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[2], (2, "b".to_string(), "3.jpg".to_string()));
        assert_eq!(
            skipped.iter().map(|s| s.at.as_str()).collect::<Vec<_>>(),
            vec!["t.jsonl:3", "t.jsonl:4"]
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,400}") {
            let (ok, skipped) = parse_products(&text, "f");
            prop_assert!(ok.len() + skipped.len() <= text.lines().count());
            let _ = parse_train_photos(&text, "f");
        }
    }
}
