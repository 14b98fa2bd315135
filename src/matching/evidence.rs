//! A cue's evidence: the query embeddings of its most similar sightings, kept so that an
//! operator's verdict on the cue (confirm, reject, relabel) can store them as labelled
//! photos of a product. [`EvidenceStore`] holds the evidence of a channel's latest cues,
//! bounded; the oldest cue is forgotten first and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The evidence of one cue as of its latest event.
#[derive(Debug, Clone, PartialEq)]
pub struct CueEvidence {
    pub cue_id: String,
    pub channel: String,
    pub product_id: String,
    pub shot: u64,
    /// `(similarity to the cue's product, query embedding)`, most similar first.
    pub sightings: Vec<(f32, Arc<[f32]>)>,
}

/// A cue's crop (JPEG) as the channel saw it when the cue started, for the console.
pub type Crop = Arc<Vec<u8>>;

/// The evidence of a channel's latest `capacity` cues.
#[derive(Debug)]
pub struct EvidenceStore {
    capacity: usize,
    inner: Mutex<Inner>,
    forgotten: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    by_cue: HashMap<String, CueEvidence>,
    crops: HashMap<String, Crop>,
    /// Cue ids, oldest first.
    order: VecDeque<String>,
}

impl EvidenceStore {
    /// Keeps at most `capacity` cues (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
            forgotten: AtomicU64::new(0),
        }
    }

    /// Keep (or replace) a cue's evidence; forgets the oldest cue when full.
    pub fn put(&self, evidence: CueEvidence) {
        if self.capacity == 0 || evidence.sightings.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = evidence.cue_id.clone();
        if inner.by_cue.insert(id.clone(), evidence).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.by_cue.remove(&old);
                inner.crops.remove(&old);
                self.forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Keep a cue's crop (only for a cue whose evidence is held).
    pub fn put_crop(&self, cue_id: &str, jpeg: Vec<u8>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.by_cue.contains_key(cue_id) && !jpeg.is_empty() {
            inner.crops.insert(cue_id.to_string(), Arc::new(jpeg));
        }
    }

    pub fn crop(&self, cue_id: &str) -> Option<Crop> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.crops.get(cue_id).cloned()
    }

    pub fn get(&self, cue_id: &str) -> Option<CueEvidence> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_cue.get(cue_id).cloned()
    }

    /// Cues held now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .order
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cues forgotten to stay within the capacity.
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

/// Adds a sighting to a cue's evidence, keeping the `keep` most similar (most similar
/// first).
pub fn keep_best(evidence: &mut Vec<(f32, Arc<[f32]>)>, sighting: (f32, Arc<[f32]>), keep: usize) {
    if keep == 0 {
        return;
    }
    let at = evidence
        .iter()
        .position(|(s, _)| *s < sighting.0)
        .unwrap_or(evidence.len());
    if at < keep {
        evidence.insert(at, sighting);
        evidence.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, sims: &[f32]) -> CueEvidence {
        CueEvidence {
            cue_id: id.into(),
            channel: "c".into(),
            product_id: "p".into(),
            shot: 0,
            sightings: sims.iter().map(|s| (*s, Arc::from(vec![*s]))).collect(),
        }
    }

    #[test]
    fn the_oldest_cue_is_forgotten_and_counted() {
        let store = EvidenceStore::new(2);
        store.put(ev("a", &[0.5]));
        store.put(ev("b", &[0.5]));
        store.put(ev("a", &[0.7])); // a replacement, not a new cue
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("a").unwrap().sightings[0].0, 0.7);
        store.put(ev("c", &[0.5]));
        assert_eq!(store.len(), 2);
        assert!(store.get("a").is_none(), "a was the oldest");
        assert!(store.get("b").is_some() && store.get("c").is_some());
        assert_eq!(store.forgotten(), 1);
        // Crops go with their cue's evidence.
        store.put_crop("b", vec![1, 2, 3]);
        store.put_crop("zzz", vec![1]);
        assert_eq!(store.crop("b").unwrap().as_slice(), &[1, 2, 3]);
        assert!(store.crop("zzz").is_none(), "no evidence, no crop");
        store.put(ev("d", &[0.5]));
        assert!(store.crop("b").is_none(), "forgotten with its cue");
    }

    #[test]
    fn nothing_is_kept_without_capacity_or_sightings() {
        let store = EvidenceStore::new(0);
        store.put(ev("a", &[0.5]));
        assert!(store.is_empty());
        let store = EvidenceStore::new(4);
        store.put(ev("a", &[]));
        assert!(store.is_empty());
    }

    #[test]
    fn keep_best_keeps_the_most_similar_in_order() {
        let mut e = Vec::new();
        for s in [0.5, 0.9, 0.1, 0.7, 0.8] {
            keep_best(&mut e, (s, Arc::from(vec![s])), 3);
        }
        let sims: Vec<f32> = e.iter().map(|(s, _)| *s).collect();
        assert_eq!(sims, vec![0.9, 0.8, 0.7]);
        let mut none = Vec::new();
        keep_best(&mut none, (0.5, Arc::from(vec![0.5])), 0);
        assert!(none.is_empty());
    }
}
