//! The Grocery Store dataset (../shared/data/grocery) as a catalog: 81 products, each
//! with its iconic catalog image and description, and labelled in-store photos (train and
//! val splits). `shopcue catalog grocery` writes the JSON Lines files `catalog build`
//! reads; the demo, the end-to-end tests and the accuracy benchmark use it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One labelled picture of the dataset.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub class: usize,
    pub path: PathBuf,
}

/// The dataset: class names (= product ids), iconic images, train and val photos.
#[derive(Debug, Clone)]
pub struct Grocery {
    pub classes: Vec<String>,
    pub coarse: Vec<String>,
    pub iconic: Vec<Labelled>,
    pub train: Vec<Labelled>,
    pub val: Vec<Labelled>,
    pub descriptions: Vec<Option<PathBuf>>,
}

/// Split a CSV line (the dataset's has no quoted commas, but be careful anyway).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// Paths in the dataset's files start with `/` but are relative to its folder.
fn data_path(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim().trim_start_matches('/'))
}

impl Grocery {
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let csv = root.join("classes.csv");
        let text =
            std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
        let mut lines = text.lines();
        let header = csv_fields(lines.next().unwrap_or_default());
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.starts_with(name))
                .with_context(|| format!("{}: no column `{name}`", csv.display()))
        };
        let (c_name, c_id, c_coarse, c_icon, c_desc) = (
            col("Class Name")?,
            col("Class ID")?,
            col("Coarse Class Name")?,
            col("Iconic Image Path")?,
            col("Product Description Path")?,
        );
        let mut rows: Vec<(usize, String, String, PathBuf, Option<PathBuf>)> = Vec::new();
        for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let f = csv_fields(line);
            let get = |c: usize| f.get(c).cloned().unwrap_or_default();
            let id: usize = get(c_id)
                .parse()
                .with_context(|| format!("{}:{}: bad class id", csv.display(), i + 2))?;
            let desc = get(c_desc);
            rows.push((
                id,
                get(c_name),
                get(c_coarse),
                data_path(root, &get(c_icon)),
                (!desc.is_empty()).then(|| data_path(root, &desc)),
            ));
        }
        rows.sort_by_key(|r| r.0);
        if rows.iter().enumerate().any(|(i, r)| r.0 != i) {
            bail!("{}: class ids are not 0..{}", csv.display(), rows.len());
        }
        let split = |name: &str| -> anyhow::Result<Vec<Labelled>> {
            let p = root.join(name);
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let mut out = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let f = csv_fields(line);
                let class: usize = f
                    .get(1)
                    .and_then(|c| c.parse().ok())
                    .with_context(|| format!("{}:{}: bad class", p.display(), i + 1))?;
                if class >= rows.len() {
                    bail!(
                        "{}:{}: class {class} not in classes.csv",
                        p.display(),
                        i + 1
                    );
                }
                out.push(Labelled {
                    class,
                    path: data_path(root, &f[0]),
                });
            }
            Ok(out)
        };
        Ok(Self {
            classes: rows.iter().map(|r| r.1.clone()).collect(),
            coarse: rows.iter().map(|r| r.2.clone()).collect(),
            iconic: rows
                .iter()
                .map(|r| Labelled {
                    class: r.0,
                    path: r.3.clone(),
                })
                .collect(),
            descriptions: rows.iter().map(|r| r.4.clone()).collect(),
            train: split("train.txt")?,
            val: split("val.txt")?,
        })
    }

    /// `products.jsonl` (one product per class, its iconic image) and `train_photos.jsonl`
    /// (the train split), with absolute image paths.
    pub fn write_jsonl(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.write_jsonl_limited(dir, None, &[])
    }

    /// [`Self::write_jsonl`] with at most `photos_per_product` train photos per product
    /// (the first ones of the split), for quicker builds, leaving out the photos whose
    /// file names are in `exclude` (e.g. [`GROCERY_SHOTS_SOURCES`]).
    pub fn write_jsonl_limited(
        &self,
        dir: &Path,
        photos_per_product: Option<usize>,
        exclude: &[&str],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let products = dir.join("products.jsonl");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&products)?);
        for (i, name) in self.classes.iter().enumerate() {
            let abs = std::path::absolute(&self.iconic[i].path)?;
            let description = self.descriptions[i]
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_string());
            let mut p = serde_json::json!({
                "id": name,
                "title": name.replace('-', " "),
                "category": self.coarse[i],
                "images": [abs],
                "class_id": i,
            });
            if let Some(d) = description {
                p["description"] = serde_json::Value::String(d);
            }
            writeln!(f, "{p}")?;
        }
        f.flush()?;
        let train = dir.join("train_photos.jsonl");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&train)?);
        let mut taken = vec![0usize; self.classes.len()];
        for t in &self.train {
            let name = t.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if exclude.contains(&name) {
                continue;
            }
            if photos_per_product.is_some_and(|n| taken[t.class] >= n) {
                continue;
            }
            taken[t.class] += 1;
            let abs = std::path::absolute(&t.path)?;
            writeln!(
                f,
                "{}",
                serde_json::json!({ "product_id": self.classes[t.class], "image": abs })
            )?;
        }
        f.flush()?;
        Ok((products, train))
    }
}

