"""Whether a queued job can start is a question (Runner._not_ready) apart from what the runner does
about the answer (Runner._admit): a job that never can is filed as failed, one that must wait keeps
its reason as a note."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.states import JobState
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher


@pytest.fixture
def cfg(cfg: Config) -> Config:
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))


def queue_one(cfg: Config, store: Store, name: str = "talk") -> int:
    make_job(cfg.folders.inbox, name)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    (job_id,) = intake.tick(store) + intake.tick(store)
    return job_id


def test_the_check_only_answers_and_changes_nothing(cfg, store):
    job_id = queue_one(cfg, store)
    waiting = Runner(cfg, lambda: FakeEngine(models_dir=cfg.engine.models_dir), threading.Event())
    blocker = waiting._not_ready(store.job(job_id))
    assert blocker is not None and not blocker.for_good and "wav2lip_gan.pth" in blocker.reason
    assert store.job(job_id).note is None and waiting._blocked_until == {}
    assert Runner(cfg, FakeEngine, threading.Event())._not_ready(store.job(job_id)) is None


def test_options_this_version_does_not_know_fail_the_job_for_good(cfg, store):
    job_id = queue_one(cfg, store)
    store.db.execute("UPDATE jobs SET options = ? WHERE id = ?", ['{"no_such_option": 1}', job_id])
    runner = Runner(cfg, FakeEngine, threading.Event())
    blocker = runner._not_ready(store.job(job_id))
    assert blocker is not None and blocker.for_good and "not valid any more" in blocker.reason
    assert store.job(job_id).state == JobState.QUEUED  # the check alone files nothing
    assert runner.step(store) is False  # nothing ran: the job was filed instead
    job = store.job(job_id)
    assert job.state == JobState.FAILED and job.error == blocker.reason
    assert (cfg.folders.error / "talk" / "error.txt").is_file()


def test_a_job_that_must_wait_gets_its_reason_once_and_loses_it_when_it_can_start(cfg, store):
    job_id = queue_one(cfg, store)
    runner = Runner(cfg, lambda: FakeEngine(models_dir=cfg.engine.models_dir), threading.Event())
    assert runner._admit(store, store.job(job_id)) is False
    note = store.job(job_id).note
    assert note.startswith("Waiting: ") and job_id in runner._blocked_until
    (cfg.engine.models_dir / "wav2lip_gan.pth").write_bytes(b"weights")
    assert runner._admit(store, store.job(job_id)) is True
    assert store.job(job_id).note is None and job_id not in runner._blocked_until
