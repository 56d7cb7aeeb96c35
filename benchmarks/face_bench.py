"""Benchmark and audit the face pass on real clips: speed, coverage, fades and box steadiness.

For each clip it runs the engine's face pass alone (decode, detector, mesh, smoothing; no
Wav2Lip) and prints, per clip: frames, frames with a face, frames re-drawn at full weight
(fade 1), the face pass's wall and CPU seconds, and the box jitter (:func:`jitter`). Writes JSON.

    python benchmarks/face_bench.py /work/shared/media/frontal_*.mp4 --json benchmarks/results/faces.json

The models run with one thread (``--threads``), as the face models are small: more threads only
fight over a shared CPU. ``--rotate 90`` turns every frame (a phone clip played sideways).

``--runtime torch openvino`` measures both runtimes of the models side by side (:mod:`.faces.runtime`),
``--rounds`` times, interleaved (round by round, runtime by runtime), and reports each one's median
per clip, and whether the tracks agree: the same frames with a face, and how far apart the boxes
and points are. Loading is measured apart (for OpenVINO: converting without ``--cache-dir``, or
reading the converted models back from it, measured again after the first load), as the engine
loads the models once per process.

    nice python benchmarks/face_bench.py CLIPS --runtime torch openvino --rounds 5 \
        --json benchmarks/results/faces_openvino_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch


def jitter(boxes: np.ndarray) -> float:
    """Frame-to-frame wobble of the box centre in pixels: the standard deviation of the centre's
    per-frame step, the larger of x and y, over frames with a face on both sides. On a still camera
    a steady crop scores well under 1; real head motion adds its own share."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    steps = np.diff(centre, axis=0)
    steps = steps[~np.isnan(steps).any(axis=1)]
    return float(steps.std(axis=0).max()) if len(steps) > 1 else 0.0


def shake(boxes: np.ndarray) -> float:
    """The noise left in the box centre, apart from motion: the standard deviation of its second
    difference (its per-frame change of step) divided by √6, which for white noise added to a
    smooth path is the noise's own standard deviation. The larger of x and y."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    second = np.diff(centre, n=2, axis=0)
    second = second[~np.isnan(second).any(axis=1)]
    return float(second.std(axis=0).max() / np.sqrt(6)) if len(second) > 1 else 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else the machine type)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else platform.machine()


def load_locator(runtime: str, threads: int, cache_dir: Path | None) -> tuple[object, dict[str, float]]:
    """The engine's MediaPipe locator on ``runtime``, and what loading it cost."""
    from lipsyncd.engine.faces.detector import FaceDetector
    from lipsyncd.engine.faces.locate import FaceLocator
    from lipsyncd.engine.faces.mesh import FaceMesh
    from lipsyncd.engine.faces.runtime import FaceRuntime

    plan = FaceRuntime(runtime == "openvino", cache_dir, threads)
    wall, cpu = time.perf_counter(), cpu_seconds()
    locator = FaceLocator(FaceDetector("cpu", runtime=plan), FaceMesh("cpu", runtime=plan))
    return locator, {"load_wall_s": round(time.perf_counter() - wall, 2), "load_cpu_s": round(cpu_seconds() - cpu, 2)}


def decoded(video: Path, rotate: int) -> tuple[Any, list[np.ndarray]]:
    """``video``'s probe and every frame, turned by ``rotate`` degrees (decoded once a round, not timed)."""
    from lipsyncd.engine import media

    info = media.probe(video)
    turns = rotate // 90
    return info, [np.ascontiguousarray(np.rot90(f, turns)) for f in media.read_frames(video, info, range(info.frame_count))]


def run_clip(video: Path, info: Any, frames: list[np.ndarray], rotate: int, smooth_frames: int,
             locator: Any) -> tuple[dict[str, Any], Any]:
    """The face pass on ``video``'s decoded ``frames``: its figures, and the track."""
    from lipsyncd.engine.faces.track import analyse

    wall, cpu = time.perf_counter(), cpu_seconds()
    track = analyse(frames, locator.for_video("largest"), smooth_frames=smooth_frames)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    row = {
        "clip": video.name, "rotate": rotate, "frames": len(track), "size": [info.width, info.height],
        "with_face": int(track.has_face.sum()), "full_weight": int((track.fade >= 1).sum()),
        "missing": [int(i) for i in np.flatnonzero(~track.has_face)][:40],
        "partial": [int(i) for i in np.flatnonzero((track.fade < 1) & track.has_face)][:40],
        "jitter_px": round(jitter(track.boxes), 3), "shake_px": round(shake(track.boxes), 3),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "ms_per_frame": round(1000 * wall / len(track), 1),
    }
    return row, track


