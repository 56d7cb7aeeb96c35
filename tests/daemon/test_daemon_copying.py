"""A folder still being copied is never taken: open writers, preallocated tails, the hand-off marker.

Each signal is tested alone (the others switched off), then together through the real intake.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_helpers import make_job, write_config
from lipsyncd.daemon import config as config_module
from lipsyncd.daemon.config import ConfigError
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.watcher import InboxWatcher
from lipsyncd.daemon.writers import OpenFiles, ProcScan
from test_daemon_watching import FakeClock
from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

NO_PROC = ProcScan(proc=Path("/nonexistent-proc"))
"""A /proc that shows nothing: tests of the inotify signal alone."""


def new_intake(cfg, mode: str, clock: FakeClock, proc: ProcScan = NO_PROC) -> Intake:
    watcher = InboxWatcher(cfg.folders.inbox, mode, poll_interval=0.05)
    watcher.start()
    intake = Intake(cfg, watcher, clock=clock)
    intake.readiness.proc = proc
    return intake


def ticks_claim(intake: Intake, store, clock: FakeClock, rounds: int = 5, step: float = 1.0) -> list[int]:
    """Run intake rounds, each ``step`` seconds later on the fake clock and 50 ms later in real
    time (inotify events arrive in their own thread); the job ids claimed."""
    claimed: list[int] = []
    for _ in range(rounds):
        time.sleep(0.05)
        claimed += intake.tick(store)
        clock.now += step
    return claimed


# --- the signals alone ----------------------------------------------------------------------------

def test_open_files_counts_writers_not_readers(tmp_path):
    files = OpenFiles()
    folder = tmp_path / "job"
    video, audio = str(folder / "face.mkv"), str(folder / "speech.wav")
    files.record(FileCreatedEvent(video))  # a new file: smbclient's put at 0 bytes, stalled
    files.record(FileOpenedEvent(video))
    files.record(FileOpenedEvent(audio))  # a reader (thumbnailer): opened, nothing written
    assert files.being_written(folder) == [video]
    files.record(FileClosedNoWriteEvent(audio))
    files.record(FileModifiedEvent(video))
    files.record(FileMovedEvent(video, str(folder / "renamed.mkv")))
    assert files.being_written(folder) == [str(folder / "renamed.mkv")]
    files.record(FileClosedEvent(str(folder / "renamed.mkv")))
    assert files.being_written(folder) == []
    files.record(FileOpenedEvent(video))
    files.record(FileModifiedEvent(video))
    files.forget(folder)
    assert files.being_written(folder) == []


def test_proc_scan_finds_a_process_holding_a_file_open_for_writing(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "read.wav").write_bytes(b"r")
    script = ("import sys; w = open(sys.argv[1] + '/face.mkv', 'wb'); r = open(sys.argv[1] + '/read.wav', 'rb');"
              "print('open', flush=True); sys.stdin.read()")
    writer = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "open\n"
        found = ProcScan().open_for_writing([folder])
        assert list(found) == [str((folder / "face.mkv").resolve())]  # the reader is not listed
        assert found[str((folder / "face.mkv").resolve())].endswith(f"(pid {writer.pid})")
    finally:
        writer.communicate("")
    assert ProcScan().open_for_writing([folder]) == {}


# --- through the intake ---------------------------------------------------------------------------

@pytest.mark.parametrize("signal", ["inotify", "proc"])
def test_a_writer_holding_a_file_open_past_the_quiet_period_is_not_taken(cfg, store, signal):
    """The Wi-Fi hiccup: half the video written, then nothing for far longer than the quiet period."""
    clock = FakeClock()
    intake = new_intake(cfg, "inotify" if signal == "inotify" else "polling", clock,
                        NO_PROC if signal == "inotify" else ProcScan())
    try:
        folder = make_job(cfg.folders.inbox, "stalled copy", {"speech.wav": b"audio"})
        writer = (folder / "face.mp4").open("wb")
        writer.write(b"v" * 5000)
        writer.flush()
        assert ticks_claim(intake, store, clock, rounds=10, step=cfg.watch.quiet_period) == []
        writer.write(b"v" * 5000)
        writer.close()
        assert ticks_claim(intake, store, clock, rounds=40, step=cfg.watch.quiet_period) == [1]
        assert (Path(store.job(1).work_dir) / "input" / "face.mp4").stat().st_size == 10000
    finally:
        intake.watcher.stop()


def test_a_file_created_but_not_yet_written_is_not_taken(cfg, store):
    """smbclient's put whose file stayed at 0 bytes for longer than the quiet period."""
    clock = FakeClock()
    intake = new_intake(cfg, "inotify", clock)
    try:
        folder = make_job(cfg.folders.inbox, "slow put", {"speech.wav": b"audio"})
        with (folder / "face.mp4").open("wb") as writer:
            assert ticks_claim(intake, store, clock, rounds=10, step=cfg.watch.quiet_period) == []
            writer.write(b"video")
        assert ticks_claim(intake, store, clock, rounds=40, step=cfg.watch.quiet_period) == [1]
    finally:
        intake.watcher.stop()


