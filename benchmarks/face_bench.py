"""Benchmark and audit the face pass on real clips: speed, coverage, fades and box steadiness.

For each clip it runs the engine's face pass alone (decode, detector, mesh, smoothing; no
Wav2Lip) and prints, per clip: frames, frames with a face, frames re-drawn at full weight
(fade 1), the face pass's wall and CPU seconds, and the box jitter (:func:`jitter`). Writes JSON.

    python benchmarks/face_bench.py /work/shared/media/frontal_*.mp4 --json benchmarks/results/faces.json

Torch runs with one intra-op thread (``--threads``), as the face models are small: more threads
only fight over a shared CPU. ``--rotate 90`` turns every frame (a phone clip played sideways).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

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


def run_clip(video: Path, rotate: int, smooth_frames: int) -> dict[str, object]:
    from lipsyncd.engine import media
    from lipsyncd.engine.faces.locate import FaceLocator
    from lipsyncd.engine.faces.track import analyse

    info = media.probe(video)
    turns = rotate // 90
    frames = [np.ascontiguousarray(np.rot90(f, turns)) for f in media.read_frames(video, info, range(info.frame_count))]
    locator = FaceLocator.load(torch.device("cpu"))
    wall, cpu = time.perf_counter(), cpu_seconds()
    track = analyse(frames, locator.for_video("largest"), smooth_frames=smooth_frames)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {
        "clip": video.name, "rotate": rotate, "frames": len(track), "size": [info.width, info.height],
        "with_face": int(track.has_face.sum()), "full_weight": int((track.fade >= 1).sum()),
        "missing": [int(i) for i in np.flatnonzero(~track.has_face)][:40],
        "partial": [int(i) for i in np.flatnonzero((track.fade < 1) & track.has_face)][:40],
        "jitter_px": round(jitter(track.boxes), 3), "shake_px": round(shake(track.boxes), 3),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "ms_per_frame": round(1000 * wall / len(track), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--rotate", type=int, default=0, choices=[0, 90, 180, 270])
    parser.add_argument("--smooth-frames", type=int, help="default: the render default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.smooth_frames is None:
        from lipsyncd.engine.options import RenderOptions
        args.smooth_frames = RenderOptions().smooth_frames
    rows = []
    for video in args.videos:
        row = run_clip(video, args.rotate, args.smooth_frames)
        rows.append(row)
        print(f"{row['clip'][:48]:48s} rot {row['rotate']:3d}  face {row['with_face']:4d}/{row['frames']:<4d} "
              f"full {row['full_weight']:4d}  jitter {row['jitter_px']:5.2f} shake {row['shake_px']:5.2f} px  "
              f"{row['wall_s']:6.2f} s wall {row['cpu_s']:6.2f} s cpu  {row['ms_per_frame']:5.1f} ms/frame", flush=True)
        if row["missing"] or row["partial"]:
            print(f"    missing {row['missing']}\n    partial {row['partial']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "smooth_frames": args.smooth_frames,
                                         "clips": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
