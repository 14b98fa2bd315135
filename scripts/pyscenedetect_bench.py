#!/usr/bin/env python3
"""PySceneDetect on the shot benchmark's clips, for `shopcue bench shots`.

Usage: pyscenedetect_bench.py [--repeat N] VIDEO...

For each video and each of AdaptiveDetector and ContentDetector (at their defaults, with
SceneManager's default automatic downscaling), prints the cut frames (the first frame of
every scene but the first) and the frames per second of the whole run, decoding included.
A decode-only pass (the same backend, the same downscaling, no detector) gives the share
of the time that is detection. With --repeat N each timing is the best of N runs (on a
busy machine the best run is the least disturbed). Prints one JSON document on stdout:

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
    """Seconds to open, read and downscale every frame as SceneManager does."""
    started = time.perf_counter()
    video = open_video(path)
    factor = compute_downscale_factor(video.frame_size[0])
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
    """Cut frames, frame count and seconds (opening the file included)."""
    started = time.perf_counter()
    video = open_video(path)
    manager = SceneManager()
    manager.add_detector(detector_class())
    manager.detect_scenes(video)
    seconds = time.perf_counter() - started
    scenes = manager.get_scene_list()
    cuts = [start.frame_num for start, _ in scenes[1:]]
    return cuts, video.frame_number, seconds


def main(paths, repeat):
    results = []
    for path in paths:
        decode_seconds = min(decode_only(path)[0] for _ in range(repeat))
        for detector_class in (AdaptiveDetector, ContentDetector):
            runs = [detect(path, detector_class) for _ in range(repeat)]
            cuts, frames, seconds = min(runs, key=lambda r: r[2])
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
    args = sys.argv[1:]
    repeat = 1
    if len(args) >= 2 and args[0] == "--repeat":
        repeat = max(1, int(args[1]))
        args = args[2:]
    if not args:
        sys.exit(__doc__)
    main(args, repeat)
