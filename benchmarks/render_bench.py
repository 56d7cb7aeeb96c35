"""Benchmark the engine end to end on one clip: speed per stage and per CPU second, thread plans on
an idle and a loaded machine, the pipeline's overhead, fidelity outside the mouth, memory.

Prints a summary and writes JSON. Runs on the CPU (any machine) and on a GPU box; quote absolute
times only from the GPU box, and ratios (end-to-end vs encode-only) from one run. The public reference side by side:
``benchmarks/reference_bench.py``.

    python benchmarks/render_bench.py --video clip.mp4 --audio speech.wav --frames 100 \\
        --psnr-clips /path/to/clips/*.mp4 --json benchmarks/results/cpu.json

What it measures, in one process unless said otherwise (CPU seconds are the whole process's user +
system time over the step, ``resource.getrusage``, so threads and a busy neighbour are accounted
for fairly; wall seconds are given beside them):

- ``codec``: decode-only and encode-only rates of the clip in the render's own format (yuv420p,
  same preset, CRF, x264 threads and audio mux as a render): the ceiling an end-to-end render is compared against;
- ``network_levers``: the generator alone, frames per CPU second for each lever (tensor layout,
  batch size, TorchScript freezing), interleaved rounds; ``before`` is how the engine ran it
  until now (default layout, whole chunks), ``ours`` what it does now;
- ``renders``: a render of ``--frames`` output frames (the audio tiled, the video ping-ponging)
  per thread plan (``ours``: :class:`ThreadPlan`; ``torch-default``: every stage on every core
  and one network batch at a time, the old behaviour), each idle and ``loaded`` (a busy-looping process started here competes for
  one core), face track computed (``cold``) and cached (``warm``), with per-stage seconds;
- ``identity``: the same render with the network replaced by an identity function, in
  ``--identity-rounds`` interleaved rounds with an encode-only run of the very frames it writes
  (same schedule, writer settings and audio): each round's frame-rate ratio and their median are
  the pipeline's overhead (goal ≥ 0.8), with the identity render's per-stage seconds; the ratio
  of CPU seconds beside it (less disturbed by other work on a shared machine). A third run in
  each round, ``passthrough``, is the same render with no mouth work (every frame passes through
  as if it had no face: decode, the stages' threads and queues, encode; only the row plan's
  sampled masks are still drawn): it splits the overhead into the pipeline's own and the
  mouth's (mask, crop, paste).
  ``--only identity`` measures just the codec and this;
- ``paste`` (``--only paste``): the per-frame work around the network on real frames of the clip, on one
  thread as a paste worker runs it: milliseconds per frame to draw the mouth mask (a network
  worker's part), to paste the face (the network's own crop as its face), and the model crop;
- ``fidelity``: per ``--psnr-clips`` clip, PSNR outside the face crop of a render and of a plain
  re-encode of the source's own YUV at the same settings (goal: render ≥ re-encode − 0.5 dB);
- ``memory``: peak RSS of a render to ``--frames`` and to 3 × ``--frames`` of audio (ping-pong),
  each in a fresh process;
- ``models``: Wav2Lip and MuseTalk 1.5 side by side on the same clip and audio, ``--model-frames``
  output frames each (MuseTalk takes seconds per face on a CPU: keep it to a few there), face
  track cached, with per-stage seconds. MuseTalk's networks come from ``--models-dir`` when its
  seven files are there, else from the conformance rule (in memory). ``--models-only`` measures
  just this;

Without real weights in ``--models-dir`` it writes a checkpoint by the conformance weight rule:
speed does not depend on the weight values, only the picture does.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test utilities: rule weights, wav writer, RSS probe


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measured(into: dict) -> Iterator[dict]:
    """Wall and CPU seconds of the block, written into ``into``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield into
    into["wall_s"] = time.perf_counter() - wall
    into["cpu_s"] = cpu_seconds() - cpu


@contextmanager
def busy_neighbour(active: bool) -> Iterator[None]:
    """A process spinning on one core for the duration of the block (the loaded machine)."""
    if not active:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def codec_rates(video: Path, options, frames: int, threads: int, audio_path: Path, workdir: Path) -> dict[str, float]:
    """Decode-only and encode-only frames per second (and per CPU second) of the render's format,
    x264 with the render's thread count, over the frames a render of ``frames`` shows."""
    from lipsyncd.engine import media

    info = media.probe(video)
    schedule = media.frame_schedule(info.frame_count, frames, options.loop)
    with measured({}) as decode:
        decoded = list(media.read_i420(video, info, schedule))
    encode = encode_only(decoded, info, options, threads, audio_path, frames / info.fps, workdir / "encode_only.mp4")
    return {"frames": frames, "decode_fps": frames / decode["wall_s"], "encode_fps": encode["fps"],
            "encode_frames_per_cpu_s": frames / encode["cpu_s"]}


