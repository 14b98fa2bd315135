//! Everything that touches GStreamer. Pipelines are built from the descriptions in
//! `pipelines/` and deliver [`DecodedFrame`]s (I420 at the analysis height) through an
//! appsink; bus errors become [`MediaError`]s and the pipeline goes to Null.
//!
//! Three ways in: [`SegmentDecoder`] (one HLS segment's bytes at a time, whole or as its
//! LL-HLS parts arrive; a bad segment fails alone), [`FrameSource`] over a file or an SRT stream (continuous), and
//! [`encode_segments`] for the test origin.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use serde::{Deserialize, Serialize};

use crate::frame::I420Image;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Height of the frames handed to analysis; the width follows the display aspect.
    pub analysis_height: u32,
    /// Folder with pipeline descriptions that replace the built-in ones (empty: built-in).
    pub pipelines_dir: String,
    /// Frames a channel's decoder may hold ahead of analysis before it waits.
    pub frame_queue: usize,
    /// Threads of each video decoder (libav's `max-threads`; 0: libav's choice, one per
    /// core). One thread decodes a 720p30 channel several times faster than real time at
    /// less CPU than frame threading, and keeps N channels from running N × cores decoder
    /// threads (docs/BENCHMARKS.md, "Capacity with full analysis").
    pub decoder_threads: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            analysis_height: 360,
            pipelines_dir: String::new(),
            frame_queue: 64,
            decoder_threads: 1,
        }
    }
}

const SEGMENT_PIPELINE: &str = include_str!("../../pipelines/segment.gst");
const FILE_PIPELINE: &str = include_str!("../../pipelines/file.gst");
const SRT_PIPELINE: &str = include_str!("../../pipelines/srt.gst");
const ORIGIN_ENCODE_PIPELINE: &str = include_str!("../../pipelines/origin-encode.gst");

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("pipeline `{name}` could not be built: {why}")]
    Build { name: String, why: String },
    #[error("{what}: {why}")]
    Decode { what: String, why: String },
    #[error("{what}: no frame within {secs:.1} s")]
    Timeout { what: String, secs: f64 },
    #[error("{what}: not a video ({why})")]
    NotVideo { what: String, why: String },
}

/// A decoded picture and its presentation time as the pipeline reported it.
#[derive(Debug)]
pub struct DecodedFrame {
    pub pts_ns: Option<u64>,
    pub image: I420Image,
}

static INIT: Once = Once::new();

/// Initialise GStreamer once per process.
pub fn init() -> Result<(), MediaError> {
    let mut result = Ok(());
    INIT.call_once(|| {
        result = gst::init().map_err(|e| MediaError::Init(e.to_string()));
    });
    result?;
    if gst::INITIALIZED.load(std::sync::atomic::Ordering::SeqCst) {
        Ok(())
    } else {
        Err(MediaError::Init("an earlier initialisation failed".into()))
    }
}

/// Where pipeline descriptions come from (built in, or a folder of replacements), and how
/// their decoders are set up.
#[derive(Debug, Clone)]
pub struct Pipelines {
    dir: Option<PathBuf>,
    decoder_threads: u32,
}

impl Default for Pipelines {
    fn default() -> Self {
        Self::new(&MediaSettings::default())
    }
}

impl Pipelines {
    pub fn new(settings: &MediaSettings) -> Self {
        let dir = &settings.pipelines_dir;
        Self {
            dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
            decoder_threads: settings.decoder_threads,
        }
    }

    fn description(
        &self,
        name: &str,
        builtin: &str,
        params: &[(&str, String)],
    ) -> Result<String, MediaError> {
        let mut text = match &self.dir {
            Some(dir) => {
                std::fs::read_to_string(dir.join(name)).map_err(|e| MediaError::Build {
                    name: name.into(),
                    why: format!("reading {}: {e}", dir.join(name).display()),
                })?
            }
            None => builtin.to_string(),
        };
        for (key, value) in params {
            text = text.replace(&format!("{{{key}}}"), value);
        }
        Ok(text.trim().to_string())
    }

