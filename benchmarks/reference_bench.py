"""lipsyncd beside the public Wav2Lip reference, on the same clip, audio and checkpoint.

Each round runs, one after the other, each as a fresh process the way a user starts it:

- ``ours (new video)``: ``lipsyncd render`` with a cache that holds no face track for the video,
  so the face pass runs; it holds the networks converted for OpenVINO (``runtime: auto``: Wav2Lip
  and the face models), as a service's cache does after its first job (converting costs ~5 CPU s
  once per checkpoint);
- ``ours (repeat avatar)``: the same video again, its face track kept from the run before;
- ``ours, torch runtime (repeat avatar)``: the same with ``--runtime torch``: what OpenVINO adds;
- with ``--int8``, the same with ``--precision int8`` (opt-in, OpenVINO): ``ours int8 (new
  video)`` (face pass and the video's calibration in its CPU seconds), and ``ours int8 (repeat
  avatar)`` with the track and the video's int8 network cached;
- ``reference``: the reference's ``inference.py`` with a fixed face box (``--box``: its S3FD
  detector never runs, which favours it), the box being the median of our own track.

Rounds are interleaved so that a busy neighbour or a warm cache hits every side alike; a side's
CPU seconds are its process's and its children's user + system time (``RUSAGE_CHILDREN``: the
reference's ffmpeg mux included, as our encoder is in our process), its frames counted in its
output. Figures per round and the median ratio of frames per CPU second, ours over the
reference's, are printed and written as JSON.

Nothing is fetched: ``--reference`` is a checkout of Rudrabha/Wav2Lip whose Python imports work
with this interpreter, and ``ffmpeg`` must be on PATH (the reference shells out to it). Without
real weights in ``--models-dir`` a checkpoint is written by the conformance weight rule, in the
official layout: speed does not depend on the weight values.

    python benchmarks/reference_bench.py --reference ~/src/Wav2Lip \\
        --video ../shared/media/frontal_524sq_woman_glasses_talking_5s.mp4 \\
        --audio ../shared/media/speech_20s_16k_mono_latentsync_demo2.wav \\
        --frames 150 --rounds 3 --json benchmarks/results/reference_cpu.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test utilities: rule weights, wav writer


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str], cwd: Path | None = None) -> dict:
    """Run ``command`` to the end; its wall and CPU seconds (it and the children it waited for)."""
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    figures = {"wall_s": time.perf_counter() - wall, "cpu_s": children_cpu_seconds() - cpu}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"{command[0]} {command[1]} failed ({done.returncode}): " + " | ".join(tail))
    return figures


def output_frames(path: Path) -> int:
    from lipsyncd.engine import media

    return media.probe(path).frame_count


def ours(video: Path, audio: Path, models: Path, cache: Path, out: Path, *options: str) -> list[str]:
    """``lipsyncd render`` on the CPU with a cache folder, plus ``options`` (e.g. ``--precision int8``)."""
    return [str(Path(sys.executable).with_name("lipsyncd")), "render", "--audio", str(audio), "--video", str(video),
            "-o", str(out), "--models-dir", str(models), "--cache-dir", str(cache), "--device", "cpu", *options]


def reference(checkout: Path, video: Path, audio: Path, checkpoint: Path, box: tuple[int, ...], out: Path) -> list[str]:
    return [sys.executable, str(checkout / "inference.py"), "--checkpoint_path", str(checkpoint),
            "--face", str(video), "--audio", str(audio), "--outfile", str(out),
            "--box", *(str(v) for v in box)]


def median_box(cache: Path) -> tuple[int, int, int, int]:
    """The reference's ``--box`` (top, bottom, left, right): the median of our cached face track."""
    from lipsyncd.engine.faces.track import FaceTrack

    (path,) = (cache / "tracks").glob("*.npz")
    track = FaceTrack.load(path)
    assert track is not None
    x0, y0, x1, y1 = (int(v) for v in np.nanmedian(track.boxes[track.has_face], axis=0))
    return y0, y1, x0, x1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of Rudrabha/Wav2Lip")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True, help="speech, tiled or cut to --frames")
    parser.add_argument("--frames", type=int, default=150, help="output frames per render")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, help="with wav2lip_gan.pth; default: rule weights")
    parser.add_argument("--int8", action="store_true", help="also ours with --precision int8 (lipsyncd[int8])")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.video, args.reference = args.video.resolve(), args.reference.resolve()  # the reference runs in its checkout
    if not (args.reference / "inference.py").is_file():
        raise SystemExit(f"{args.reference} holds no inference.py: give a checkout of Rudrabha/Wav2Lip.")
    if shutil.which("ffmpeg") is None:
        raise SystemExit("The reference needs an ffmpeg binary on PATH (e.g. apt-get install ffmpeg).")

    from media_tools import write_wav
    from weights import write_checkpoint

    from lipsyncd.engine import media
    from lipsyncd.engine.audio import decode_audio

    with tempfile.TemporaryDirectory(prefix="refbench-") as tmp:
        work = Path(tmp)
        models = args.models_dir
        if models is None or not (models / "wav2lip_gan.pth").exists():
            models = work / "models"
            models.mkdir()
            write_checkpoint(models / "wav2lip_gan.pth")
        fps = media.probe(args.video).fps
        speech = decode_audio(args.audio)
        audio = write_wav(work / "speech.wav", np.resize(speech, int(args.frames / fps * 16000)))
        (args.reference / "temp").mkdir(exist_ok=True)  # the reference writes temp/result.avi there

        warm_cache = work / "warm"
        timed_run(ours(args.video, audio, models, warm_cache, work / "warm-up.mp4"))  # the track, the conversion
        box = median_box(warm_cache)
        int8 = ("--precision", "int8")
        if args.int8:
            timed_run(ours(args.video, audio, models, warm_cache, work / "warm-up.mp4", *int8))  # its int8 network

        def new_video_cache(name: str) -> Path:
            """A cache as a service's is after its first job: the converted networks (Wav2Lip's
            rows, the face models), no track and no int8 network of this video."""
            cache = work / name / "openvino"
            cache.mkdir(parents=True)
            for kept in (warm_cache / "openvino").glob("*"):
                if "-int8-" in kept.name:  # a video's own quantised network: not a new video's
                    continue
                (cache / kept.name).hardlink_to(kept)
            return cache.parent

        # Each side: the command of round r, writing its video to ``out``.
        sides = {
            "ours (new video)": lambda r, out: ours(args.video, audio, models, new_video_cache(f"new{r}"), out),
            "ours (repeat avatar)": lambda r, out: ours(args.video, audio, models, warm_cache, out),
            "ours, torch runtime (repeat avatar)": lambda r, out: ours(args.video, audio, models, warm_cache, out,
                                                                       "--runtime", "torch"),
            "reference": lambda r, out: reference(args.reference, args.video, audio, models / "wav2lip_gan.pth", box,
                                                  out),
        }
        if args.int8:
            sides["ours int8 (new video)"] = lambda r, out: ours(args.video, audio, models,
                                                                 new_video_cache(f"int8-new{r}"), out, *int8)
            sides["ours int8 (repeat avatar)"] = lambda r, out: ours(args.video, audio, models, warm_cache, out, *int8)
        rounds: list[dict[str, dict]] = []
        for r in range(args.rounds):
            figures = {}
            for n, (name, command) in enumerate(sides.items()):
                out = work / f"side{n}.mp4"
                run = timed_run(command(r, out), cwd=args.reference if name == "reference" else None)
                run["frames"] = output_frames(out)
                run["frames_per_cpu_s"] = run["frames"] / run["cpu_s"]
                figures[name] = run
            rounds.append(figures)
            line = ", ".join(f"{n} {f['frames_per_cpu_s']:.2f} frames/CPU s" for n, f in figures.items())
            print(f"round {r + 1}: {line}", flush=True)

    mine = [name for name in sides if name != "reference"]
    ratio = {name: statistics.median(f[name]["frames_per_cpu_s"] / f["reference"]["frames_per_cpu_s"] for f in rounds)
             for name in mine}
    wall = {name: statistics.median(f["reference"]["wall_s"] / f[name]["wall_s"] for f in rounds) for name in mine}
    report = {
        "video": args.video.name, "frames": args.frames, "rounds": rounds, "reference_box_tblr": list(box),
        "weights": "real" if args.models_dir else "conformance rule (speed does not depend on the values)",
        "ours_vs_reference_frames_per_cpu_s_median": ratio,
        "reference_wall_over_ours_median": wall,
        "notes": "reference: inference.py with --box (no face detection), batch 128, torch's default threads, "
                 "DIVX intermediate + ffmpeg's default x264 mux; ours: `lipsyncd render` defaults (x264 veryfast, "
                 "CRF 18, yuv420p end to end, runtime auto: OpenVINO fp32 when installed), face track by "
                 "MediaPipe when computed.",
    }
    for name in ratio:
        print(f"{name}: {ratio[name]:.2f}x the reference's frames per CPU second "
              f"(wall: {wall[name]:.2f}x as fast), median of {args.rounds} interleaved rounds")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
