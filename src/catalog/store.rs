//! A catalog on disk, written so that no reader ever sees half of one.
//!
//! ```text
//! DIR/CURRENT          name of the live generation, replaced by rename
//! DIR/gen-000007/      manifest.json, products.jsonl, entries.jsonl, vectors.f32,
//!                      projection.f32 and raw.f32 (with a projection), index.faiss
//! DIR/feedback/        labels.jsonl: operator feedback (`catalog::feedback`), not a generation
//! DIR/LOCK             taken by a process changing the catalog (processes sharing DIR)
//! ```
//! A new generation is written into a temporary folder, synced, renamed into place, and only
//! then named in `CURRENT` (written to a temporary file and renamed). A crash leaves the
//! previous generation live; leftovers are removed by the next write. The previous
//! generation is kept so a reader that has just read `CURRENT` can still open it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::CatalogError;

pub const CURRENT: &str = "CURRENT";
/// Operator feedback beside the generations (see `catalog::feedback`); kept across them.
pub const FEEDBACK: &str = "feedback";
/// The lock file writers of every process sharing the folder take in turn.
pub const LOCK: &str = "LOCK";
const GEN_PREFIX: &str = "gen-";
const TMP_MARK: &str = ".tmp-";

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Io {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// The live generation's folder, or why `dir` is not a catalog.
pub fn current_generation(dir: &Path) -> Result<PathBuf, CatalogError> {
    let cur = dir.join(CURRENT);
    let name = std::fs::read_to_string(&cur).map_err(|e| CatalogError::NotACatalog {
        path: dir.to_path_buf(),
        why: format!("cannot read {}: {e}", cur.display()),
    })?;
    let name = name.trim();
    if !name.starts_with(GEN_PREFIX) || name.contains('/') || name.contains(TMP_MARK) {
        return Err(CatalogError::Corrupt {
            path: cur,
            why: format!("`{name}` is not a generation name"),
        });
    }
    Ok(dir.join(name))
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix(GEN_PREFIX)?.parse().ok()
}

/// Files of a generation being written.
pub struct GenerationWriter {
    dir: PathBuf,
    tmp: PathBuf,
    final_name: String,
}

impl GenerationWriter {
    /// Start a new generation in `dir` (created if missing). `dir` must be empty or a catalog.
    pub fn begin(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut max = 0u64;
        let mut foreign = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(n) = generation_number(&name) {
                max = max.max(n);
            } else if name.contains(TMP_MARK) {
                // A write that died half-way: never named in CURRENT, safe to drop.
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            } else if name != CURRENT && name != FEEDBACK && name != LOCK {
                foreign.push(name);
            }
        }
        if !foreign.is_empty() {
            return Err(CatalogError::NotACatalog {
                path: dir.to_path_buf(),
                why: format!(
                    "the folder holds other files ({}); refusing to write a catalog there",
                    foreign.join(", ")
                ),
            });
        }
        let final_name = format!("{GEN_PREFIX}{:06}", max + 1);
        let tmp = dir.join(format!("{final_name}{TMP_MARK}{}", std::process::id()));
        std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            final_name,
        })
    }

    /// Path of a file inside the generation being written.
    pub fn path(&self, file: &str) -> PathBuf {
        self.tmp.join(file)
    }

    /// Write a whole file (synced).
    pub fn write(&self, file: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let p = self.path(file);
        let mut f = std::fs::File::create(&p).map_err(|e| io(&p, e))?;
        f.write_all(bytes).map_err(|e| io(&p, e))?;
        f.sync_all().map_err(|e| io(&p, e))
    }

    /// Make the generation live; returns its folder.
    pub fn commit(self) -> Result<PathBuf, CatalogError> {
        sync_dir(&self.tmp)?;
        let done = self.dir.join(&self.final_name);
        std::fs::rename(&self.tmp, &done).map_err(|e| io(&done, e))?;
        let cur_tmp = self
            .dir
            .join(format!("{CURRENT}{TMP_MARK}{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&cur_tmp).map_err(|e| io(&cur_tmp, e))?;
            f.write_all(format!("{}\n", self.final_name).as_bytes())
                .map_err(|e| io(&cur_tmp, e))?;
            f.sync_all().map_err(|e| io(&cur_tmp, e))?;
        }
        let cur = self.dir.join(CURRENT);
        std::fs::rename(&cur_tmp, &cur).map_err(|e| io(&cur, e))?;
        sync_dir(&self.dir)?;
        prune(&self.dir, &self.final_name);
        Ok(done)
    }
}

impl Drop for GenerationWriter {
    fn drop(&mut self) {
        // Not committed (an error on the way): remove the partial folder.
        if self.tmp.exists() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Take the folder's writer lock (released when the file is dropped): the processes that
/// share a catalog folder (a fleet's shared volume) write one generation at a time.
pub fn lock(dir: &Path) -> Result<std::fs::File, CatalogError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    f.lock().map_err(|e| io(&path, e))?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<(), CatalogError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
}

/// Remove generations older than the one before `live`.
fn prune(dir: &Path, live: &str) {
    let Some(live_n) = generation_number(live) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = generation_number(&name)
            && n + 1 < live_n
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Little-endian f32s.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn read_f32s(path: &Path) -> Result<Vec<f32>, CatalogError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    f32s_from_bytes(&bytes).ok_or_else(|| CatalogError::Corrupt {
        path: path.to_path_buf(),
        why: format!("{} bytes is not a whole number of floats", bytes.len()),
    })
}

/// Little-endian f32s back, or `None` when the length is not a whole number of them.
pub fn f32s_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_swap_and_prune() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        assert!(matches!(
            current_generation(&dir),
            Err(CatalogError::NotACatalog { .. })
        ));
        for i in 1..=4 {
            let w = GenerationWriter::begin(&dir).unwrap();
            w.write("a.txt", format!("{i}").as_bytes()).unwrap();
            let g = w.commit().unwrap();
            assert_eq!(current_generation(&dir).unwrap(), g);
            assert_eq!(
                std::fs::read_to_string(g.join("a.txt")).unwrap(),
                format!("{i}")
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["CURRENT", "gen-000003", "gen-000004"]);
    }

    #[test]
    fn abandoned_write_leaves_the_live_generation() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        let w = GenerationWriter::begin(&dir).unwrap();
        w.write("a.txt", b"one").unwrap();
        let live = w.commit().unwrap();
        {
            let w = GenerationWriter::begin(&dir).unwrap();
            w.write("a.txt", b"half").unwrap();
            // dropped without commit (an error half-way)
        }
        assert_eq!(current_generation(&dir).unwrap(), live);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }

    #[test]
    fn refuses_foreign_folders_and_bad_current() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            GenerationWriter::begin(root.path()),
            Err(CatalogError::NotACatalog { .. })
        ));
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join(CURRENT), "../etc").unwrap();
        assert!(matches!(
            current_generation(d2.path()),
            Err(CatalogError::Corrupt { .. })
        ));
    }

    #[test]
    fn floats_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.f32");
        std::fs::write(&p, f32_bytes(&[1.0, -2.5, 3.25])).unwrap();
        assert_eq!(read_f32s(&p).unwrap(), vec![1.0, -2.5, 3.25]);
        std::fs::write(&p, [0u8; 5]).unwrap();
        assert!(read_f32s(&p).is_err());
    }
}