    fn launch(
        &self,
        name: &str,
        builtin: &str,
        params: &[(&str, String)],
    ) -> Result<gst::Pipeline, MediaError> {
        init()?;
        let desc = self.description(name, builtin, params)?;
        let element = gst::parse::launch(&desc).map_err(|e| MediaError::Build {
            name: name.into(),
            why: e.to_string(),
        })?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Build {
                name: name.into(),
                why: "the description is not a pipeline".into(),
            })?;
        if let Some(dec) = pipeline.by_name("dec") {
            skip_audio(&dec);
        }
        if self.decoder_threads > 0 {
            let threads = self.decoder_threads;
            pipeline.connect_deep_element_added(move |_, _, element| {
                if is_libav_decoder(element) && element.find_property("max-threads").is_some() {
                    element.set_property("max-threads", threads as i32);
                }
            });
        }
        Ok(pipeline)
    }
}

fn is_libav_decoder(element: &gst::Element) -> bool {
    element
        .factory()
        .is_some_and(|f| f.name().starts_with("avdec_"))
}

/// Quote a value for gst-launch syntax.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Stop decodebin from decoding audio: its pads stay unlinked and cost nothing.
fn skip_audio(dec: &gst::Element) {
    if dec.find_property("caps").is_none() {
        return;
    }
    dec.connect("autoplug-continue", false, |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let audio = caps
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("audio/")))
            .unwrap_or(false);
        Some((!audio).to_value())
    });
}

fn appsink(pipeline: &gst::Pipeline, name: &str) -> Result<gst_app::AppSink, MediaError> {
    pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Build {
            name: name.into(),
            why: "no `appsink name=sink`".into(),
        })
}

/// The first error on the bus, if any, as text that names the element.
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            let src = err
                .src()
                .map(|s| s.name().to_string())
                .unwrap_or_else(|| "pipeline".into());
            return Some(format!("{src}: {}", err.error()));
        }
    }
    None
}

fn sample_to_frame(sample: &gst::Sample) -> Result<DecodedFrame, String> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let pts_ns = buffer.pts().map(|t| t.nseconds());
    let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| e.to_string())?;
    let (w, h) = (info.width(), info.height());
    let mut data = Vec::with_capacity(I420Image::size_for(w, h));
    for plane in 0..3u32 {
        let (pw, ph) = if plane == 0 {
            (w as usize, h as usize)
        } else {
            ((w as usize).div_ceil(2), (h as usize).div_ceil(2))
        };
        let stride = vframe.plane_stride()[plane as usize] as usize;
        let bytes = vframe.plane_data(plane).map_err(|e| e.to_string())?;
        for row in 0..ph {
            data.extend_from_slice(&bytes[row * stride..row * stride + pw]);
        }
    }
    Ok(DecodedFrame {
        pts_ns,
        image: I420Image {
            width: w,
            height: h,
            data,
        },
    })
}

/// Decodes one media segment at a time. A corrupt segment returns an error and the next
/// call starts from a fresh pipeline, so one bad segment never stops a channel. A segment
/// can also be decoded as its bytes arrive ([`SegmentDecoder::open`], for LL-HLS parts).
pub struct SegmentDecoder {
    pipelines: Pipelines,
    height: u32,
    timeout: Duration,
}

/// What decoding one segment gave.
#[derive(Debug, Default, Clone)]
pub struct SegmentDecodeStats {
    pub frames: usize,
    /// Time spent decoding (for a stream: pushing bytes and pulling frames, not waiting
    /// for the next bytes).
    pub elapsed: Duration,
}

impl SegmentDecoder {
    pub fn new(pipelines: Pipelines, height: u32, timeout: Duration) -> Result<Self, MediaError> {
        init()?;
        Ok(Self {
            pipelines,
            height,
            timeout,
        })
    }

    /// Decode `init` (an fMP4 EXT-X-MAP section, if any) followed by `data`, handing each
    /// frame to `on_frame` in presentation order. Frames decoded before an error are
    /// delivered; the error says what went wrong with `what` (e.g. the segment URL).
    pub fn decode(
        &mut self,
        what: &str,
        init: Option<&bytes::Bytes>,
        data: bytes::Bytes,
        on_frame: impl FnMut(DecodedFrame),
    ) -> Result<SegmentDecodeStats, MediaError> {
        let mut stream = self.start(what, init, false)?;
        stream.push(data);
        stream.finish(on_frame)
    }

    /// Start decoding a segment whose bytes come in pieces: [`SegmentStream::push`] each,
    /// [`SegmentStream::poll`] for the frames decoded so far, [`SegmentStream::finish`] at
    /// the end. The decoder threads over slices, not frames: frame threading holds the
    /// last frames of each piece back until the next arrives.
    pub fn open(
        &mut self,
        what: &str,
        init: Option<&bytes::Bytes>,
    ) -> Result<SegmentStream, MediaError> {
        self.start(what, init, true)
    }

