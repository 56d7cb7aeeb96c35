"""Aggregate throughput of one job of N videos versus the number of slots (worker processes).

Runs the daemon's real runner and executors with the real engine on the CPU (or GPU: pass
``--device cuda``): for each slot count, one job folder holding the same clip N times and one
short speech goes through intake and the runner; the job's wall time (claim to last video
published) gives videos per minute. Slot counts are interleaved over ``--rounds`` so that other
load on the machine spreads over all of them. Prints a table and writes JSON.

    python benchmarks/slots_bench.py --video clip.mp4 --audio speech.wav --videos 4 --slots 1 2 \
        --seconds 2 --rounds 2 --json benchmarks/results/slots_cpu.json

One slot is the default set-up (the engine inside the service, torch using every core); ``1w``
is one slot in a worker process instead (the control: same process layout as more slots); more
slots are worker processes, each with an equal share of the cores (CPU) or its own GPU
(``--device cuda``; several per GPU with ``--workers-per-gpu``). ``OMP_NUM_THREADS=1`` in the
environment gives every slot count one torch thread per slot: the pure effect of parallel slots,
without torch's multi-threading (which suffers badly on a CPU shared with other work). Each slot count gets a warm-up job of one video first (worker start
and model load happen once per service, not per job). Without real weights in ``--models-dir``
it writes a checkpoint by the conformance weight rule: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_service(root: Path, models_dir: Path, device: str, slots: int, workers_per_gpu: int) -> Path:
    settings = {
        "folders": {k: str(root / k) for k in ("inbox", "outbox", "error", "state")},
        "watch": {"mode": "polling", "poll_interval": 0.1, "quiet_period": 0},
        "engine": {"models_dir": str(models_dir), "cache_dir": None, "device": device,
                   "cpu_workers": slots, "gpus": slots if device == "cuda" else "all",
                   "workers_per_gpu": workers_per_gpu},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_job(config_path: Path, video: Path, audio: Path, videos: int, runner_box: dict, worker: bool) -> float:
    """Drop a job of ``videos`` copies of the clip, run it to the end; seconds from claim to done."""
    from lipsyncd.daemon import config as config_module
    from lipsyncd.daemon.intake import Intake
    from lipsyncd.daemon.runner import Runner
    from lipsyncd.daemon.service import default_engine_factory, prepare_folders
    from lipsyncd.daemon.store import Store
    from lipsyncd.daemon.watcher import InboxWatcher

    cfg = config_module.load(config_path, environ={})
    prepare_folders(cfg)
    folder = cfg.folders.inbox / f"job{time.monotonic_ns()}"
    folder.mkdir()
    shutil.copy(audio, folder / "speech.wav")
    first = folder / f"v0{video.suffix}"
    shutil.copy(video, first)
    for n in range(1, videos):
        os.link(first, folder / f"v{n}{video.suffix}")
    store = Store(cfg.folders.database)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    (job_id,) = intake.tick(store) + intake.tick(store)
    if "runner" not in runner_box:  # one runner (one set of workers) per slot count, as one service
        runner_box["runner"] = Runner(cfg, default_engine_factory(cfg), threading.Event())
        if worker:  # one slot, but in a worker process: what the runner does for two or more
            from lipsyncd.daemon.executor import EngineSpec
            from lipsyncd.daemon.executors import AUDIO_DIR
            from lipsyncd.daemon.local_executor import LocalExecutor, Slot

            e = cfg.engine
            spec = EngineSpec.from_settings(e.models_dir, e.device, e.cache_dir)
            runner_box["runner"]._executor = LocalExecutor([Slot("cpu0", None)], spec,
                                                           cfg.folders.state / AUDIO_DIR, e.stuck_timeout)
    runner = runner_box["runner"]
    began = time.perf_counter()
    assert runner.step(store), "the job did not start"
    seconds = time.perf_counter() - began
    job = store.job(job_id)
    tasks = store.tasks(job_id)
    store.close()
    if job.state != "done" or any(t.state != "done" for t in tasks):
        raise SystemExit(f"the job did not finish: {job.state} {job.error} {[t.error for t in tasks]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True, help="speech; cut to --seconds")
    parser.add_argument("--seconds", type=float, default=2.0, help="output length of each video")
    parser.add_argument("--videos", type=int, default=4, help="videos in the job")
    parser.add_argument("--slots", nargs="+", default=["1", "2"],
                        help="slot counts; 1w: one slot in a worker process instead of in-process")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every slot count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers-per-gpu", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, help="with wav2lip_gan.pth; default: rule weights")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))  # the test utilities: rule weights, wav writer
    from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
    from media_tools import write_wav
    from weights import write_checkpoint

    work = Path(tempfile.mkdtemp(prefix="lipsyncd-slots-bench-"))
    models_dir = args.models_dir
    if models_dir is None or not (models_dir / "wav2lip_gan.pth").exists():
        models_dir = work / "models"
        models_dir.mkdir()
        write_checkpoint(models_dir / "wav2lip_gan.pth")
    speech = write_wav(work / "speech.wav", decode_audio(args.audio)[: int(args.seconds * SAMPLE_RATE)])

    runners: dict[str, dict] = {n: {} for n in args.slots}
    configs = {n: write_service(work / f"slots{n}", models_dir, args.device, int(n.rstrip("w")), args.workers_per_gpu)
               for n in args.slots}
    for n in args.slots:
        warm = run_job(configs[n], args.video, speech, 1, runners[n], n.endswith("w"))
        print(f"slots {n}: warm-up job of 1 video {warm:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {n: [] for n in args.slots}
    for round_ in range(args.rounds):
        for n in args.slots:
            took = run_job(configs[n], args.video, speech, args.videos, runners[n], n.endswith("w"))
            seconds[n].append(took)
            print(f"round {round_ + 1}, slots {n}: {args.videos} videos in {took:.1f} s = "
                  f"{args.videos / took * 60:.2f} videos/min", flush=True)
    for box in runners.values():
        box["runner"].close()

    middle = {n: statistics.median(s) for n, s in seconds.items()}
    base = middle[args.slots[0]]
    results = [{"slots": n, "seconds": seconds[n], "median_seconds": middle[n],
                "videos_per_minute": args.videos / middle[n] * 60, "speedup_vs_first": base / middle[n],
                "in_worker_processes": n.endswith("w") or int(n) > 1}
               for n in args.slots]
    print(f"\n{'slots':>5} {'median s':>8} {'videos/min':>11} {'vs first':>9}")
    for r in results:
        print(f"{r['slots']:>5} {r['median_seconds']:>8.1f} {r['videos_per_minute']:>11.2f} {r['speedup_vs_first']:>9.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "video": args.video.name, "audio_seconds": args.seconds, "videos_per_job": args.videos,
            "device": args.device, "rounds": args.rounds, "slot_counts": args.slots,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(), "machine": platform.machine(),
            "results": results}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