def encode_only(frames: list, info, options, threads: int, audio_path: Path, audio_s: float,
                out: Path) -> dict[str, float]:
    """x264 + the audio mux of already decoded frames, as a render writes them (same preset, CRF,
    threads, colour tags, audio trimmed to ``audio_s``): the ceiling a render is compared with."""
    from lipsyncd.engine import media

    with measured({}) as figures:
        with media.VideoWriter(out, info.width, info.height, info.fps, crf=options.crf, preset=options.preset,
                               color=info.color, audio_path=audio_path, audio_duration_s=audio_s,
                               threads=threads) as writer:
            for frame in frames:
                writer.write(frame)
    figures["fps"] = len(frames) / figures["wall_s"]
    return figures


def identity_rounds(engine, audio, video: Path, options, rounds: int, work: Path) -> dict:
    """The pipeline's overhead: a render with the network replaced by an identity function over the
    encode-only rate of the very frames it writes, in ``rounds`` interleaved rounds (the order of
    encode-only, identity and passthrough turns each round) so that a change in the machine's load
    hits every side of a round. All write the same schedule with the same writer settings and
    audio; the face track is cached (a warm-up render computes it), so the identity render is
    decode → crop → paste → encode, and the passthrough render decode → encode through the same stages."""
    import statistics

    from lipsyncd.engine import media

    render_once(engine, audio, video, work / "id.mp4", options, cached=True, identity=True)  # warm-up, track
    info = media.probe(video)
    total = audio.frame_count(info.fps)
    frames = list(media.read_i420(video, info, media.frame_schedule(info.frame_count, total, options.loop)))
    runs = {
        "encode_only": lambda: encode_only(frames, info, options, engine.threads.encoder, Path(audio.path),
                                           audio.duration_s, work / "enc.mp4"),
        "identity": lambda: render_once(engine, audio, video, work / "id.mp4", options, cached=True, identity=True),
        "passthrough": lambda: render_once(engine, audio, video, work / "id.mp4", options, cached=True,
                                           identity=True, passthrough=True),
    }
    order = list(runs)
    results = []
    for round_ in range(rounds):
        turn = round_ % len(order)
        figures = {name: runs[name]() for name in order[turn:] + order[:turn]}
        encoded, identity, passthrough = figures["encode_only"], figures["identity"], figures["passthrough"]
        results.append({**figures, "ratio": identity["fps"] / encoded["fps"],
                      "cpu_ratio": encoded["cpu_s"] / identity["cpu_s"],
                      "passthrough_ratio": passthrough["fps"] / encoded["fps"],
                      "passthrough_cpu_ratio": encoded["cpu_s"] / passthrough["cpu_s"]})
        print(f"identity round {len(results)}: encode-only {encoded['fps']:.1f} fps, identity {identity['fps']:.1f} fps"
              f" (ratio {results[-1]['ratio']:.2f}), passthrough {passthrough['fps']:.1f} fps"
              f" (ratio {results[-1]['passthrough_ratio']:.2f})", flush=True)
    return {"frames": total, "rounds": results,
            "encode_fps": statistics.median(p["encode_only"]["fps"] for p in results),
            "fps": statistics.median(p["identity"]["fps"] for p in results),
            "vs_encode_only": statistics.median(p["ratio"] for p in results),
            "cpu_vs_encode_only": statistics.median(p["cpu_ratio"] for p in results),
            "passthrough_vs_encode_only": statistics.median(p["passthrough_ratio"] for p in results),
            "passthrough_cpu_vs_encode_only": statistics.median(p["passthrough_cpu_ratio"] for p in results)}