    fn start(
        &mut self,
        what: &str,
        init: Option<&bytes::Bytes>,
        streaming: bool,
    ) -> Result<SegmentStream, MediaError> {
        let started = Instant::now();
        let pipeline = self.pipelines.launch(
            "segment.gst",
            SEGMENT_PIPELINE,
            &[("height", self.height.to_string())],
        )?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| MediaError::Build {
                name: "segment.gst".into(),
                why: "no `appsrc name=src`".into(),
            })?;
        let sink = appsink(&pipeline, "segment.gst")?;
        if streaming {
            pipeline.connect_deep_element_added(|_, _, element| {
                if is_libav_decoder(element) && element.find_property("thread-type").is_some() {
                    element.set_property_from_str("thread-type", "slice");
                }
            });
        }
        let mut stream = SegmentStream {
            pipeline,
            src,
            sink,
            what: what.to_string(),
            timeout: self.timeout,
            frames: 0,
            busy: Duration::ZERO,
        };
        stream.src.set_max_bytes(0);
        stream
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Decode {
                what: what.into(),
                why: format!("pipeline would not start: {e}"),
            })?;
        if let Some(init) = init {
            let _ = stream
                .src
                .push_buffer(gst::Buffer::from_slice(init.clone()));
        }
        stream.busy = started.elapsed();
        Ok(stream)
    }
}

/// Once a segment's last bytes are in, the longest wait for its next frame (a decoder
/// that keeps up gives one every few tens of milliseconds; this is a hundred times that).
pub const SEGMENT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// One segment being decoded as its bytes arrive; dropped, its pipeline stops.
pub struct SegmentStream {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    what: String,
    timeout: Duration,
    frames: usize,
    busy: Duration,
}

impl SegmentStream {
    /// The next bytes of the segment.
    pub fn push(&mut self, data: bytes::Bytes) {
        let t = Instant::now();
        let _ = self.src.push_buffer(gst::Buffer::from_slice(data));
        self.busy += t.elapsed();
    }

    /// Frames decoded so far: waits up to `wait` for each next one, returns when none
    /// comes within it.
    pub fn poll(
        &mut self,
        wait: Duration,
        mut on_frame: impl FnMut(DecodedFrame),
    ) -> Result<(), MediaError> {
        loop {
            let t = Instant::now();
            match self
                .sink
                .try_pull_sample(gst::ClockTime::from_nseconds(wait.as_nanos() as u64))
            {
                Some(sample) => {
                    self.busy += t.elapsed();
                    on_frame(self.frame(&sample)?);
                }
                None => return self.check(),
            }
        }
    }

    /// The segment is complete: the frames still in the pipeline, and what decoding it
    /// gave.
    pub fn finish(
        mut self,
        mut on_frame: impl FnMut(DecodedFrame),
    ) -> Result<SegmentDecodeStats, MediaError> {
        let started = Instant::now();
        let _ = self.src.end_of_stream();
        // All its bytes are in: a segment that yields no frame for this long never will
        // (random bytes can keep a pipeline busy without error or end).
        let idle = SEGMENT_IDLE_TIMEOUT.min(self.timeout);
        let mut last_frame = started;
        // Time `on_frame` held us (the consumer's backpressure or pacing): not decoding,
        // so neither the timeout nor the decode time counts it.
        let mut waited = Duration::ZERO;
        loop {
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                let frame = self.frame(&sample)?;
                let t = Instant::now();
                on_frame(frame);
                last_frame = Instant::now();
                waited += last_frame - t;
                continue;
            }
            if self.sink.is_eos() {
                break;
            }
            self.check()?;
            let (now, secs) = (Instant::now(), idle.as_secs_f64());
            let decoding = now.duration_since(started).saturating_sub(waited);
            if decoding > self.timeout || now - last_frame > idle {
                return Err(MediaError::Timeout {
                    what: self.what.clone(),
                    secs: if decoding > self.timeout {
                        self.timeout.as_secs_f64()
                    } else {
                        secs
                    },
                });
            }
        }
        if self.frames == 0 {
            return Err(MediaError::NotVideo {
                what: self.what.clone(),
                why: bus_error(&self.pipeline).unwrap_or_else(|| "no video frames in it".into()),
            });
        }
        Ok(SegmentDecodeStats {
            frames: self.frames,
            elapsed: self.busy + started.elapsed().saturating_sub(waited),
        })
    }

    fn frame(&mut self, sample: &gst::Sample) -> Result<DecodedFrame, MediaError> {
        self.frames += 1;
        sample_to_frame(sample).map_err(|why| MediaError::Decode {
            what: self.what.clone(),
            why,
        })
    }

    /// An error on the bus, named as the segment's.
    fn check(&self) -> Result<(), MediaError> {
        match bus_error(&self.pipeline) {
            None => Ok(()),
            Some(why) if self.frames == 0 => Err(MediaError::NotVideo {
                what: self.what.clone(),
                why,
            }),
            Some(why) => Err(MediaError::Decode {
                what: self.what.clone(),
                why,
            }),
        }
    }
}

