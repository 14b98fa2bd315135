//! The product cue: what every output (WebSocket feed, Redis bus, playlists, batch JSON)
//! carries. Wall-clock times serialise as RFC 3339 UTC with milliseconds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A product seen in a channel over a stretch of time within one shot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    /// Stable across updates and restarts of the same detection: `<channel>-<shot>-<product>` hashed.
    pub id: String,
    pub channel: String,
    pub product_id: String,
    /// Wall clock of the first frame where the product shows.
    #[serde(with = "ms_time")]
    pub start: DateTime<Utc>,
    /// Wall clock of the last frame where it shows; `null` while the cue is open.
    #[serde(with = "ms_time_opt", default)]
    pub end: Option<DateTime<Utc>>,
    /// Media time of `start`, seconds from the channel's first frame.
    pub pts: f64,
    /// Match confidence in [0, 1] (aggregated over the samples).
    pub score: f32,
    /// Index of the shot the cue belongs to.
    pub shot: u64,
    /// Where the product is, over time: normalised boxes so a player can draw a hotspot.
    #[serde(default)]
    pub boxes: Vec<BoxSample>,
    /// Product details for display (title, price, url, image...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<serde_json::Value>,
    /// Who made it: recognition (the default, left out of the JSON) or an operator's pin
    /// (`"source": "operator"`).
    #[serde(default, skip_serializing_if = "CueSource::is_auto")]
    pub source: CueSource,
}

/// Who made a cue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CueSource {
    /// Recognition (the pipeline).
    #[default]
    Auto,
    /// An operator pinned the product (console or `POST /v1/channels/{id}/pins`).
    Operator,
}

impl CueSource {
    pub fn is_auto(&self) -> bool {
        *self == CueSource::Auto
    }
}

/// A box at one instant: `x, y, w, h` in [0, 1] of the picture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxSample {
    #[serde(with = "ms_time")]
    pub t: DateTime<Utc>,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// A cue's lifecycle, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "cue", rename_all = "snake_case")]
pub enum CueEvent {
    /// First announcement.
    Start(Cue),
    /// New boxes, a higher score or a later `end` candidate.
    Update(Cue),
    /// The cue is over (shot ended or product lost): `end` is set.
    End(Cue),
}

impl CueEvent {
    pub fn cue(&self) -> &Cue {
        match self {
            CueEvent::Start(c) | CueEvent::Update(c) | CueEvent::End(c) => c,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            CueEvent::Start(_) => "start",
            CueEvent::Update(_) => "update",
            CueEvent::End(_) => "end",
        }
    }
}

/// A stable cue id from its channel, shot and product.
pub fn cue_id(channel: &str, shot: u64, product_id: &str) -> String {
    cue_id_in_epoch(channel, 0, shot, product_id)
}

/// [`cue_id`] for a channel analysed in lease `epoch` of a fleet (0: not leased, the same
/// id as [`cue_id`]): shot indexes start again with each owner, the epoch keeps the ids of
/// two owners apart.
pub fn cue_id_in_epoch(channel: &str, epoch: u64, shot: u64, product_id: &str) -> String {
    use sha2::Digest;
    let text = if epoch == 0 {
        format!("{channel}\u{1f}{shot}\u{1f}{product_id}")
    } else {
        format!("{channel}\u{1f}{epoch}\u{1f}{shot}\u{1f}{product_id}")
    };
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!("cue-{}", hex::encode(&digest[..8]))
}

pub mod ms_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::frame::rfc3339_ms(t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

pub mod ms_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::frame::rfc3339_ms(t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Channel ids appear in URLs and metric labels: keep them to a safe alphabet.
pub fn validate_channel_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("`{id}` may only hold letters, digits, `-` and `_`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_shape() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00.040Z")
            .unwrap()
            .with_timezone(&Utc);
        let cue = Cue {
            source: Default::default(),
            id: cue_id("news", 3, "sku-1"),
            channel: "news".into(),
            product_id: "sku-1".into(),
            start: t,
            end: None,
            pts: 12.04,
            score: 0.8,
            shot: 3,
            boxes: vec![BoxSample {
                t,
                x: 0.1,
                y: 0.2,
                w: 0.3,
                h: 0.4,
            }],
            product: None,
        };
        let v = serde_json::to_value(CueEvent::Start(cue.clone())).unwrap();
        assert_eq!(v["type"], "start");
        assert_eq!(v["cue"]["start"], "2026-11-21T10:00:00.040Z");
        assert!(v["cue"]["end"].is_null());
        let back: CueEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, CueEvent::Start(cue));
        assert_eq!(cue_id("news", 3, "sku-1"), cue_id("news", 3, "sku-1"));
        assert_ne!(cue_id("news", 3, "sku-1"), cue_id("news", 4, "sku-1"));
    }
}