def paste_cost(engine, audio, video: Path, options, rounds: int, work: Path) -> dict:
    """Milliseconds per frame, on one thread, of the mouth mask, the paste and the model crop over
    the frames a render shows (face track cached by a first identity render), the median of
    ``rounds`` passes; the paste box's mean size beside them."""
    from lipsyncd.engine import media
    from lipsyncd.engine.blend import crop_rect, model_crop, mouth_mask, paste
    from lipsyncd.engine.faces.track import FaceTrack
    from lipsyncd.engine.threads import opencv_threads

    render_once(engine, audio, video, work / "paste.mp4", options, cached=True, identity=True)
    track = FaceTrack.load(engine._track_cache_path(video, options))
    assert track.turns is not None
    info = media.probe(video)
    schedule = media.frame_schedule(info.frame_count, audio.frame_count(info.fps), options.loop)
    shown = zip(media.read_i420(video, info, schedule), schedule, strict=True)
    frames, sources = map(list, zip(*[(frame, src) for frame, src in shown if track.has_face[src]], strict=True))
    matrix = media.VideoWriter(work / "unused.mp4", info.width, info.height, info.fps, color=info.color).matrix
    views = [frame.turned(int(track.turns[src])) for frame, src in zip(frames, sources, strict=True)]
    rects = [crop_rect(track.boxes[src], options.pads, view.width, view.height)
             for view, src in zip(views, sources, strict=True)]

    def crops() -> list[np.ndarray]:
        return [model_crop(view, rect, matrix) for view, rect in zip(views, rects, strict=True)]

    def masks() -> list:
        return [mouth_mask(track.points[src], rect, view.width, view.height)
                for view, rect, src in zip(views, rects, sources, strict=True)]

    faces, drawn = crops(), masks()

    def pastes() -> None:  # into the frames pasted before: the same work
        for view, face, mask, src in zip(views, faces, drawn, sources, strict=True):
            if mask is not None:
                paste(view, face, mask, float(track.fade[src]), matrix)

    timings: dict[str, list[float]] = {"mask_ms": [], "paste_ms": [], "model_crop_ms": []}
    with opencv_threads(1):
        for _ in range(rounds):
            for name, step in (("mask_ms", masks), ("paste_ms", pastes), ("model_crop_ms", crops)):
                start = time.perf_counter()
                step()
                timings[name].append(1000 * (time.perf_counter() - start) / len(frames))
    boxes = np.array([[m.box[2] - m.box[0], m.box[3] - m.box[1]] for m in drawn if m is not None])
    return {"frames": len(frames), "rounds": rounds, "box_mean_wh": boxes.mean(axis=0).tolist(),
            **{name: float(np.median(values)) for name, values in timings.items()}}


