#!/usr/bin/env python3
"""Static int8 versions of the detector and the embedder (issue 14): `make quantize`.

Makes models/yolox_nano_int8.onnx and models/efficientnet_lite0_int8.onnx from the fp32
models with ONNX Runtime's quantisation tools (PyPI onnxruntime==1.31.1, the version of the
runtime library shopcue loads): QDQ format, activations QUInt8 (asymmetric), weights QInt8
per channel (what ONNX Runtime recommends for x86-64 CPUs), MinMax calibration. The model
heads that turn features into the outputs (the detector's sigmoid/reshape/concat tail, the
embedder's global average pool and classifier) stay float, so the outputs shopcue reads are
not rounded to 8 bits.

Calibration data, preprocessed exactly as src/inference/image.rs does it (RgbImage from
I420 BT.601 limited range, triangle-filter resampling, letterbox/stretch, channel order,
mean/std, NCHW):
  * frames of data/footage/grocery_shots.mp4 and intel_concat.mp4, decoded like
    pipelines/file.gst (GStreamer, I420 at media.analysis_height = 360; ffmpeg as a
    fallback), every STEP-th frame;
  * the catalog's iconic images (data/grocery/iconic-images-and-descriptions).
The detector sees the frames (letterboxed, BGR 0..255). The embedder sees what the
catalog build and the query analyser embed: each iconic image whole, and each frame whole
plus its top fp32-detector boxes grown by catalog.box_margin, every region in the views
catalog_views / query_views (centre fractions 1.0, 0.8, 0.6), stretched to 224x224, RGB,
(x - 127) / 128. Grocery val/train photos are never used (val is the test set).

Idempotent: an output is kept when it exists, loads, was made from the same fp32 file by
the same recipe (metadata in the model) and matches its line in models/SHA256SUMS. After
writing a model, its `sha256  file` line in models/SHA256SUMS is (re)written.

Usage: python3 scripts/quantize.py [--force] [--models-dir models] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Pillow decodes the catalog's JPEGs (libjpeg-turbo, like the image crate's decoder).
PINNED = {"onnxruntime": "1.31.1", "onnx": "1.19.1", "numpy": "2.4.6", "PIL": "11.3.0"}
PYPI_NAME = {"PIL": "Pillow"}
# Bump when anything below changes what a model file contains.
RECIPE = "shopcue-int8-v1: QDQ U8 act asym / S8 weights per-channel, MinMax, float heads"

ROOT = Path(__file__).resolve().parent.parent
FOOTAGE = ["grocery_shots.mp4", "intel_concat.mp4"]
ANALYSIS_HEIGHT = 360  # media.analysis_height
FRAME_STEP = 6  # every 6th frame: ~4 per second of 25 fps footage
VIEWS = [1.0, 0.8, 0.6]  # catalog.catalog_views / catalog.query_views
BOX_MARGIN = 1.1  # catalog.box_margin
QUERY_DETECTIONS = 5  # catalog.query_detections


def log(msg: str) -> None:
    print(f"[quantize] {msg}", flush=True)


# ── dependencies ─────────────────────────────────────────────────────────────────────────
def ensure_deps() -> None:
    """Install the pinned PyPI packages when they are missing or at another version."""
    want = []
    for name, ver in PINNED.items():
        try:
            mod = importlib.import_module(name)
            if mod.__version__ != ver:
                want.append(f"{PYPI_NAME.get(name, name)}=={ver}")
        except ImportError:
            want.append(f"{PYPI_NAME.get(name, name)}=={ver}")
    if want:
        log(f"pip: installing {' '.join(want)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *want], check=True)
        importlib.invalidate_caches()


# ── checksums ────────────────────────────────────────────────────────────────────────────
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def listed_sha(sums: Path, name: str) -> str | None:
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0]
    return None


def write_sha(sums: Path, name: str, digest: str) -> None:
    lines = sums.read_text().splitlines() if sums.is_file() else []
    lines = [l for l in lines if not (len(l.split()) == 2 and l.split()[1].lstrip("*") == name)]
    lines.append(f"{digest}  {name}")
    lines.sort(key=lambda l: l.split()[1] if len(l.split()) == 2 else l)
    tmp = sums.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, sums)


# ── pictures, exactly as src/frame.rs and src/inference/image.rs ─────────────────────────
def i420_to_rgb(buf, w: int, h: int):
    """I420Image::to_rgb: BT.601 limited range, integer arithmetic."""
    import numpy as np

    cw, ch = (w + 1) // 2, (h + 1) // 2
    y = np.frombuffer(buf, np.uint8, w * h).reshape(h, w).astype(np.int32)
    u = np.frombuffer(buf, np.uint8, cw * ch, w * h).reshape(ch, cw).astype(np.int32)
    v = np.frombuffer(buf, np.uint8, cw * ch, w * h + cw * ch).reshape(ch, cw).astype(np.int32)
    u = np.repeat(np.repeat(u, 2, 0), 2, 1)[:h, :w] - 128
    v = np.repeat(np.repeat(v, 2, 0), 2, 1)[:h, :w] - 128
    yy = (y - 16) * 298
    r = (yy + 409 * v + 128) >> 8
    g = (yy - 100 * u - 208 * v + 128) >> 8
    b = (yy + 516 * u + 128) >> 8
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def clamp_rect(rect, width: int, height: int):
    """Rect::clamp_to."""
    import numpy as np

    f = np.float32
    x, y, w, h = (f(v) for v in rect)
    wf, hf = f(width), f(height)
    x0 = min(max(x, f(0)), wf - f(1))
    y0 = min(max(y, f(0)), hf - f(1))
    x1 = min(max(x + w, x0 + f(1)), wf)
    y1 = min(max(y + h, y0 + f(1)), hf)
    return (x0, y0, x1 - x0, y1 - y0)


def axis_weights(start, length, size: int, out: int):
    """axis_taps as a dense (out, size) float32 matrix: triangle filter, widened when
    shrinking, nearest pixel when a sample centre falls outside the picture."""
    import numpy as np

    f = np.float32
    step = f(length) / f(out)
    support = max(step, f(1))
    m = np.zeros((out, size), np.float32)
    for o in range(out):
        centre = f(start) + (f(o) + f(0.5)) * step
        lo = int(max(math.floor(centre - support), 0))
        hi = min(int(math.ceil(centre + support)), size)
        lo = min(lo, size - 1)
        hi = max(hi, lo + 1)
        idx = np.arange(lo, hi, dtype=np.float32)
        d = np.abs((idx + f(0.5)) - centre) / support
        wts = np.maximum(f(1) - d, f(0)).astype(np.float32)
        s = wts.sum(dtype=np.float32)
        if s > 0:
            wts = wts / s
        else:
            wts[:] = 0
            nearest = min(max(int(max(math.floor(centre), 0)), lo), hi - 1) - lo
            wts[nearest] = 1
        m[o, lo:hi] = wts
    return m


def resample(img, rect, out_w: int, out_h: int):
    """resample: `rect` of `img` (HxWx3 uint8) to out_h x out_w x 3 float32 (0..255)."""
    import numpy as np

    h, w = img.shape[:2]
    wx = axis_weights(rect[0], rect[2], w, out_w)
    wy = axis_weights(rect[1], rect[3], h, out_h)
    src = img.astype(np.float32).transpose(2, 0, 1)  # c, h, w
    tmp = src @ wx.T  # horizontal pass first, as in Rust: c, h, out_w
    return (wy @ tmp).transpose(1, 2, 0)  # out_h, out_w, c


def fill_input(spec: dict, img, rect):
    """fill_input: one CHW float32 tensor for `rect` of `img` (RGB HxWx3 uint8)."""
    import numpy as np

    f = np.float32
    h, w = img.shape[:2]
    rect = clamp_rect(rect, w, h)
    tw, th = spec["width"], spec["height"]
    if spec["resize"] == "stretch":
        dst_w, dst_h = tw, th
    elif spec["resize"] == "letterbox":  # top-left aligned
        r = min(f(tw) / rect[2], f(th) / rect[3])

        def rnd(v):  # f32::round of a positive value (half away from zero)
            return int(math.floor(float(v) + 0.5))

        dst_w = min(max(rnd(rect[2] * r), 1), tw)
        dst_h = min(max(rnd(rect[3] * r), 1), th)
    else:
        raise ValueError(spec["resize"])
    pixels = resample(img, rect, dst_w, dst_h)
    if spec["channels"] == "bgr":
        pixels = pixels[:, :, ::-1]
    scale, mean, std = f(spec["scale"]), np.array(spec["mean"], f), np.array(spec["std"], f)
    pad = (f(spec.get("pad_value", 114)) * scale - mean) / std
    out = np.empty((th, tw, 3), np.float32)
    out[:] = pad
    out[:dst_h, :dst_w] = (pixels * scale - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


DETECTOR = {
    "width": 416, "height": 416, "channels": "bgr", "resize": "letterbox", "pad_value": 114,
    "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
}
EMBEDDER = {
    "width": 224, "height": 224, "channels": "rgb", "resize": "stretch", "pad_value": 114,
    "scale": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
}


# ── calibration data ─────────────────────────────────────────────────────────────────────
def decode_frames(path: Path, tmpdir: Path):
    """Frames of `path` as delivered to the analysis: I420 at height 360 (pipelines/file.gst),
    converted to RGB like RgbImage::from_i420; every FRAME_STEP-th frame."""
    import numpy as np

    raw = tmpdir / (path.stem + ".i420")
    width = None
    if shutil.which("gst-launch-1.0"):
        caps = f"video/x-raw,format=I420,height={ANALYSIS_HEIGHT},pixel-aspect-ratio=1/1"
        cmd = ["gst-launch-1.0", "-v", "-q", "filesrc", f"location={path}", "!", "decodebin",
               "!", "videoscale", "!", "videoconvert", "!", caps, "!", "filesink",
               f"location={raw}"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        widths = re.findall(r"format=\(string\)I420, width=\(int\)(\d+), height=\(int\)"
                            + str(ANALYSIS_HEIGHT), p.stdout + p.stderr)
        if p.returncode == 0 and widths and raw.is_file():
            width = int(widths[-1])
    if width is None and shutil.which("ffmpeg"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0",
                                "-show_entries", "stream=width,height", "-of", "csv=p=0",
                                str(path)], capture_output=True, text=True, check=True)
        sw, sh = (int(v) for v in probe.stdout.strip().split(",")[:2])
        width = max(2, round(sw * ANALYSIS_HEIGHT / sh / 2) * 2)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vf",
                        f"scale={width}:{ANALYSIS_HEIGHT}", "-pix_fmt", "yuv420p", "-f",
                        "rawvideo", str(raw)], check=True)
    if width is None:
        raise SystemExit(f"cannot decode {path}: neither gst-launch-1.0 nor ffmpeg works")
    h = ANALYSIS_HEIGHT
    size = width * h + 2 * ((width + 1) // 2) * ((h + 1) // 2)
    data = raw.read_bytes()
    n = len(data) // size
    frames = [i420_to_rgb(data[i * size:(i + 1) * size], width, h) for i in range(0, n, FRAME_STEP)]
    raw.unlink()
    log(f"{path.name}: {n} frames {width}x{h}, {len(frames)} for calibration")
    return frames


def load_image(path: Path):
    """RgbImage::open (the image crate's decoders; Pillow here, same JPEG baseline)."""
    import numpy as np

    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def yolox_boxes(out, r_x: float, r_y: float, img_w: int, img_h: int):
    """Top QUERY_DETECTIONS boxes (source pixels x, y, w, h) of one YOLOX output, decoded
    like postprocess.rs + the detector's filters (score 0.25, per-class NMS 0.45)."""
    import numpy as np

    rows = out.reshape(-1, 85)
    grids = []
    for s in (8, 16, 32):
        g = 416 // s
        gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel(), np.full(g * g, s)], 1))
    grid = np.concatenate(grids).astype(np.float32)
    cx = (rows[:, 0] + grid[:, 0]) * grid[:, 2]
    cy = (rows[:, 1] + grid[:, 1]) * grid[:, 2]
    bw = np.exp(rows[:, 2]) * grid[:, 2]
    bh = np.exp(rows[:, 3]) * grid[:, 2]
    cls = rows[:, 5:].argmax(1)
    score = rows[:, 4] * rows[np.arange(len(rows)), 5 + cls]
    keep = score >= 0.25
    # person, chair, sofa, bed, diningtable, toilet, pottedplant (COCO ids)
    keep &= ~np.isin(cls, [0, 56, 57, 59, 60, 61, 58])
    idx = np.argsort(-score[keep])
    cand = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)[keep][idx]
    cls, score = cls[keep][idx], score[keep][idx]
    chosen = []
    for i in range(len(cand)):
        ok = True
        for j in chosen:
            if cls[j] != cls[i]:
                continue
            a, b = cand[i], cand[j]
            ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = ix * iy
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union > 0.45:
                ok = False
                break
        if ok:
            chosen.append(i)
    boxes = []
    for i in chosen:
        x0, y0, x1, y1 = cand[i] / np.array([r_x, r_y, r_x, r_y], np.float32)
        w, h = x1 - x0, y1 - y0
        if w < 0.02 * img_w or h < 0.02 * img_h:
            continue
        boxes.append((x0, y0, w, h))
        if len(boxes) == QUERY_DETECTIONS:
            break
    return boxes