def preallocated(path: Path, written: int, size: int) -> None:
    """What Explorer leaves while a copy stalls: the final size set, only the start filled in."""
    with path.open("wb") as fh:
        fh.truncate(size)
        fh.write(b"\x1a\x45\xdf\xa3" + b"m" * (written - 4))


def test_a_preallocated_file_with_a_zero_tail_is_not_taken_until_filled(cfg, store):
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)  # a writer on another machine: no open-file evidence
    try:
        folder = make_job(cfg.folders.inbox, "explorer copy", {"speech.wav": b"audio"})
        preallocated(folder / "face.mkv", written=30_000, size=60_000)
        assert ticks_claim(intake, store, clock, rounds=10, step=cfg.watch.quiet_period) == []
        with (folder / "face.mkv").open("r+b") as fh:
            fh.seek(30_000)
            fh.write(b"m" * 30_000)
        assert ticks_claim(intake, store, clock, rounds=5, step=cfg.watch.quiet_period) == [1]
    finally:
        intake.watcher.stop()


def test_a_zero_tail_that_never_changes_is_taken_after_max_wait(cfg, store, caplog):
    """A lost close event or a genuine zero tail must not hold a folder forever: the engine checks
    the file again before it renders."""
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)
    try:
        folder = make_job(cfg.folders.inbox, "odd file", {"speech.wav": b"audio"})
        preallocated(folder / "face.mkv", written=10_000, size=20_000)
        assert ticks_claim(intake, store, clock, rounds=3, step=cfg.watch.quiet_period) == []
        clock.now += cfg.watch.max_wait
        assert intake.tick(store) == [1]
        assert any("face.mkv ends in zero bytes" in r.message and "taking it" in r.message for r in caplog.records)
    finally:
        intake.watcher.stop()


def test_a_wav_ending_in_digital_silence_is_taken(cfg, store):
    """PCM silence is zeros: a WAV is never judged by its tail."""
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)
    try:
        folder = make_job(cfg.folders.inbox, "quiet ending", {"face.mp4": b"video"})
        (folder / "speech.wav").write_bytes(b"RIFF" + b"s" * 1000 + bytes(16_000))
        assert ticks_claim(intake, store, clock, rounds=3, step=cfg.watch.quiet_period) == [1]
    finally:
        intake.watcher.stop()


# --- the explicit hand-off ------------------------------------------------------------------------

def marker_cfg(tmp_path: Path, marker: str):
    loaded = config_module.load(write_config(tmp_path, watch={"ready_marker": marker}), environ={})
    prepare_folders(loaded)
    return loaded


@pytest.mark.parametrize("marker_file", ["READY", "ready.txt"])
def test_the_ready_marker_releases_a_folder_at_once_and_travels_along(tmp_path, marker_file):
    from lipsyncd.daemon.store import Store

    cfg = marker_cfg(tmp_path, "READY")
    store = Store(cfg.folders.database)
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)
    try:
        folder = make_job(cfg.folders.inbox, "handed off")
        assert ticks_claim(intake, store, clock, rounds=5, step=cfg.watch.max_wait) == []  # no marker: never
        (folder / marker_file).write_bytes(b"")
        assert intake.tick(store) == [1]  # at once: no quiet period
        job = store.job(1)
        assert job.state == "queued"
        assert (Path(job.work_dir) / "input" / marker_file).is_file()
    finally:
        intake.watcher.stop()
        store.close()


def test_job_yaml_written_last_as_the_hand_off(tmp_path):
    from lipsyncd.daemon.store import Store

    cfg = marker_cfg(tmp_path, "job.yaml")
    store = Store(cfg.folders.database)
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)
    try:
        folder = make_job(cfg.folders.inbox, "yaml last")
        assert ticks_claim(intake, store, clock, rounds=3, step=cfg.watch.quiet_period) == []
        (folder / "job.yaml").write_text("priority: 3\n")
        assert intake.tick(store) == [1]
        assert store.job(1).priority == 3
    finally:
        intake.watcher.stop()
        store.close()


def test_the_marker_still_waits_for_an_open_writer(tmp_path):
    from lipsyncd.daemon.store import Store

    cfg = marker_cfg(tmp_path, "READY")
    store = Store(cfg.folders.database)
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock, ProcScan())
    try:
        folder = make_job(cfg.folders.inbox, "marker too early", {"speech.wav": b"audio", "READY": b""})
        with (folder / "face.mp4").open("wb") as writer:
            writer.write(b"half")
            writer.flush()
            assert ticks_claim(intake, store, clock, rounds=3) == []
        assert intake.tick(store) == [1]
    finally:
        intake.watcher.stop()
        store.close()


@pytest.mark.parametrize("value, message", [
    ("READY.mp4", "must not be a media file name"),
    ("a/READY", "must be a plain file name"),
    ("READY.part", "must not match an ignored file name pattern"),
    (5, "must be a plain file name"),
])
def test_a_bad_ready_marker_is_a_one_line_config_error(tmp_path, value, message):
    with pytest.raises(ConfigError, match=f"watch.ready_marker: {message}"):
        config_module.load(write_config(tmp_path, watch={"ready_marker": value}), environ={})
