"""Copy-in-progress detection, junk, polling mode, and the rescan that finds what events missed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from daemon_helpers import make_job
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.stability import StabilityTracker
from lipsyncd.daemon.watcher import InboxWatcher, top_level_name


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stable_only_after_the_quiet_period_with_nothing_changing(tmp_path):
    clock = FakeClock()
    tracker = StabilityTracker(quiet_period=10, max_wait=3600, clock=clock)
    folder = make_job(tmp_path, "job")
    assert not tracker.check(folder)  # first sight
    clock.now += 9
    assert not tracker.check(folder)
    clock.now += 1
    assert tracker.check(folder)


def test_same_size_but_new_mtime_restarts_the_quiet_period(tmp_path):
    """Windows Explorer sets the final size first: only the mtime shows the copy going on."""
    clock = FakeClock()
    tracker = StabilityTracker(quiet_period=10, max_wait=3600, clock=clock)
    folder = make_job(tmp_path, "job")
    video = folder / "face.mp4"
    tracker.check(folder)
    clock.now += 9
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert not tracker.check(folder)
    clock.now += 9
    assert not tracker.check(folder)
    clock.now += 1
    assert tracker.check(folder)


def test_a_growing_part_file_keeps_the_folder_unstable(tmp_path):
    clock = FakeClock()
    tracker = StabilityTracker(quiet_period=5, max_wait=3600, clock=clock)
    folder = make_job(tmp_path, "job")
    part = folder / "more.mp4.part"
    for size in range(1, 4):
        part.write_bytes(b"x" * size)
        clock.now += 4
        assert not tracker.check(folder)
    clock.now += 5
    assert tracker.check(folder)  # a stale leftover .part does not block forever


def test_an_empty_folder_is_never_stable(tmp_path):
    clock = FakeClock()
    tracker = StabilityTracker(quiet_period=1, max_wait=3600, clock=clock)
    (tmp_path / "empty").mkdir()
    tracker.check(tmp_path / "empty")
    clock.now += 100
    assert not tracker.check(tmp_path / "empty")


def test_still_changing_past_max_wait_is_logged_once_and_still_waited_for(tmp_path, caplog):
    clock = FakeClock()
    tracker = StabilityTracker(quiet_period=5, max_wait=20, clock=clock)
    folder = make_job(tmp_path, "slow copy")
    for i in range(10):
        (folder / "face.mp4").write_bytes(b"x" * (i + 1))
        clock.now += 4
        assert not tracker.check(folder)
    assert [r.message for r in caplog.records].count(
        "slow copy: still changing after 24 s; waiting for the copy to finish") == 1


def run_intake_until_claimed(cfg, store, writer: threading.Thread, timeout: float = 10.0) -> float:
    """Run intake rounds in real time while ``writer`` copies; the time the job was claimed."""
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    writer.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if intake.tick(store):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("never claimed")


def slow_copy(folder: Path, chunks: int, windows_style: bool) -> tuple[threading.Thread, list[float]]:
    """Write a video in ``chunks`` pieces every 0.2 s; Windows-style sets the full size first.
    The list receives the moment of the last write."""
    finished: list[float] = []

    def copy() -> None:
        video = folder / "face.mp4"
        with video.open("wb") as fh:
            if windows_style:
                fh.truncate(chunks * 1000)
            for _ in range(chunks):
                time.sleep(0.2)
                fh.write(b"v" * 1000)
                fh.flush()
        finished.append(time.monotonic())

    return threading.Thread(target=copy), finished


@pytest.mark.parametrize("windows_style", [False, True], ids=["growing", "windows-preallocated"])
def test_a_folder_being_copied_is_not_picked_up_early(cfg, store, windows_style):
    folder = make_job(cfg.folders.inbox, "copying", {"speech.wav": b"audio"})
    writer, finished = slow_copy(folder, chunks=6, windows_style=windows_style)
    claimed_at = run_intake_until_claimed(cfg, store, writer)
    writer.join()
    assert claimed_at > finished[0]  # an order of events, not a speed: never before the copy ended
    job = store.job(1)
    assert (Path(job.work_dir) / "input" / "face.mp4").read_bytes() == b"v" * 6000
    assert job.state == "queued"


def test_junk_alone_does_not_make_a_job(cfg, store):
    make_job(cfg.folders.inbox, "just made", {".DS_Store": b"x", "Thumbs.db": b"y"})
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    for _ in range(3):
        assert intake.tick(store) == []
    assert store.jobs_in("intake", "queued", "failed") == []


def test_folders_present_at_start_are_found_by_the_rescan_without_events(cfg, store):
    make_job(cfg.folders.inbox, "dropped while stopped")
    clock = FakeClock()
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), clock=clock)
    intake.tick(store)
    clock.now += cfg.watch.quiet_period + 0.01
    assert intake.tick(store) == [1]


def test_periodic_rescan_catches_a_folder_whose_event_was_lost(cfg, store):
    clock = FakeClock()
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), clock=clock)
    intake.tick(store)  # the start-up rescan: empty inbox
    make_job(cfg.folders.inbox, "no event")  # the watcher is not started: no hint arrives
    clock.now += cfg.watch.rescan_interval / 2
    assert intake.tick(store) == []
    assert intake.tracker.tracked() == []
    clock.now += cfg.watch.rescan_interval
    intake.tick(store)
    clock.now += cfg.watch.quiet_period + 0.01
    assert intake.tick(store) == [1]


def test_loose_files_in_the_inbox_are_pointed_out_once(cfg, store, caplog):
    (cfg.folders.inbox / "clip.mp4").write_bytes(b"v")
    clock = FakeClock()
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), clock=clock)
    for _ in range(3):
        intake.tick(store)
        clock.now += cfg.watch.rescan_interval
    assert sum("'clip.mp4' is a file, not a job folder" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("mode", ["polling", "inotify"])
def test_the_watcher_hints_the_top_level_folder_that_changed(tmp_path, mode):
    watcher = InboxWatcher(tmp_path, mode, poll_interval=0.05)
    watcher.start()
    try:
        make_job(tmp_path, "new job")
        (tmp_path / ".processing").mkdir()
        names: set[str] = set()
        deadline = time.monotonic() + 5
        while "new job" not in names and time.monotonic() < deadline:
            time.sleep(0.05)
            names |= watcher.take()
        assert names == {"new job"}
    finally:
        watcher.stop()


def test_top_level_name_ignores_hidden_entries_and_the_inbox_itself(tmp_path):
    assert top_level_name(tmp_path, str(tmp_path / "job" / "sub" / "a.mp4")) == "job"
    assert top_level_name(tmp_path, str(tmp_path / ".processing" / "job-1")) is None
    assert top_level_name(tmp_path, str(tmp_path)) is None
    assert top_level_name(tmp_path, os.fsencode(tmp_path / "é")) == "é"


def test_a_folder_that_cannot_be_moved_stays_put_and_is_reported_once(cfg, store, caplog, monkeypatch):
    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    make_job(cfg.folders.inbox, "locked")
    monkeypatch.setattr(os, "rename", denied)
    clock = FakeClock()
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), clock=clock)
    for _ in range(4):
        assert intake.tick(store) == []
        clock.now += cfg.watch.rescan_interval + cfg.watch.quiet_period
    assert sum("locked: cannot take it from the inbox (Permission denied)" in r.message
               for r in caplog.records) == 1
    assert store.jobs_in("intake", "queued") == []
    assert list(cfg.folders.processing.iterdir()) == []
    monkeypatch.undo()
    intake.tick(store)
    clock.now += cfg.watch.quiet_period + 0.01
    assert intake.tick(store) == [1]