def agreement(one: Any, other: Any) -> dict[str, Any]:
    """How far two tracks of the same clip are apart: whether the same frames have a face, and
    the largest difference of a box coordinate and of a kept point there (pixels)."""
    same = bool(np.array_equal(one.has_face, other.has_face))
    both = one.has_face & other.has_face
    return {"same_frames_with_face": same,
            "box_max_px": round(float(np.abs(one.boxes[both] - other.boxes[both]).max(initial=0)), 5),
            "points_max_px": round(float(np.abs(one.points[both] - other.points[both]).max(initial=0)), 5)}


def print_row(row: dict[str, Any], runtime: str) -> None:
    print(f"{row['clip'][:44]:44s} {runtime:8s} rot {row['rotate']:3d}  face {row['with_face']:4d}/{row['frames']:<4d} "
          f"full {row['full_weight']:4d}  jitter {row['jitter_px']:5.2f} shake {row['shake_px']:5.2f} px  "
          f"{row['wall_s']:6.2f} s wall {row['cpu_s']:6.2f} s cpu  {row['ms_per_frame']:5.1f} ms/frame", flush=True)
    if row["missing"] or row["partial"]:
        print(f"    missing {row['missing']}\n    partial {row['partial']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--rotate", type=int, default=0, choices=[0, 90, 180, 270])
    parser.add_argument("--smooth-frames", type=int, help="default: the render default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", nargs="+", default=["torch"], choices=["torch", "openvino"],
                        help="what runs the face models; several: side by side, interleaved")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each clip on each runtime (medians reported)")
    parser.add_argument("--cache-dir", type=Path, help="keep OpenVINO's converted models here (default: convert)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.smooth_frames is None:
        from lipsyncd.engine.options import RenderOptions
        args.smooth_frames = RenderOptions().smooth_frames
    loads, locators = {}, {}
    for runtime in args.runtime:
        locators[runtime], loads[runtime] = load_locator(runtime, args.threads, args.cache_dir)
        if runtime == "openvino" and args.cache_dir is not None:  # the first load may have converted
            loads["openvino_from_cache"] = load_locator(runtime, args.threads, args.cache_dir)[1]
        print(f"{runtime}: models loaded in {loads[runtime]['load_cpu_s']:.2f} s cpu", flush=True)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    tracks: dict[tuple[str, str], Any] = {}
    for _ in range(args.rounds):
        for video in args.videos:
            info, frames = decoded(video, args.rotate)
            for runtime in args.runtime:
                row, tracks[video.name, runtime] = run_clip(video, info, frames, args.rotate, args.smooth_frames,
                                                            locators[runtime])
                runs.setdefault((video.name, runtime), []).append(row)
                print_row(row, runtime)
    clips = []
    for video in args.videos:
        clip: dict[str, Any] = {"clip": video.name}
        for runtime in args.runtime:
            rows = runs[video.name, runtime]
            wall = median(r["wall_s"] for r in rows)
            clip[runtime] = {**rows[0], "cpu_s": round(median(r["cpu_s"] for r in rows), 2), "wall_s": round(wall, 2),
                             "ms_per_frame": round(1000 * wall / rows[0]["frames"], 1),
                             "cpu_s_runs": [r["cpu_s"] for r in rows], "wall_s_runs": [r["wall_s"] for r in rows]}
        if {"torch", "openvino"} <= set(args.runtime):
            clip["cpu_ratio_torch_to_openvino"] = round(clip["torch"]["cpu_s"] / clip["openvino"]["cpu_s"], 2)
            clip["agreement"] = agreement(tracks[video.name, "torch"], tracks[video.name, "openvino"])
            print(f"{video.name[:44]:44s} median cpu s: torch {clip['torch']['cpu_s']:.2f}, openvino "
                  f"{clip['openvino']['cpu_s']:.2f} ({clip['cpu_ratio_torch_to_openvino']:.2f}x); {clip['agreement']}")
        clips.append(clip)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "smooth_frames": args.smooth_frames,
                                         "rounds": args.rounds, "cached_models": args.cache_dir is not None,
                                         "loads": loads, "cpu": cpu_name(),
                                         "clips": clips}, indent=1) + "\n")


if __name__ == "__main__":
    main()
