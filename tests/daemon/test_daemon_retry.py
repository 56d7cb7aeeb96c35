"""``lipsyncd retry`` of a job whose filing to error/ hit a full disk: the real reason is kept,
the job's own options (the config's checkpoint) are used, and nothing ends in an internal error."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon import publish
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.operations import retry
from lipsyncd.daemon.store import StoreError
from lipsyncd.engine import RenderOptions
from test_daemon_pipeline import drain, tree


@pytest.fixture
def cfg(cfg: Config) -> Config:
    """No quiet period, and the config's checkpoint is ``wav2lip``: only that model is there."""
    defaults = RenderOptions.from_mapping({"checkpoint": "wav2lip"})
    (cfg.engine.models_dir / "wav2lip.pth").write_bytes(b"weights")
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0),
                               engine=dataclasses.replace(cfg.engine, defaults=defaults))


@pytest.fixture
def engine(cfg: Config) -> FakeEngine:
    return FakeEngine(models_dir=cfg.engine.models_dir)


@pytest.fixture
def full_disk(monkeypatch):
    """Every copy into outbox/ or error/ fails with ENOSPC (hard links refused: another disk)."""
    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(publish, "_copy_data", no_space)
    return monkeypatch


def test_retry_of_an_invalid_job_whose_error_filing_hit_a_full_disk(cfg, store, engine, full_disk):
    reason = "job.yaml: engine.loop: must be one of pingpong, loop; got 'sideways'"
    make_job(cfg.folders.inbox, "bad yaml", {"s.wav": b"a", "v.mp4": b"v", "job.yaml": "engine: {loop: sideways}\n"})
    drain(cfg, store, engine)
    job = store.job(1)
    assert job.state == "failed"
    assert job.error.startswith(f"Not enough free space in {cfg.folders.error}")
    assert job.error.endswith(f"The job had failed because: {reason}")  # the real reason is kept
    full_disk.undo()

    assert retry(store, cfg, "1") == ("Job 1 (bad yaml): it was never queued, so its folder was moved back to "
                                      "the inbox as 'bad yaml'; it runs as a new job.")
    assert tree(cfg.folders.inbox / "bad yaml") == {"s.wav", "v.mp4", "job.yaml"}
    assert not (cfg.folders.processing / "job-1").exists()
    drain(cfg, store, engine)
    assert store.job(2).state == "failed" and store.job(2).error == reason
    text = (cfg.folders.error / "bad yaml" / "error.txt").read_text()
    assert reason in text and "Internal error" not in text
    assert tree(cfg.folders.error / "bad yaml") >= {"s.wav", "v.mp4", "job.yaml", "error.txt"}


def test_retry_of_a_failed_job_whose_error_filing_hit_a_full_disk_keeps_its_options_and_reasons(
        cfg, store, engine, full_disk):
    make_job(cfg.folders.inbox, "quiet", {"s.wav": b"silence", "v.mp4": b"v"})
    drain(cfg, store, engine)
    job = store.job(1)
    audio_reason = "The audio s.wav cannot be used: the audio is silent"
    assert job.state == "failed" and job.error.endswith(f"The job had failed because: {audio_reason}")
    full_disk.undo()

    (cfg.folders.processing / "job-1" / "input" / "s.wav").write_bytes(b"speech now")  # fixed meanwhile
    assert retry(store, cfg, "quiet") == "Job 1 (quiet): queued again."
    job = store.job(1)
    assert job.state == "queued" and job.note.startswith("Retried (lipsyncd retry); before: Not enough free space")
    assert job.option_values["checkpoint"] == "wav2lip"
    runner = drain(cfg, store, engine)
    assert store.job(1).state == "done", store.job(1)
    assert not runner._blocked_until  # it never waited for wav2lip_gan
    assert tree(cfg.folders.outbox / "quiet") >= {"v.mp4", "report.txt"}


def test_a_job_without_audio_or_videos_is_never_requeued(cfg, store):
    job = store.begin_intake("half", cfg.folders.processing)
    store.filing_failed(job.id, "disk full", None, None)
    with pytest.raises(StoreError, match="was never queued"):
        store.requeue(job.id, "Retried")
    assert store.job(job.id).state == "failed"