/// The train photos `../shared/data/footage/grocery_shots.mp4` was made from (one per
/// shot; found by pixel correlation 0.999 between each shot's first frame and the
/// dataset's photos). A catalog meant to be evaluated on that footage must not learn from
/// them: [`build_catalog`] always leaves them out.
pub const GROCERY_SHOTS_SOURCES: [&str; 6] = [
    "Bravo-Apple-Juice_001.jpg",
    "Arla-Standard-Milk_002.jpg",
    "Oatly-Oat-Milk_003.jpg",
    "Arla-Natural-Yoghurt_004.jpg",
    "God-Morgon-Orange-Juice_005.jpg",
    "Alpro-Fresh-Soy-Milk_006.jpg",
];

/// Writes the dataset's JSON Lines into `<out>.sources/` and builds the catalog in
/// `out`: the 81 iconic images as the products' images, and a projection learned from
/// the labelled train photos (at most `photos_per_product` each, never the
/// [`GROCERY_SHOTS_SOURCES`]). Returns the report.
pub fn build_catalog(
    models: &crate::inference::Models,
    settings: &super::CatalogSettings,
    dataset: &Path,
    out: &Path,
    photos_per_product: Option<usize>,
    progress: bool,
) -> anyhow::Result<super::build::BuildReport> {
    let g = Grocery::load(dataset)?;
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".sources");
    let sources = out.with_file_name(name);
    let (products, train) =
        g.write_jsonl_limited(&sources, photos_per_product, &GROCERY_SHOTS_SOURCES)?;
    let opts = super::build::BuildOptions {
        products,
        out: out.to_path_buf(),
        train_photos: Some(train),
        domain_photos: None,
        strict: false,
        progress,
    };
    super::build::build(models, settings, &opts)
        .with_context(|| format!("building the grocery catalog in {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_paths() {
        assert_eq!(csv_fields("a, b,\"c,d\""), vec!["a", "b", "c,d"]);
        assert_eq!(
            data_path(Path::new("/g"), "/iconic/x.jpg"),
            PathBuf::from("/g/iconic/x.jpg")
        );
    }

    #[test]
    fn loads_the_dataset_when_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/grocery");
        if !root.exists() {
            eprintln!("skipped: no {}", root.display());
            return;
        }
        let g = Grocery::load(&root).unwrap();
        assert_eq!(g.classes.len(), 81);
        assert_eq!(g.classes[0], "Golden-Delicious");
        assert!(g.iconic.iter().all(|l| l.path.exists()));
        assert!(g.val.len() > 250 && g.train.len() > 2000);
        let dir = tempfile::tempdir().unwrap();
        let (p, t) = g.write_jsonl(dir.path()).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        let (products, skipped) = crate::catalog::product::parse_products(&text, "p");
        assert_eq!((products.len(), skipped.len()), (81, 0));
        assert!(products[0].product.extra.contains_key("description"));
        let (photos, skipped) =
            crate::catalog::product::parse_train_photos(&std::fs::read_to_string(t).unwrap(), "t");
        assert_eq!((photos.len(), skipped.len()), (g.train.len(), 0));
    }
}