impl Drop for SegmentStream {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A continuous source of frames: a file (as fast as decoding goes) or an SRT stream.
pub struct FrameSource {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    what: String,
    done: bool,
    frames: u64,
    /// How long `next_frame` waits before it reports a timeout (live sources).
    idle_timeout: Duration,
    /// Running time of the pipeline's base time on the system clock, for live sources.
    live: bool,
}

impl FrameSource {
    /// Decode a local file.
    pub fn file(
        pipelines: &Pipelines,
        path: &Path,
        height: u32,
        queue: usize,
    ) -> Result<Self, MediaError> {
        let what = path.display().to_string();
        if !path.is_file() {
            return Err(MediaError::NotVideo {
                what,
                why: "no such file".into(),
            });
        }
        let pipeline = pipelines.launch(
            "file.gst",
            FILE_PIPELINE,
            &[
                ("location", quoted(&path.to_string_lossy())),
                ("height", height.to_string()),
                ("queue", queue.to_string()),
            ],
        )?;
        Self::start(pipeline, what, Duration::from_secs(20), false)
    }

    /// Receive MPEG-TS over SRT. `uri` is `srt://host:port?mode=caller|listener`.
    pub fn srt(
        pipelines: &Pipelines,
        uri: &str,
        height: u32,
        queue: usize,
        latency_ms: u32,
        idle_timeout: Duration,
    ) -> Result<Self, MediaError> {
        let pipeline = pipelines.launch(
            "srt.gst",
            SRT_PIPELINE,
            &[
                ("uri", quoted(uri)),
                ("height", height.to_string()),
                ("queue", queue.to_string()),
                ("latency", latency_ms.to_string()),
            ],
        )?;
        // Buffer times on the real-time clock: running time + base time = wall clock.
        let clock = gst::SystemClock::obtain();
        clock.set_property("clock-type", gst::ClockType::Realtime);
        pipeline.use_clock(Some(&clock));
        Self::start(pipeline, uri.to_string(), idle_timeout, true)
    }

    fn start(
        pipeline: gst::Pipeline,
        what: String,
        idle_timeout: Duration,
        live: bool,
    ) -> Result<Self, MediaError> {
        let sink = appsink(&pipeline, &what)?;
        pipeline.set_state(gst::State::Playing).map_err(|e| {
            let why = bus_error(&pipeline).unwrap_or_else(|| e.to_string());
            let _ = pipeline.set_state(gst::State::Null);
            MediaError::Decode {
                what: what.clone(),
                why: format!("pipeline would not start: {why}"),
            }
        })?;
        Ok(Self {
            pipeline,
            sink,
            what,
            done: false,
            frames: 0,
            idle_timeout,
            live,
        })
    }

    /// For live sources: the wall-clock time (ns since the Unix epoch) of running time 0.
    pub fn base_unix_ns(&self) -> Option<u64> {
        self.live
            .then(|| self.pipeline.base_time().map(|t| t.nseconds()))
            .flatten()
    }

