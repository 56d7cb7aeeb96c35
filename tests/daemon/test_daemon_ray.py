"""The Ray executor against a Ray started here with two declared GPUs (none needed: Ray sets each
task's CUDA_VISIBLE_DEVICES all the same), with the fake engine in the Ray workers.

One Ray instance for the module (starting Ray takes seconds). CI installs the ``ray`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from daemon_helpers import make_job, wait_for, write_config
from lipsyncd.daemon import config as config_module
from lipsyncd.daemon import slot_status
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.store import Store
from slot_helpers import (
    Service,
    outbox_files,
    queue_job,
    running,
    with_fakes_on_path,
)

HARNESS = Path(__file__).with_name("daemon_harness.py")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray with 2 CPUs and 2 declared GPUs; its workers can import the fake engine."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = with_fakes_on_path()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture
def ray_cfg(cfg: Config, cluster: str) -> Config:
    return dataclasses.replace(
        cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0),
        engine=dataclasses.replace(cfg.engine, stuck_timeout=30.0, max_attempts=2),
        executor=dataclasses.replace(cfg.executor, kind="ray"))


def progress_files(cfg: Config) -> list[dict]:
    found = []
    for path in (cfg.folders.processing).glob("job-*/attempts/*/progress.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return found


def test_a_job_of_several_videos_runs_on_both_gpus_and_each_result_is_published_once(ray_cfg, store):
    videos = {f"v{n}.mp4": f"video {n}".encode() for n in range(4)}
    job_id = queue_job(ray_cfg, store, "four", videos)
    hosts: set[str] = set()
    with Service(ray_cfg, frame_delay=0.1):
        def finished() -> bool:
            hosts.update(s["host"] for s in slot_status.read(ray_cfg.folders.state) if s["video"])
            return store.job(job_id).state == "done"

        wait_for(finished, "the job to finish", timeout=90)
    assert outbox_files(ray_cfg, "four") == {name: b"LIPSYNCED RIFF speech + " + data for name, data in videos.items()}
    assert [t.attempt for t in store.tasks(job_id)] == [1] * 4
    # each task saw one GPU of its own (a slot shows its host once its task has reported)
    assert {h.rsplit(" gpu ", 1)[1] for h in hosts if " gpu " in h} == {"0", "1"}


def test_a_ray_worker_killed_mid_task_leads_to_exactly_one_rerun(ray_cfg, store):
    videos = {f"v{n}.mp4": f"video {n}".encode() for n in range(3)}
    job_id = queue_job(ray_cfg, store, "killed", videos)
    with Service(ray_cfg, frame_delay=0.3):
        def rendering_pid() -> int | None:
            busy = [p for p in progress_files(ray_cfg) if (p["report"]["progress"] or {}).get("frames_done", 0) > 1]
            return busy[0]["pid"] if busy else None

        wait_for(lambda: rendering_pid() is not None, "a task to render", timeout=60)
        os.kill(rendering_pid(), signal.SIGKILL)
        wait_for(lambda: store.job(job_id).state == "done", "the job to finish", timeout=90)
    assert sorted(t.attempt for t in store.tasks(job_id)) == [1, 1, 2]
    assert outbox_files(ray_cfg, "killed") == {name: b"LIPSYNCED RIFF speech + " + data for name, data in videos.items()}


def test_the_service_killed_while_ray_tasks_run_resubmits_and_publishes_each_result_once(tmp_path, cluster):
    config = write_config(tmp_path, executor={"kind": "ray", "ray_address": cluster},
                          engine={"models_dir": str(tmp_path / "models"), "cache_dir": None, "stuck_timeout": 60})
    cfg = config_module.load(config, environ={})
    prepare_folders(cfg)
    videos = {f"v{n}.mp4": f"video {n}".encode() for n in range(4)}
    make_job(cfg.folders.inbox, "restart", {"speech.wav": b"RIFF speech", **videos})

    def start(frame_delay: float) -> subprocess.Popen:
        with open(tmp_path / "service.log", "ab") as log:
            return subprocess.Popen([sys.executable, str(HARNESS), str(config), str(frame_delay)], stdout=log,
                                    stderr=log)

    first = start(0.5)
    try:
        wait_for(lambda: running(cfg.folders.database) == 2, "two Ray tasks to render", timeout=90)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    second = start(0.05)
    try:
        store = Store(cfg.folders.database)
        wait_for(lambda: store.job(1).state == "done", "the job to finish after the restart", timeout=90)
        tasks = store.tasks(1)
        store.close()
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        second.kill()
    assert outbox_files(cfg, "restart") == {name: b"LIPSYNCED RIFF speech + " + data for name, data in videos.items()}
    assert sorted(t.attempt for t in tasks) == [1, 1, 2, 2]  # the two interrupted videos ran again, once
    assert [p.name for p in cfg.folders.outbox.iterdir()] == ["restart"]
