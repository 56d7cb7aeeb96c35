"""Benchmark the engine end to end on one clip: speed per stage, real-time factor, memory.

Prints a table and writes JSON. Runs on the CPU (any machine) and on a GPU box; quote absolute
times only from the GPU box, and ratios (end-to-end vs encode-only, long vs short) from one run.

    python benchmarks/render_bench.py --video clip.mp4 --audio speech.wav --seconds 10 60 \
        --json benchmarks/results/cpu.json

What it measures, side by side in one process:
- decode-only and encode-only rates of the clip (same preset and CRF as the render): the codec's
  ceiling, which end-to-end speed is compared against;
- a render per requested output length (the audio is tiled to that length, the video ping-pongs),
  first with face analysis (cold) then with the face track cached (warm, the "same avatar, new
  audio" case), with per-stage seconds, frames per second and real-time factor;
- peak RSS sampled during each render, to show memory flat in video length, and peak GPU memory.

Without real weights in ``--models-dir`` it writes a checkpoint by the conformance weight rule:
speed does not depend on the weight values, only the picture does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def codec_rates(video: Path, preset: str, crf: int, frames: int, workdir: Path) -> dict[str, float]:
    """Decode-only and encode-only frames per second over the first ``frames`` slots of the clip."""
    from lipsyncd.engine import media

    info = media.probe(video)
    n = min(frames, info.frame_count)
    start = time.perf_counter()
    decoded = list(media.read_frames(video, info, range(n)))
    decode_fps = n / (time.perf_counter() - start)
    start = time.perf_counter()
    with media.VideoWriter(workdir / "encode_only.mp4", info.width, info.height, info.fps, crf=crf,
                           preset=preset, color=info.color) as writer:
        for frame in decoded:
            writer.write(frame)
    encode_fps = n / (time.perf_counter() - start)
    return {"decode_fps": decode_fps, "encode_fps": encode_fps, "frames": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True, help="speech, tiled to each --seconds")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0])
    parser.add_argument("--models-dir", type=Path, help="with wav2lip_gan.pth; default: rule weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--codec-frames", type=int, default=250, help="frames for the codec-only rates")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(ROOT / "tests"))  # the test utilities: rule weights, wav writer, RSS probe
    from media_tools import PeakRss, write_wav
    from weights import write_checkpoint

    from lipsyncd.engine import LipSyncEngine, RenderOptions
    from lipsyncd.engine.audio import decode_audio

    work = Path(tempfile.mkdtemp(prefix="lipsyncd-bench-"))
    models_dir = args.models_dir
    if models_dir is None or not (models_dir / "wav2lip_gan.pth").exists():
        models_dir = work / "models"
        models_dir.mkdir()
        write_checkpoint(models_dir / "wav2lip_gan.pth")
    speech = decode_audio(args.audio)
    options = RenderOptions(batch_size=args.batch_size, preset=args.preset, crf=args.crf)
    engine = LipSyncEngine(models_dir, device=args.device, cache_dir=work / "cache")
    cuda = engine.device.type == "cuda"
    report: dict[str, object] = {
        "video": str(args.video), "device": str(engine.device),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "options": options.as_dict(),
        "codec": codec_rates(args.video, args.preset, args.crf, args.codec_frames, work),
        "renders": [],
    }
    engine.check_ready(options)
    for seconds in args.seconds:
        audio = engine.load_audio(write_wav(work / f"speech_{seconds:g}s.wav", np.resize(speech, int(seconds * 16000))))
        for label in ("cold", "warm"):  # warm: the face track comes from the cache
            for old in (work / "cache" / "tracks").glob("*") if label == "cold" else ():
                old.unlink()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with PeakRss() as rss:
                start = time.perf_counter()
                result = engine.render(audio, args.video, work / f"out_{seconds:g}s_{label}.mp4", options)
                wall = time.perf_counter() - start
            report["renders"].append({
                "seconds": seconds, "track": label, "frames": result.frames, "wall_s": wall,
                "fps": result.frames / wall, "realtime_factor": result.duration_s / wall,
                "stage_s": result.stage_seconds, "peak_rss_mb": rss.peak,
                "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            })
    codec = report["codec"]
    print(f"device {report['device']} {report['gpu'] or ''}  cores {report['cores']}")
    print(f"codec only: decode {codec['decode_fps']:.1f} fps, encode {codec['encode_fps']:.1f} fps "
          f"({args.preset}, crf {args.crf})")
    print(f"{'audio s':>8} {'track':>5} {'frames':>7} {'wall s':>8} {'fps':>7} {'x realtime':>10} "
          f"{'vs encode':>9} {'RSS MB':>8} {'GPU MB':>8}  stages (s)")
    for r in report["renders"]:
        stages = " ".join(f"{k}={v:.1f}" for k, v in r["stage_s"].items())
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        print(f"{r['seconds']:>8g} {r['track']:>5} {r['frames']:>7} {r['wall_s']:>8.2f} {r['fps']:>7.1f} "
              f"{r['realtime_factor']:>10.2f} {r['fps'] / codec['encode_fps']:>9.2f} {r['peak_rss_mb']:>8.0f} "
              f"{gpu:>8}  {stages}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
