"""Several slots on one host: worker processes with the fake engine (no GPU needed: CPU slots).

The runner runs in a thread against a real database; its workers are real processes running
``lipsyncd.daemon.worker`` with :class:`daemon_fakes.FakeEngine`, so a ``kill -9`` here is the
real thing. A GPU slot differs only by the ``CUDA_VISIBLE_DEVICES`` its worker is given, which
the fake engine stamps into its output.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_fakes import FRAMES, FakeEngine
from daemon_helpers import make_job, wait_for
from slot_helpers import (
    Service,
    outbox_files,
    queue_job,
    running,
    with_fakes_on_path,
    worker_pids,
)

from lipsyncd.daemon import config as config_module
from lipsyncd.daemon import runner as runner_module
from lipsyncd.daemon import slot_status
from lipsyncd.daemon.config import Config, ConfigError
from lipsyncd.daemon.executor import EngineSpec, ExecutorLost, VideoWork
from lipsyncd.daemon.local_executor import (
    InlineExecutor,
    LocalExecutor,
    Slot,
    plan_slots,
)
from lipsyncd.daemon.report import face_warning
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store

HERE = Path(__file__).parent


# -- the slot plan ---------------------------------------------------------------------------

@pytest.mark.parametrize(("gpus", "per_gpu", "device", "expected"), [
    ("all", 1, "auto", [Slot("gpu0", 0), Slot("gpu1", 1), Slot("gpu2", 2)]),
    ([0, 2], 1, "auto", [Slot("gpu0", 0), Slot("gpu2", 2)]),
    (2, 2, "cuda", [Slot("gpu0.0", 0), Slot("gpu0.1", 0), Slot("gpu1.0", 1), Slot("gpu1.1", 1)]),
    ([5], 1, "auto", [Slot("cpu0", None), Slot("cpu1", None)]),  # no such GPU: the CPU slots
    ("all", 1, "cpu", [Slot("cpu0", None), Slot("cpu1", None)]),
])
def test_slot_plan(gpus, per_gpu, device, expected):
    assert plan_slots(gpus, per_gpu, 2, device, gpu_count=lambda: 3) == expected


def test_a_cpu_only_host_asks_nobody_about_gpus_when_told_cpu():
    def no_gpu_query() -> int:
        raise AssertionError("the GPU count was asked for")

    assert plan_slots("all", 1, 1, "cpu", no_gpu_query) == [Slot("cpu0", None)]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("gpus", "some", "engine.gpus: must be all, a number of GPUs, or a list of GPU numbers such as [0, 2]"),
    ("gpus", [0, 0], "engine.gpus: must be all"),
    ("workers_per_gpu", 0, "engine.workers_per_gpu: must be a whole number from 1 to 16; got 0"),
    ("cpu_workers", 1.5, "engine.cpu_workers: must be a whole number from 1 to 256; got 1.5"),
    ("max_attempts", 0, "engine.max_attempts: must be a whole number from 1 to 100; got 0"),
])
def test_bad_slot_settings_are_refused_by_name(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_module.load(None, environ={f"LIPSYNCD_ENGINE_{key.upper()}": repr(value)})


# -- two CPU slots with worker processes -----------------------------------------------------

@pytest.fixture
def slots_cfg(cfg: Config, monkeypatch) -> Config:
    """Two CPU slots whose workers import the fake engine from this folder."""
    monkeypatch.setenv("PYTHONPATH", with_fakes_on_path())
    return dataclasses.replace(
        cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0),
        engine=dataclasses.replace(cfg.engine, device="cpu", cpu_workers=2, stuck_timeout=20.0, max_attempts=2))


@pytest.fixture
def sampled() -> Iterator[Callable[[Callable[[], int]], list[int]]]:
    """Sample a number every 50 ms in the background (how many videos render at once)."""
    stop, samples = threading.Event(), []

    def start(measure: Callable[[], int]) -> list[int]:
        def loop() -> None:
            while not stop.wait(0.05):
                samples.append(measure())

        threading.Thread(target=loop, daemon=True).start()
        return samples

    yield start
    stop.set()


def test_six_videos_render_on_both_slots_at_once_and_each_is_published_once(slots_cfg, store, sampled):
    videos = {f"v{n}.mp4": f"video {n}".encode() for n in range(6)}
    job_id = queue_job(slots_cfg, store, "six", videos)
    with Service(slots_cfg, frame_delay=0.08):
        concurrency = sampled(lambda: running(slots_cfg.folders.database))
        wait_for(lambda: len(slot_status.read(slots_cfg.folders.state)) == 2, "the slots to be shown")
        shown = slot_status.read(slots_cfg.folders.state)
        assert sorted(s["name"] for s in shown) == ["cpu0", "cpu1"]
        wait_for(lambda: store.job(job_id).state == "done", "the job to finish")
        assert len(worker_pids()) == 2
    assert max(concurrency) == 2
    assert outbox_files(slots_cfg, "six") == {name: b"LIPSYNCED RIFF speech + " + data for name, data in videos.items()}
    assert [t.attempt for t in store.tasks(job_id)] == [1] * 6
    assert list((slots_cfg.folders.state / "audio").iterdir()) == []  # the shared audio is released
    assert worker_pids() == []  # the runner's stop closed them


def test_kill_9_of_a_worker_mid_video_reruns_only_that_video(slots_cfg, store, caplog):
    videos = {f"v{n}.mp4": f"video {n}".encode() for n in range(4)}
    job_id = queue_job(slots_cfg, store, "four", videos)
    with Service(slots_cfg, frame_delay=0.15):
        wait_for(lambda: running(slots_cfg.folders.database) == 2, "both slots to render")
        victim = worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: store.job(job_id).state == "done", "the job to finish")
        assert victim not in worker_pids() and len(worker_pids()) == 2  # its slot got a new worker
    attempts = sorted(t.attempt for t in store.tasks(job_id))
    assert attempts == [1, 1, 1, 2]
    assert outbox_files(slots_cfg, "four") == {name: b"LIPSYNCED RIFF speech + " + data for name, data in videos.items()}
    assert "ended unexpectedly (killed by SIGKILL: out of memory, or stopped by hand); it runs again" in caplog.text


def test_a_stuck_worker_is_killed_its_video_retried_then_failed_with_a_reason(slots_cfg, store):
    slots_cfg = dataclasses.replace(slots_cfg, engine=dataclasses.replace(slots_cfg.engine, stuck_timeout=8.0))
    job_id = queue_job(slots_cfg, store, "stuck", {"good.mp4": b"fine", "hang.mp4": b"stuck here"})
    with Service(slots_cfg, frame_delay=0.05):
        wait_for(lambda: store.job(job_id).state == "done", "the job to be filed", timeout=60)
    tasks = {t.video: t for t in store.tasks(job_id)}
    assert tasks["good.mp4"].state == "done"
    assert (tasks["hang.mp4"].state, tasks["hang.mp4"].attempt) == ("failed", 2)
    assert tasks["hang.mp4"].error.startswith(
        "The video could not be rendered: its worker made no progress for 8 seconds and was stopped, 2 times in a row.")
    assert outbox_files(slots_cfg, "stuck") == {"good.mp4": b"LIPSYNCED RIFF speech + fine"}
    assert "made no progress for 8 seconds" in (slots_cfg.folders.error / "stuck" / "error.txt").read_text()


def test_cancel_stops_the_video_on_every_slot(slots_cfg, store):
    job_id = queue_job(slots_cfg, store, "long", {"a.mp4": b"first", "b.mp4": b"second", "c.mp4": b"third"})
    with Service(slots_cfg, frame_delay=1.0):
        wait_for(lambda: running(slots_cfg.folders.database) == 2, "both slots to render")
        pids = worker_pids()
        other = Store(slots_cfg.folders.database)
        other.request_cancel(job_id)
        other.close()
        began = time.monotonic()
        wait_for(lambda: store.job(job_id).state == "cancelled", "the cancel")
        assert time.monotonic() - began < 5  # each video had ~9 s to go
        assert sorted(worker_pids()) == sorted(pids)  # stopped cooperatively: no worker was killed
    assert [t.state for t in store.tasks(job_id)] == ["cancelled"] * 3
    assert not (slots_cfg.folders.outbox / "long").exists()
    assert {p.name for p in (slots_cfg.folders.error / "long").iterdir()} >= {"a.mp4", "b.mp4", "c.mp4", "error.txt"}


def test_each_gpu_slot_worker_sees_only_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", with_fakes_on_path())
    spec = EngineSpec("daemon_fakes:FakeEngine", {"stamp_env": "CUDA_VISIBLE_DEVICES", "frame_delay": 0.1})
    executor = LocalExecutor([Slot("gpu0", 0), Slot("gpu3", 3)], spec, tmp_path / "audio", stuck_timeout=30)
    try:
        audio = executor.share_audio(FakeEngine().load_audio(make_job(tmp_path, "j")/ "speech.wav"), tmp_path)
        works = [VideoWork(f"k{n}", 1, n, 1, tmp_path / "j" / "face.mp4", tmp_path / f"out{n}.mp4", {}, None, audio)
                 for n in range(2)]
        for work in works:
            executor.submit(work)
        assert executor.free_slots() == 0
        assert {s.name: s.video for s in executor.slots()} == {"gpu0": "face.mp4", "gpu3": "face.mp4"}
        ended: list[str] = []
        deadline = time.monotonic() + 30
        while len(ended) < 2 and time.monotonic() < deadline:
            ended += [r.kind for r in executor.poll(0.2) if r.kind != "progress"]
        assert ended == ["done", "done"]
    finally:
        executor.close()
    stamps = {(tmp_path / f"out{n}.mp4").read_bytes().split(b"\n")[0] for n in range(2)}
    assert stamps == {b"CUDA_VISIBLE_DEVICES=0", b"CUDA_VISIBLE_DEVICES=3"}


def test_work_queued_but_every_slot_idle_is_an_alert_in_the_log(cfg, store, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(runner_module, "IDLE_ALERT_S", 0.3)
    queue_job(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0)), store, "waits",
              {"face.mp4": b"face"})
    stop = threading.Event()
    runner = Runner(cfg, lambda: FakeEngine(models_dir=tmp_path / "no-models"), stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: "ALERT" in caplog.text, "the alert")
    finally:
        stop.set()
        thread.join(10)
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1  # once, not at every round
    assert alerts[0].startswith("ALERT: 1 job(s) queued but every slot has been idle for ")
    assert alerts[0].endswith("s: Waiting: put wav2lip_gan.pth in " f"{tmp_path / 'no-models'} or run lipsyncd models "
                              "fetch wav2lip_gan")


def test_a_paused_queue_is_no_alert(cfg, store, monkeypatch, caplog):
    monkeypatch.setattr(runner_module, "IDLE_ALERT_S", 0.2)
    queue_job(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0)), store, "held",
              {"face.mp4": b"face"})
    store.set_paused(True)
    stop = threading.Event()
    runner = Runner(cfg, FakeEngine, stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # five alert periods, all paused
    finally:
        stop.set()
        thread.join(10)
    assert "ALERT" not in caplog.text
    assert store.jobs_in("queued")


def test_status_lists_each_slot_busy_or_idle():
    slots = [{"name": "gpu0", "host": "render1", "job_id": 3, "video": "interview.mp4", "frames_done": 120,
              "frames_total": 300, "fps": 24.46},
             {"name": "gpu1", "host": "render1", "job_id": None, "video": None, "frames_done": None,
              "frames_total": None, "fps": None}]
    assert slot_status.format_slots(slots).splitlines() == [
        "slot gpu0 (render1): job 3 interview.mp4 120/300 frames, 24.5 fps",
        "slot gpu1 (render1): idle"]


def test_executor_settings_are_checked_at_start(monkeypatch):
    loaded = config_module.load(None, environ={"LIPSYNCD_EXECUTOR_KIND": "ray",
                                               "LIPSYNCD_EXECUTOR_PATH_MAP": "{/srv/lipsync: /mnt/lipsync}"})
    assert (loaded.executor.kind, loaded.executor.path_map) == ("ray", {"/srv/lipsync": "/mnt/lipsync"})
    with pytest.raises(ConfigError, match="executor.path_map: must map folders as the service sees them"):
        config_module.load(None, environ={"LIPSYNCD_EXECUTOR_PATH_MAP": "{srv: mnt}"})
    monkeypatch.setattr(config_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"executor.kind: ray needs Ray, which is not installed; install it with "
                                          r"pip install -e '\.\[ray\]'"):
        config_module.load(None, environ={"LIPSYNCD_EXECUTOR_KIND": "ray"})


def test_a_video_that_fails_in_a_worker_fails_alone_with_the_engines_words(slots_cfg, store):
    job_id = queue_job(slots_cfg, store, "mixed", {"good.mp4": b"fine", "nf.mp4": b"noface"})
    with Service(slots_cfg, frame_delay=0.05):
        wait_for(lambda: store.job(job_id).state == "done", "the job to be filed")
    assert [(t.video, t.state, t.error, t.attempt) for t in store.tasks(job_id)] == [
        ("good.mp4", "done", None, 1), ("nf.mp4", "failed", "No face was found in nf.mp4.", 1)]
    assert outbox_files(slots_cfg, "mixed") == {"good.mp4": b"LIPSYNCED RIFF speech + fine"}


def test_a_video_still_being_copied_sends_the_job_back_to_wait_and_stops_its_other_slot(slots_cfg, store):
    job_id = queue_job(slots_cfg, store, "copying", {"slow.mp4": b"long", "late.mp4": b"incomplete"})
    with Service(slots_cfg, frame_delay=0.5):
        wait_for(lambda: store.job(job_id).state == "queued" and store.job(job_id).attempt == 1,
                 "the job to go back to the queue")
        wait_for(lambda: not running(slots_cfg.folders.database) and not list(
            (Path(store.job(job_id).work_dir) / "attempts").glob("*/*.mp4")), "the other slot to stop")
        time.sleep(1.0)  # the folder did not change: the job is not tried again
        job = store.job(job_id)
    assert (job.state, job.attempt) == ("queued", 1)
    assert job.note.startswith("Waiting: The file 'late.mp4' looks incomplete (still being copied?): it ends "
                               "after 40 % of the length its header states.")
    assert [(t.video, t.state, t.error) for t in store.tasks(job_id)] == [
        ("late.mp4", "queued", None), ("slow.mp4", "queued", None)]
    assert not (Path(store.job(job_id).work_dir) / "output" / "slow.mp4").exists()


def test_a_video_with_few_faces_rendered_in_a_worker_is_done_with_the_face_warning(slots_cfg, store):
    job_id = queue_job(slots_cfg, store, "faces", {"a.mp4": b"fine", "b.mp4": b"fewfaces"})
    with Service(slots_cfg, frame_delay=0.05):
        wait_for(lambda: store.job(job_id).state == "done", "the job to be filed")
    assert [(t.video, t.state, t.error) for t in store.tasks(job_id)] == [
        ("a.mp4", "done", None), ("b.mp4", "done", face_warning(FRAMES, 1))]


def test_a_cluster_that_cannot_be_reached_keeps_the_job_queued_until_it_is_back(cfg, store, monkeypatch):
    class LostCluster(InlineExecutor):
        def submit(self, work: VideoWork) -> None:
            raise ExecutorLost("the Ray cluster at head:6379 cannot be reached (ConnectionError: refused)")

    cfg = dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0),
                              service=dataclasses.replace(cfg.service, model_retry_interval=0.2))
    job_id = queue_job(cfg, store, "later", {"a.mp4": b"a", "b.mp4": b"b"})
    monkeypatch.setattr(runner_module, "open_executor", lambda config, engine, spec: LostCluster(engine))
    runner = Runner(cfg, FakeEngine, threading.Event())
    assert runner.step(store)
    job = store.job(job_id)
    assert job.state == "queued"
    assert job.note == "Waiting: the Ray cluster at head:6379 cannot be reached (ConnectionError: refused)"
    assert [t.state for t in store.tasks(job_id)] == ["queued", "queued"]
    assert not runner.step(store)  # waits model_retry_interval before trying again
    monkeypatch.undo()
    time.sleep(0.3)
    assert runner.step(store)
    assert (store.job(job_id).state, store.job(job_id).note) == ("done", None)
