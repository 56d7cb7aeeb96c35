"""The runner and the queue controls: pause/resume, live progress with stage, speed and ETA."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher


@pytest.fixture
def cfg(cfg: Config) -> Config:
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))


def take_in(cfg: Config, store: Store) -> None:
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    intake.tick(store)
    intake.tick(store)


def test_a_paused_queue_starts_nothing_but_still_files_cancellations(cfg, store, engine):
    make_job(cfg.folders.inbox, "wait")
    make_job(cfg.folders.inbox, "drop")
    take_in(cfg, store)
    store.set_paused(True)
    store.request_cancel(store.find_job("drop").id)
    runner = Runner(cfg, lambda: engine, threading.Event())
    while runner.step(store):
        pass
    take_in(cfg, store)  # the intake thread files cancelled jobs, paused or not
    assert engine.rendered == [] and store.find_job("wait").state == "queued"
    assert store.find_job("drop").state == "cancelled"
    store.set_paused(False)
    while runner.step(store):
        pass
    assert engine.rendered == ["face.mp4"] and store.find_job("wait").state == "done"


def test_progress_is_written_per_frame_with_stage_speed_and_eta(cfg, store):
    seen: list[tuple] = []

    def look(frame: int) -> None:
        if frame == 9:  # eight callbacks written so far, ~1 s of measurement (the meter wants 0.5 s)
            reader = Store(cfg.folders.database)  # its own connection: the render runs in a thread of its own
            (task,) = reader.tasks(1)
            reader.close()
            seen.append((task.stage, task.frames_done, task.frames_total, task.fps, task.eta_s, task.progress_at))

    engine = FakeEngine(frame_delay=0.12, on_frame=look)
    make_job(cfg.folders.inbox, "live")
    take_in(cfg, store)
    runner = Runner(cfg, lambda: engine, threading.Event())
    runner.step(store)
    ((stage, done, total, fps, eta, at),) = seen
    assert (stage, done, total) == ("render", 8, 10) and at is not None
    assert fps == pytest.approx(1 / 0.12, rel=0.35)
    assert eta == pytest.approx(2 / fps)


def test_every_video_is_previewed_before_the_first_render_and_filed_with_the_results(cfg, store):
    order: list[str] = []
    engine = FakeEngine()
    preview, render = engine.preview, engine.render
    engine.preview = lambda a, v, *args, **kw: order.append(f"preview {v.name}") or preview(a, v, *args, **kw)
    engine.render = lambda a, v, *args, **kw: order.append(f"render {v.name}") or render(a, v, *args, **kw)
    make_job(cfg.folders.inbox, "two", {"s.wav": b"speech", "a.mp4": b"1", "b.mp4": b"broken", "c.mp4": b"3"})
    take_in(cfg, store)
    Runner(cfg, lambda: engine, threading.Event()).step(store)
    assert order == ["preview a.mp4", "preview b.mp4", "preview c.mp4", "render a.mp4", "render b.mp4",
                     "render c.mp4"]
    out = cfg.folders.outbox / "two" / "preview"
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "c.jpg", "c.json"]  # b: no preview
    assert json.loads((out / "a.json").read_text())["summary"] == "a.mp4: a face in 10 of 10 frames"
    assert [t.attempt for t in store.tasks(1)] == [1, 1, 1]  # a preview is not an attempt
    assert "b.mp4: no preview: b.mp4 cannot be decoded." in (cfg.folders.outbox / "two" / "job.log").read_text()
