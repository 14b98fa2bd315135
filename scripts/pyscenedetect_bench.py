#!/usr/bin/env python3
"""PySceneDetect on the shot benchmark's clips, for `shopcue bench shots`.

Usage: pyscenedetect_bench.py VIDEO...

For each video and each of AdaptiveDetector and ContentDetector (at their defaults, with
SceneManager's default automatic downscaling), prints the cut frames (the first frame of
every scene but the first) and the frames per second of the whole run, decoding included.
A decode-only pass (the same backend, the same downscaling, no detector) gives the share
of the time that is detection. Prints one JSON document on stdout:

  {"version": "0.7.2", "results": [{"clip": "a.mp4", "detector": "AdaptiveDetector",
    "cuts": [101, 201], "frames": 501, "seconds": 0.41, "fps": 1222.0,
    "decode_seconds": 0.30}, ...]}
"""
import json
import os
import sys
import time

import cv2
import scenedetect
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
from scenedetect.scene_manager import compute_downscale_factor


def decode_only(path):
    """Seconds to read and downscale every frame as SceneManager does."""
    video = open_video(path)
    factor = compute_downscale_factor(video.frame_size[0])
    started = time.perf_counter()
    frames = 0
    while True:
        frame = video.read()
        if frame is False:
            break
        if factor > 1.0:
            frame = cv2.resize(
                frame,
                (max(1, round(frame.shape[1] / factor)), max(1, round(frame.shape[0] / factor))),
                interpolation=cv2.INTER_LINEAR,
            )
        frames += 1
    return time.perf_counter() - started, frames


def detect(path, detector_class):
    video = open_video(path)
    manager = SceneManager()
    manager.add_detector(detector_class())
    started = time.perf_counter()
    manager.detect_scenes(video)
    seconds = time.perf_counter() - started
    scenes = manager.get_scene_list()
    cuts = [start.frame_num for start, _ in scenes[1:]]
    return cuts, video.frame_number, seconds


def main(paths):
    results = []
    for path in paths:
        decode_seconds, _ = decode_only(path)
        for detector_class in (AdaptiveDetector, ContentDetector):
            cuts, frames, seconds = detect(path, detector_class)
            results.append(
                {
                    "clip": os.path.basename(path),
                    "detector": detector_class.__name__,
                    "cuts": cuts,
                    "frames": frames,
                    "seconds": seconds,
                    "fps": frames / seconds if seconds > 0 else 0.0,
                    "decode_seconds": decode_seconds,
                }
            )
    json.dump({"version": scenedetect.__version__, "results": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