def network_levers(checkpoint: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Frames per CPU second of the generator alone, per lever, measured in interleaved rounds."""
    import torch

    from lipsyncd.engine.infer import CPU_BATCH, MouthGenerator
    from lipsyncd.engine.threads import ThreadPlan, usable_cores
    from lipsyncd.engine.wav2lip import load_wav2lip

    model = load_wav2lip(checkpoint)
    rng = np.random.default_rng(0)

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(rng.random((n, 1, 80, 16), np.float32)), torch.from_numpy(rng.random((n, 6, 96, 96), np.float32))

    def eager(layout: torch.memory_format, n: int):
        net = copy.deepcopy(model).to(memory_format=layout)
        mel, face = (t.contiguous(memory_format=layout) for t in inputs(n))
        return lambda: net(mel, face), n

    def frozen(n: int):
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        mel, face = (t.contiguous(memory_format=torch.channels_last) for t in inputs(n))
        with torch.inference_mode():
            traced = torch.jit.freeze(torch.jit.trace(net, (mel, face)))
        return lambda: traced(mel, face), n

    def ours():  # as the frame loop runs it: one batch per worker, one thread per worker
        generator = MouthGenerator(copy.deepcopy(model), torch.device("cpu"), CPU_BATCH)
        crops = rng.integers(0, 256, (CPU_BATCH, 96, 96, 3), np.uint8)
        mels = rng.random((CPU_BATCH, 80, 16), np.float32)
        plan = ThreadPlan.for_device("cpu")
        workers = ThreadPoolExecutor(plan.network_workers, initializer=torch.set_num_threads, initargs=(plan.network,))
        return lambda: list(workers.map(lambda _: generator(crops, mels), range(plan.network_workers))), \
            CPU_BATCH * plan.network_workers

    variants = {
        "before (default layout, batch 32)": eager(torch.contiguous_format, 32),
        f"default layout, batch {CPU_BATCH}": eager(torch.contiguous_format, CPU_BATCH),
        "channels-last, batch 32": eager(torch.channels_last, 32),
        f"channels-last + jit.freeze, batch {CPU_BATCH}": frozen(CPU_BATCH),
        f"ours (channels-last, batch {CPU_BATCH}, a batch per core on one thread each)": ours(),
    }
    totals = {name: [0.0, 0.0, 0] for name in variants}
    with torch.inference_mode():
        torch.set_num_threads(usable_cores())  # torch's default, for the variants run in this thread
        for fn, _ in variants.values():
            fn()  # warm-up: oneDNN builds its kernels
        for _ in range(rounds):
            for name, (fn, n) in variants.items():
                calls = max(1, 32 // n)  # about 32 frames per variant and round
                wall, cpu = time.perf_counter(), cpu_seconds()
                for _ in range(calls):
                    fn()
                totals[name][0] += cpu_seconds() - cpu
                totals[name][1] += time.perf_counter() - wall
                totals[name][2] += n * calls
    return {name: {"frames_per_cpu_s": n / cpu, "ms_cpu_per_frame": 1000 * cpu / n, "ms_wall_per_frame": 1000 * wall / n}
            for name, (cpu, wall, n) in totals.items()}


def render_once(engine, audio, video: Path, out: Path, options, *, cached: bool, identity: bool = False,
                passthrough: bool = False) -> dict:
    """One render, timed; ``identity``: the network returns its crops; ``passthrough``: no frame
    gets a mouth (no crop, network or paste; only the row plan's sampled masks are drawn), every
    other stage as usual."""
    from lipsyncd.engine.infer import MouthGenerator
    from lipsyncd.engine.pipeline import FrameLoop

    if not cached:
        for old in (engine.cache_dir / "tracks").glob("*"):
            old.unlink()
    original, mouths = MouthGenerator.__call__, FrameLoop._mouths
    if identity:
        MouthGenerator.__call__ = lambda self, crops, mels, rows=None, row=0: crops  # the network costs nothing
    if passthrough:
        FrameLoop._mouths = lambda self, group, sources, first: [None] * len(group)
    try:
        with measured({}) as figures:
            result = engine.render(audio, video, out, options)
    finally:
        MouthGenerator.__call__, FrameLoop._mouths = original, mouths
    figures.update(frames=result.frames, fps=result.frames / figures["wall_s"],
                   frames_per_cpu_s=result.frames / figures["cpu_s"], stage_s=result.stage_seconds,
                   frames_with_face=result.frames_with_face)
    return figures


def outside_mouth_psnr(engine, speech: np.ndarray, clip: Path, frames: int, options, work: Path) -> dict:
    """PSNR outside the face crop: our render vs the source, and a plain re-encode vs the source."""
    from media_tools import write_wav

    from lipsyncd.engine import media
    from lipsyncd.engine.blend import crop_rect
    from lipsyncd.engine.faces.track import FaceTrack

    info = media.probe(clip)
    n = min(frames, info.frame_count)
    audio = engine.load_audio(write_wav(work / "psnr.wav", np.resize(speech, int(n / info.fps * 16000) + 1)))
    n = audio.frame_count(info.fps)
    engine.render(audio, clip, work / "psnr_render.mp4", options)
    with media.VideoWriter(work / "psnr_direct.mp4", info.width, info.height, info.fps, crf=options.crf,
                           preset=options.preset, color=info.color) as writer:
        for frame in media.read_i420(clip, info, range(n)):
            writer.write(frame)
    track = FaceTrack.load(engine._track_cache_path(clip, options))
    sums = {"render": 0.0, "direct": 0.0}
    count = 0
    readers = [media.read_frames(p, media.probe(p), range(n))
               for p in (clip, work / "psnr_render.mp4", work / "psnr_direct.mp4")]
    for i, (source, rendered, direct) in enumerate(zip(*readers)):
        height, width = rendered.shape[:2]
        outside = np.ones((height, width), bool)
        if track.has_face[i]:
            x0, y0, x1, y1 = crop_rect(track.boxes[i], options.pads, width, height)
            outside[y0:y1, x0:x1] = False
        src = source[:height, :width][outside].astype(np.float64)
        sums["render"] += float(np.sum((rendered[outside] - src) ** 2))
        sums["direct"] += float(np.sum((direct[outside] - src) ** 2))
        count += src.size
    db = {k: 10 * np.log10(255.0**2 * count / v) if v else float("inf") for k, v in sums.items()}
    return {"clip": clip.name, "frames": n, "render_db": db["render"], "direct_reencode_db": db["direct"],
            "render_minus_direct_db": db["render"] - db["direct"]}


MEMORY_RUN = """
import sys, numpy as np
from pathlib import Path
sys.path.insert(0, {tests!r})
from media_tools import write_wav
from lipsyncd.engine import LipSyncEngine, RenderOptions
engine = LipSyncEngine(Path({models!r}), device={device!r}, cache_dir=Path({cache!r}))
speech = np.resize(np.load({speech!r}), int({seconds} * 16000))
audio = engine.load_audio(write_wav(Path({work!r}) / "mem.wav", speech))
engine.render(audio, Path({video!r}), Path({work!r}) / "mem.mp4", RenderOptions(loop="pingpong"))
# VmHWM, not ru_maxrss: Linux carries the parent's maxrss over fork + exec into the child's.
print(next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_rss_mb(models: Path, device: str, cache: Path, speech_npy: Path, seconds: float, video: Path, work: Path) -> float:
    """Peak RSS of one render in a fresh process (the face track cached, so only the frame loop counts)."""
    code = MEMORY_RUN.format(tests=str(ROOT / "tests"), models=str(models), device=device, cache=str(cache),
                             speech=str(speech_npy), seconds=seconds, video=str(video), work=str(work))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True, help="speech, tiled to the output length")
    parser.add_argument("--frames", type=int, default=100, help="output frames per render")
    parser.add_argument("--models-dir", type=Path, help="with wav2lip_gan.pth; default: rule weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128, help="network batch on a GPU (a CPU uses at most 8)")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--lever-rounds", type=int, default=3)
    parser.add_argument("--psnr-clips", type=Path, nargs="*", default=[])
    parser.add_argument("--psnr-frames", type=int, default=30)
    parser.add_argument("--no-loaded", action="store_true", help="skip the runs against a busy neighbour")
    parser.add_argument("--model-frames", type=int, default=3, help="output frames per model in `models` (0: skip)")
    parser.add_argument("--models-only", action="store_true", help="measure only Wav2Lip beside MuseTalk")
    parser.add_argument("--only", choices=["identity", "paste"],
                        help="measure only the codec and the identity-network ratio, or only the paste")
    parser.add_argument("--identity-rounds", type=int, default=5,
                        help="interleaved rounds of encode-only, identity and passthrough (--only paste: passes over the frames)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    report: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="lipsyncd-bench-") as folder:
            run(args, Path(folder), report)
    except BaseException:
        # A lent GPU box's minutes are few: what was measured before a step failed is still written.
        report["failed"] = traceback.format_exc()
        raise
    else:
        print_summary(report)
    finally:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
            print(f"wrote {args.json}")


def run(args: argparse.Namespace, work: Path, report: dict[str, object]) -> None:
    """Every measurement, in the order the module docstring lists them, into ``report`` as each
    is done; files go to ``work``."""
    import torch
    from media_tools import write_wav
    from weights import write_checkpoint

    from lipsyncd.engine import LipSyncEngine, RenderOptions, media
    from lipsyncd.engine.audio import decode_audio
    from lipsyncd.engine.infer import CPU_BATCH
    from lipsyncd.engine.threads import ThreadPlan, usable_cores

    models_dir = args.models_dir
    if models_dir is None or not (models_dir / "wav2lip_gan.pth").exists():
        models_dir = work / "models"
        models_dir.mkdir()
        write_checkpoint(models_dir / "wav2lip_gan.pth")
    speech = decode_audio(args.audio)
    np.save(work / "speech.npy", speech)
    options = RenderOptions(preset=args.preset, crf=args.crf, batch_size=args.batch_size)
    info = media.probe(args.video)
    seconds = args.frames / info.fps
    audio_path = write_wav(work / "speech.wav", np.resize(speech, int(seconds * 16000)))
    cores = usable_cores()
    device = LipSyncEngine(models_dir, device=args.device).device.type
    if args.models_only:
        report.update({"video": args.video.name, "size": [info.width, info.height], "device": device, "cores": cores,
                       "torch": torch.__version__, "options": options.as_dict()})
        report["models"] = model_comparison(models_dir, args.device, speech, args.video, args.model_frames, options,
                                            work)
        return
    plans = {"ours": ThreadPlan.for_device(device),
             "torch-default": ThreadPlan(faces=cores, network=cores, network_workers=1, blend=min(8, cores), encoder=0,
                                        opencv=0)}
    report.update({
        "video": args.video.name, "size": [info.width, info.height], "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "cores": cores,
        "torch": torch.__version__, "cpu_batch": CPU_BATCH, "options": options.as_dict(),
        "thread_plans": {name: plan.as_dict() for name, plan in plans.items()},
    })
    report["codec"] = codec_rates(args.video, options, args.frames, plans["ours"].encoder, audio_path, work)
    if args.only:
        engine = LipSyncEngine(models_dir, device=args.device, cache_dir=work / "cache", threads=plans["ours"])
        engine.check_ready(options)
        if args.only == "paste":
            report["paste"] = paste_cost(engine, engine.load_audio(audio_path), args.video, options,
                                         args.identity_rounds, work)
        else:
            report["identity"] = identity_rounds(engine, engine.load_audio(audio_path), args.video, options,
                                                 args.identity_rounds, work)
        return
    if device == "cpu":
        report["network_levers"] = network_levers(models_dir / "wav2lip_gan.pth", args.lever_rounds)

    engines = {name: LipSyncEngine(models_dir, device=args.device, cache_dir=work / "cache", threads=plan)
               for name, plan in plans.items()}
    audio = engines["ours"].load_audio(audio_path)
    for engine in engines.values():  # warm-up: kernels (OpenVINO: converted networks) for the shapes renders use
        engine.check_ready(options)
        render_once(engine, audio, args.video, work / "out.mp4", options, cached=False)
    renders: list[dict] = []
    report["renders"] = renders
    for loaded in (False, True)[: 1 if args.no_loaded else 2]:
        with busy_neighbour(loaded):
            for track in ("cold", "warm"):
                for name, engine in engines.items():  # interleaved, so drift in the machine's load hits both
                    figures = render_once(engine, audio, args.video, work / "out.mp4", options, cached=track == "warm")
                    renders.append({"plan": name, "loaded": loaded, "track": track, **figures})
                    print(f"render {name} loaded={loaded} {track}: {figures['frames_per_cpu_s']:.3f} frames/CPU s",
                          flush=True)
    report["identity"] = identity_rounds(engines["ours"], audio, args.video, options, args.identity_rounds, work)
    report["memory"] = {
        f"{n} frames": peak_rss_mb(models_dir, args.device, work / "cache", work / "speech.npy", n / info.fps,
                                   args.video, work)
        for n in (args.frames, 3 * args.frames)}
    report["fidelity"] = [outside_mouth_psnr(engines["ours"], speech, clip, args.psnr_frames, options, work)
                          for clip in args.psnr_clips]
    if args.model_frames:
        report["models"] = model_comparison(models_dir, args.device, speech, args.video, args.model_frames, options,
                                            work)


def model_comparison(models_dir: Path, device: str, speech: np.ndarray, video: Path, frames: int, options,
                     work: Path) -> dict[str, dict]:
    """Each model's render of ``frames`` output frames of ``video`` (track cached first)."""
    import dataclasses

    from media_tools import write_wav

    from lipsyncd.engine import LipSyncEngine, media
    from lipsyncd.engine.audio import MIN_DURATION_S
    from lipsyncd.engine.musetalk.layout import missing_files

    musetalk = None
    weights = "installed"
    if missing_files(models_dir):
        from musetalk_weights import rule_networks

        musetalk, weights = rule_networks(), "conformance rule (speed does not depend on the values)"
    engine = LipSyncEngine(models_dir, device=device, cache_dir=work / "cache", musetalk=musetalk)
    info = media.probe(video)
    seconds = max(frames / info.fps, MIN_DURATION_S)  # the engine refuses shorter speech
    audio_path = write_wav(work / "model-speech.wav", np.resize(speech, int(seconds * 16000)))
    figures: dict[str, dict] = {}
    for model in ("wav2lip", "musetalk"):
        chosen = dataclasses.replace(options, model=model)
        with measured({}) as ready:
            engine.check_ready(chosen)
            audio = engine.load_audio(audio_path, chosen)
        engine.render(audio, video, work / "warm.mp4", dataclasses.replace(chosen, model="wav2lip"))  # track cached
        figures[model] = {"load_s": ready["wall_s"], "weights": weights if model == "musetalk" else "rule or installed",
                          **render_once(engine, audio, video, work / f"{model}.mp4", chosen, cached=True)}
        print(f"model {model}: {figures[model]['frames']} frames, {figures[model]['wall_s']:.1f} s wall, "
              f"{figures[model]['cpu_s']:.1f} CPU s", flush=True)
    figures["musetalk_vs_wav2lip_cpu_s_per_frame"] = (
        figures["musetalk"]["cpu_s"] / figures["musetalk"]["frames"]
        / (figures["wav2lip"]["cpu_s"] / figures["wav2lip"]["frames"]))
    return figures


def print_summary(report: dict) -> None:
    if "models" in report:
        for model, r in report["models"].items():
            if isinstance(r, dict):
                print(f"model {model:9s} {r['frames']} frames  {r['wall_s']:.1f} s wall  {r['cpu_s']:.1f} CPU s  "
                      f"{1000 * r['cpu_s'] / r['frames']:.0f} ms CPU per frame  (loading {r['load_s']:.1f} s)")
        if "renders" not in report:
            return
    codec = report["codec"]
    print(f"{report['video']} {report['size'][0]}×{report['size'][1]}  device {report['device']} "
          f"{report['gpu'] or ''}  cores {report['cores']}  torch {report['torch']}")
    print(f"codec only: decode {codec['decode_fps']:.1f} fps, encode {codec['encode_fps']:.1f} fps")
    if "paste" in report:
        paste = report["paste"]
        print(f"per frame, one thread, {paste['frames']} frames with a face (paste box "
              f"{paste['box_mean_wh'][0]:.0f}×{paste['box_mean_wh'][1]:.0f} px): mouth mask {paste['mask_ms']:.3f} ms, "
              f"paste {paste['paste_ms']:.3f} ms, model crop {paste['model_crop_ms']:.3f} ms")
        return
    if "renders" not in report:
        print_identity(report["identity"])
        return
    for name, lever in report.get("network_levers", {}).items():
        print(f"  network {name:48s} {lever['frames_per_cpu_s']:6.2f} frames/CPU s  "
              f"({lever['ms_cpu_per_frame']:.0f} ms CPU, {lever['ms_wall_per_frame']:.0f} ms wall per frame)")
    print(f"{'plan':>14} {'loaded':>6} {'track':>5} {'frames':>6} {'wall s':>7} {'CPU s':>7} {'fps':>6} "
          f"{'fr/CPU s':>8}  stages (s)")
    for r in report["renders"]:
        stages = " ".join(f"{k}={v:.1f}" for k, v in r["stage_s"].items())
        print(f"{r['plan']:>14} {str(r['loaded']):>6} {r['track']:>5} {r['frames']:>6} {r['wall_s']:>7.1f} "
              f"{r['cpu_s']:>7.1f} {r['fps']:>6.2f} {r['frames_per_cpu_s']:>8.3f}  {stages}")
    print_identity(report["identity"])
    print("peak RSS (ping-pong, fresh process): " + ", ".join(f"{k} {v:.0f} MB" for k, v in report["memory"].items()))
    for f in report["fidelity"]:
        print(f"PSNR outside the face crop {f['clip']}: render {f['render_db']:.2f} dB, plain re-encode "
              f"{f['direct_reencode_db']:.2f} dB ({f['render_minus_direct_db']:+.2f})")


def print_identity(identity: dict) -> None:
    ratios = ", ".join(f"{p['ratio']:.2f}" for p in identity["rounds"])
    print(f"identity network: median {identity['fps']:.1f} fps vs encode-only {identity['encode_fps']:.1f} fps: "
          f"{identity['vs_encode_only']:.2f} × encode-only (rounds {ratios}); per CPU second "
          f"{identity['cpu_vs_encode_only']:.2f} ×")
    if "passthrough_vs_encode_only" in identity:
        ratios = ", ".join(f"{p['passthrough_ratio']:.2f}" for p in identity["rounds"])
        print(f"passthrough (no mouth work): {identity['passthrough_vs_encode_only']:.2f} × encode-only "
              f"(rounds {ratios}); per CPU second {identity['passthrough_cpu_vs_encode_only']:.2f} ×")
    stages: dict[str, list[float]] = {}
    for round_ in identity["rounds"]:
        for stage, seconds in round_["identity"]["stage_s"].items():
            stages.setdefault(stage, []).append(seconds)
    print("  identity stages, median s: " + " ".join(f"{k}={np.median(v):.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
