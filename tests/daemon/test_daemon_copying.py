"""A folder still being copied is never taken: open writers, preallocated tails, the hand-off marker.

Each signal is tested alone (the others switched off), then together through the real intake.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job, write_config
from lipsyncd.daemon import config as config_module
from lipsyncd.daemon.config import ConfigError
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.watcher import InboxWatcher
from lipsyncd.daemon.writers import OpenFiles, ProcScan
from lipsyncd.engine.audio import decode_audio
from lipsyncd.engine.media import probe, read_frames
from test_daemon_watching import FakeClock
from test_media import make_audio, make_video
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

def test_open_files_holds_writers_not_readers(tmp_path):
    files = OpenFiles()
    folder = tmp_path / "job"
    video, audio, moved_in = str(folder / "face.mkv"), str(folder / "speech.wav"), str(folder / "moved.mp4")
    files.record(FileCreatedEvent(video))  # a new file: smbclient's put at 0 bytes, stalled
    files.record(FileOpenedEvent(video))
    files.record(FileOpenedEvent(audio))  # a reader (thumbnailer): opened, nothing written
    files.record(FileCreatedEvent(moved_in))  # moved in from elsewhere: created, never opened
    assert files.being_written(folder) == [video]
    files.record(FileClosedNoWriteEvent(audio))
    files.record(FileModifiedEvent(video))
    files.record(FileMovedEvent(video, str(folder / "renamed.mkv")))
    assert files.being_written(folder) == [str(folder / "renamed.mkv")]
    files.record(FileClosedEvent(str(folder / "renamed.mkv")))
    assert files.being_written(folder) == []


def test_a_write_whose_open_was_missed_holds_until_its_close(tmp_path):
    """A file created in a brand-new folder before inotify watched that folder: only the writes
    are seen; the close-after-write that every write is followed by releases it."""
    files = OpenFiles()
    video = str(tmp_path / "job" / "face.mp4")
    files.record(FileModifiedEvent(video))
    assert files.being_written(tmp_path / "job") == [video]
    files.record(FileOpenedEvent(video))  # a reader comes and goes meanwhile
    files.record(FileClosedNoWriteEvent(video))
    assert files.being_written(tmp_path / "job") == [video]
    files.record(FileClosedEvent(video))
    assert files.being_written(tmp_path / "job") == []
    files.record(FileModifiedEvent(video))
    files.forget(tmp_path / "job")
    assert files.being_written(tmp_path / "job") == []


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
        time.sleep(0.2)  # an SMB client's next request: the watch on the new folder is in place
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
        time.sleep(0.2)
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


def test_a_wav_ending_in_digital_silence_and_mac_leftovers_are_taken(cfg, store):
    """PCM silence is zeros: a WAV is never judged by its tail; nor is junk such as a Mac's
    AppleDouble file, which is mostly zeros."""
    clock = FakeClock()
    intake = new_intake(cfg, "polling", clock)
    try:
        folder = make_job(cfg.folders.inbox, "quiet ending", {"face.mp4": b"video", "._face.mp4": bytes(4096)})
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
        folder = make_job(cfg.folders.inbox, "yaml last", {"speech.wav": b"a", "face.mp4": b"v", "job.yaml.txt": b""})
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


# --- an incomplete input that got through: never "done", retried once whole ------------------------

class ProbingEngine(FakeEngine):
    """The fake engine, but reading its inputs with the real decoders first, so their
    completeness checks run as in a real render."""

    def load_audio(self, path: Path, options=None) -> bytes:
        decode_audio(path)
        return super().load_audio(path)

    def render(self, audio, video, output, options, progress=None, should_stop=None, video_digest=None):
        info = probe(video)
        for _ in read_frames(video, info, range(info.frame_count)):
            pass
        return super().render(audio, video, output, options, progress, should_stop, video_digest)


def half(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def run_until(runner: Runner, store, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        runner.step(store)
        time.sleep(0.05)


@pytest.mark.parametrize("cut_input", ["face.mp4", "speech.wav"])
def test_a_truncated_input_never_yields_done_and_runs_once_complete(cfg, store, tmp_path, cut_input):
    whole = {"face.mp4": make_video(tmp_path / "face.mp4", 75, gop=6),
             "speech.wav": make_audio(tmp_path / "speech.wav", 3)}
    files = {name: (half(path) if name == cut_input else path.read_bytes()) for name, path in whole.items()}
    make_job(cfg.folders.inbox, "cut short", files)
    clock = FakeClock()
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), clock=clock)
    intake.tick(store)
    clock.now += cfg.watch.quiet_period + 0.01
    assert intake.tick(store) == [1]
    engine = ProbingEngine()
    runner = Runner(cfg, lambda: engine, threading.Event())
    assert runner.step(store)
    job = store.job(1)
    assert job.state == "queued" and engine.rendered == []
    assert job.note.startswith(f"Waiting: The file '{cut_input}' looks incomplete (still being copied?): ")
    for _ in range(5):  # unchanged: held, not retried, not filed
        assert not runner.step(store)
    assert store.job(1).state == "queued"
    assert list(cfg.folders.outbox.iterdir()) == [] and list(cfg.folders.error.iterdir()) == []

    inputs = Path(job.work_dir) / "input"
    (inputs / cut_input).write_bytes(whole[cut_input].read_bytes())  # the copy completes
    run_until(runner, store, lambda: store.job(1).state == "done")
    assert engine.rendered == ["face.mp4"]
    assert (cfg.folders.outbox / "cut short" / "face.mp4").is_file()
    assert "incomplete" not in (cfg.folders.outbox / "cut short" / "report.txt").read_text()


def test_an_input_that_stays_incomplete_is_failed_after_max_wait(tmp_path):
    from lipsyncd.daemon.store import Store

    cfg = config_module.load(write_config(tmp_path, watch={"max_wait": 0.5, "quiet_period": 0}), environ={})
    prepare_folders(cfg)
    store = Store(cfg.folders.database)
    try:
        video = make_video(tmp_path / "face.mp4", 75, gop=6)
        make_job(cfg.folders.inbox, "never finished", {"speech.wav": make_audio(tmp_path / "s.wav", 3).read_bytes(),
                                                       "face.mp4": half(video)})
        intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
        assert intake.tick(store) + intake.tick(store) == [1]
        runner = Runner(cfg, ProbingEngine, threading.Event())
        run_until(runner, store, lambda: store.job(1).state == "failed")
        text = (cfg.folders.error / "never finished" / "error.txt").read_text()
        assert "The file 'face.mp4' looks incomplete" in text and "It did not change for" in text
        assert (cfg.folders.error / "never finished" / "face.mp4").read_bytes() == half(video)
    finally:
        store.close()


@pytest.mark.parametrize("fstype, expected", [("ext4", 10.0), ("cifs", 120.0), ("nfs4", 120.0)])
def test_the_automatic_quiet_period_is_long_only_on_a_network_mount(tmp_path, monkeypatch, fstype, expected):
    from lipsyncd.daemon import mounts

    seen = []
    monkeypatch.setattr(mounts, "filesystem_type", lambda path: seen.append(path) or fstype)
    settings = write_config(tmp_path, watch={"mode": "inotify"})
    loaded = config_module.load(settings, environ={"LIPSYNCD_WATCH_QUIET_PERIOD": "auto"})
    assert loaded.watch.quiet_period == expected
    assert seen == [tmp_path]  # the inbox does not exist yet: its nearest existing parent
    polled = config_module.load(settings, environ={"LIPSYNCD_WATCH_QUIET_PERIOD": "auto",
                                                   "LIPSYNCD_WATCH_MODE": "polling"})
    assert polled.watch.quiet_period == 120.0  # polling: the README's setting for other machines' writes
    assert config_module.load(settings, environ={"LIPSYNCD_WATCH_QUIET_PERIOD": "30"}).watch.quiet_period == 30
    with pytest.raises(ConfigError, match="watch.quiet_period: must be a number of seconds or auto; got 'soon'"):
        config_module.load(settings, environ={"LIPSYNCD_WATCH_QUIET_PERIOD": "soon"})