def scaled(rect, factor: float):
    """Rect::scaled (grow or shrink around the centre)."""
    x, y, w, h = rect
    cx, cy = x + w / 2, y + h / 2
    return (cx - w * factor / 2, cy - h * factor / 2, w * factor, h * factor)


class Reader:
    """onnxruntime CalibrationDataReader over a list of input tensors (batch of one)."""

    def __init__(self, name: str, tensors):
        self.name, self.tensors, self.i = name, tensors, 0

    def get_next(self):
        if self.i >= len(self.tensors):
            return None
        t = self.tensors[self.i]
        self.i += 1
        return {self.name: t[None]}

    def rewind(self):
        self.i = 0


# ── quantisation ─────────────────────────────────────────────────────────────────────────
def float_tail(model_path: Path, stop_ops: set[str]) -> list[str]:
    """Nodes between the last `stop_ops` nodes and the graph outputs: kept float."""
    import onnx

    g = onnx.load(str(model_path)).graph
    producer = {o: n for n in g.node for o in n.output}
    tail, todo = [], [o.name for o in g.output]
    seen = set()
    while todo:
        t = todo.pop()
        n = producer.get(t)
        if n is None or n.name in seen or n.op_type in stop_ops:
            continue
        seen.add(n.name)
        tail.append(n.name)
        todo.extend(n.input)
    return tail