    /// The next frame; `Ok(None)` at the end of the stream. Blocks (decoding runs in
    /// GStreamer's threads).
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, MediaError> {
        if self.done {
            return Ok(None);
        }
        let deadline = Instant::now() + self.idle_timeout;
        loop {
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                self.frames += 1;
                return sample_to_frame(&sample)
                    .map(Some)
                    .map_err(|why| MediaError::Decode {
                        what: self.what.clone(),
                        why,
                    });
            }
            if self.sink.is_eos() {
                self.done = true;
                return Ok(None);
            }
            if let Some(why) = bus_error(&self.pipeline) {
                self.done = true;
                let what = self.what.clone();
                return Err(if self.frames == 0 {
                    MediaError::NotVideo { what, why }
                } else {
                    MediaError::Decode { what, why }
                });
            }
            if Instant::now() > deadline {
                return Err(MediaError::Timeout {
                    what: self.what.clone(),
                    secs: self.idle_timeout.as_secs_f64(),
                });
            }
        }
    }
}

impl Drop for FrameSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Re-encode `input` to H.264 in MPEG-TS segments of `segment_secs` (a key frame at
/// each start), written as `dir/seg%05d.ts`. Returns the segment files in order.
pub fn encode_segments(
    input: &Path,
    dir: &Path,
    segment_secs: f64,
    fps_hint: u32,
    kbps: u32,
) -> Result<Vec<PathBuf>, MediaError> {
    encode_segments_as(input, dir, segment_secs, fps_hint, kbps, None)
}

/// [`encode_segments`], optionally scaled to `size` (width, height) at `fps_hint` frames/s.
pub fn encode_segments_as(
    input: &Path,
    dir: &Path,
    segment_secs: f64,
    fps_hint: u32,
    kbps: u32,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>, MediaError> {
    let caps = match size {
        Some((w, h)) => format!(
            "video/x-raw,format=I420,width={w},height={h},pixel-aspect-ratio=1/1,framerate={fps_hint}/1"
        ),
        None => "video/x-raw,format=I420".to_string(),
    };
    let what = input.display().to_string();
    if !input.is_file() {
        return Err(MediaError::NotVideo {
            what,
            why: "no such file".into(),
        });
    }
    let gop = ((segment_secs * fps_hint as f64).round() as u32).max(1);
    let pipeline = Pipelines::default().launch(
        "origin-encode.gst",
        ORIGIN_ENCODE_PIPELINE,
        &[
            ("location", quoted(&input.to_string_lossy())),
            ("caps", caps),
            ("gop", gop.to_string()),
            ("kbps", kbps.to_string()),
            ("segment_ns", ((segment_secs * 1e9) as u64).to_string()),
            ("pattern", quoted(&dir.join("seg%05d.ts").to_string_lossy())),
        ],
    )?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| MediaError::Decode {
            what: what.clone(),
            why: e.to_string(),
        })?;
    let bus = pipeline.bus().expect("pipelines have a bus");
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                result = Err(MediaError::Decode {
                    what: what.clone(),
                    why: err.error().to_string(),
                });
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| MediaError::Decode {
            what: dir.display().to_string(),
            why: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ts"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(MediaError::NotVideo {
            what,
            why: "no segments were produced".into(),
        });
    }
    Ok(files)
}

/// Probe a file's frame rate (frames per second), if its container states one.
pub fn probe_fps(path: &Path) -> Option<f64> {
    init().ok()?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! video/x-raw ! fakesink name=sink",
        quoted(&path.to_string_lossy())
    ))
    .ok()?
    .downcast::<gst::Pipeline>()
    .ok()?;
    pipeline.set_state(gst::State::Paused).ok()?;
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    let fps = res.ok().and_then(|_| {
        let sink = pipeline.by_name("sink")?;
        let caps = sink.static_pad("sink")?.current_caps()?;
        let s = caps.structure(0)?;
        let f = s.get::<gst::Fraction>("framerate").ok()?;
        (f.numer() > 0 && f.denom() > 0).then(|| f.numer() as f64 / f.denom() as f64)
    });
    let _ = pipeline.set_state(gst::State::Null);
    fps
}

/// Probe a file's picture size.
pub fn probe_size(path: &Path) -> Option<(u32, u32)> {
    let mut src = FrameSource::file(&Pipelines::default(), path, 16, 1).ok()?;
    src.next_frame().ok()??;
    // The appsink sees the scaled size; the decoder's source pad has the original.
    let dec = src.pipeline.by_name("dec")?;
    dec.src_pads().into_iter().find_map(|p| {
        let caps = p.current_caps()?;
        let s = caps.structure(0)?;
        if !s.name().starts_with("video/") {
            return None;
        }
        Some((
            s.get::<i32>("width").ok()? as u32,
            s.get::<i32>("height").ok()? as u32,
        ))
    })
}