def quantize(src: Path, dst: Path, reader: Reader, keep_float_from: set[str], tmpdir: Path,
             meta: dict) -> None:
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    base = src
    if opset < 13:  # per-channel QDQ (axis on QuantizeLinear) needs opset 13
        from onnx import version_converter

        base = tmpdir / (src.stem + ".opset13.onnx")
        onnx.save(version_converter.convert_version(model, 13), str(base))
    pre = tmpdir / (src.stem + ".pre.onnx")
    quant_pre_process(str(base), str(pre), skip_symbolic_shape=False)
    exclude = float_tail(pre, keep_float_from)
    log(f"{src.name}: kept float: {len(exclude)} tail nodes ({', '.join(sorted({n.split('/')[-1] for n in exclude})[:8])}…)")
    out = tmpdir / dst.name
    quantize_static(
        str(pre), str(out), reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=exclude,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                       # bounded memory: ranges merged every 16 inputs
                       "CalibMaxIntermediateOutputs": 16},
    )
    q = onnx.load(str(out))
    onnx.checker.check_model(q)
    del q.metadata_props[:]
    for k, v in meta.items():
        p = q.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(q, str(out))
    shutil.move(str(out), str(dst))


def is_valid(dst: Path, meta: dict, sums: Path) -> bool:
    if not dst.is_file():
        return False
    import onnx

    try:
        m = onnx.load(str(dst))
        onnx.checker.check_model(m)
    except Exception as e:  # noqa: BLE001 — any failure means: make it again
        log(f"{dst.name}: unreadable ({e}), making it again")
        return False
    props = {p.key: p.value for p in m.metadata_props}
    if any(props.get(k) != v for k, v in meta.items()):
        log(f"{dst.name}: made from another source or recipe, making it again")
        return False
    if listed_sha(sums, dst.name) != sha256(dst):
        log(f"{dst.name}: does not match its line in {sums.name}, making it again")
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--data-dir", default=None,
                    help="folder with footage/ and grocery/ (default: data/, else ../shared/data)")
    ap.add_argument("--force", action="store_true", help="make the models even if valid")
    args = ap.parse_args()

    ensure_deps()
    import numpy as np
    import onnxruntime as ort

    models = Path(args.models_dir)
    sums = models / "SHA256SUMS"
    data = Path(args.data_dir) if args.data_dir else ROOT / "data"
    if not (data / "footage").is_dir():
        data = ROOT.parent / "shared" / "data"
    jobs = []
    for name, spec in (("yolox_nano", DETECTOR), ("efficientnet_lite0", EMBEDDER)):
        src, dst = models / f"{name}.onnx", models / f"{name}_int8.onnx"
        if not src.is_file():
            raise SystemExit(f"{src} missing: run scripts/setup.sh first")
        want = listed_sha(sums, src.name)
        got = sha256(src)
        if want and want != got:
            raise SystemExit(f"{src} does not match {sums}")
        meta = {"shopcue.source": src.name, "shopcue.source_sha256": got,
                "shopcue.recipe": RECIPE, "shopcue.onnxruntime": ort.__version__}
        if not args.force and is_valid(dst, meta, sums):
            log(f"{dst.name}: up to date")
            continue
        jobs.append((name, src, dst, meta))
    if not jobs:
        return 0

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="shopcue-quantize-") as tmp:
        tmpdir = Path(tmp)
        frames = []
        for f in FOOTAGE:
            frames += decode_frames(data / "footage" / f, tmpdir)
        iconic = sorted((data / "grocery" / "iconic-images-and-descriptions").rglob("*.jpg"))
        if not iconic:
            raise SystemExit(f"no iconic images under {data / 'grocery'}")
        det_inputs = [fill_input(DETECTOR, fr, (0, 0, fr.shape[1], fr.shape[0])) for fr in frames]
        for name, src, dst, meta in jobs:
            if name == "yolox_nano":
                reader = Reader("images", det_inputs)
                keep = {"Conv"}
            else:
                # Regions the catalog build and the query analyser embed.
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = os.cpu_count() or 1
                det = ort.InferenceSession(str(models / "yolox_nano.onnx"), opts,
                                           providers=["CPUExecutionProvider"])
                regions = []
                for fr, t in zip(frames, det_inputs):
                    h, w = fr.shape[:2]
                    r = min(416 / w, 416 / h)
                    out = det.run(None, {"images": t[None]})[0]
                    rects = [scaled(b, BOX_MARGIN) for b in yolox_boxes(out, r, r, w, h)]
                    rects.append((0, 0, w, h))
                    regions += [(fr, rc) for rc in rects]
                log(f"embedder: {len(regions)} regions from {len(frames)} frames, "
                    f"{len(iconic)} iconic images, x{len(VIEWS)} views")
                for p in iconic:
                    im = load_image(p)
                    regions.append((im, (0, 0, im.shape[1], im.shape[0])))
                emb_inputs = [fill_input(EMBEDDER, im, scaled(rc, v))
                              for im, rc in regions for v in VIEWS]
                reader = Reader("input", emb_inputs)
                keep = {"Conv", "Clip"}
                meta = {**meta, "shopcue.calibration": f"{len(emb_inputs)} crops"}
            log(f"{name}: calibrating on {len(reader.tensors)} inputs, quantising")
            if name == "yolox_nano":
                meta = {**meta, "shopcue.calibration": f"{len(det_inputs)} frames"}
            quantize(src, dst, reader, keep, tmpdir, meta)
            digest = sha256(dst)
            write_sha(sums, dst.name, digest)
            log(f"{dst.name}: {dst.stat().st_size / 1e6:.1f} MB, sha256 {digest} "
                f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
