"""Inbox → SQLite → runner → outbox/error, in process, with the fake engine.

Each test drops folders, runs intake rounds and runner steps by hand (no threads, no sleeps),
and checks where every input ended up.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import unicodedata
from pathlib import Path

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon import publish
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.intake import Intake, recover
from lipsyncd.daemon.operations import retry
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher


@pytest.fixture
def cfg(cfg: Config) -> Config:
    """No quiet period: these tests are about what happens after a folder is complete."""
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))


def intake_round(cfg: Config, store: Store) -> list[int]:
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    return intake.tick(store) + intake.tick(store)


def drain(cfg: Config, store: Store, engine: FakeEngine, stop: threading.Event | None = None) -> Runner:
    intake_round(cfg, store)
    runner = Runner(cfg, lambda: engine, stop or threading.Event())
    while runner.step(store):
        pass
    return runner


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def assert_nothing_held(cfg: Config) -> None:
    assert list(cfg.folders.inbox.iterdir()) == [cfg.folders.processing]
    assert list(cfg.folders.processing.iterdir()) == []


def test_a_finished_job_lands_in_outbox_with_report_log_and_inputs(cfg, store, engine):
    make_job(cfg.folders.inbox, "Interview")
    drain(cfg, store, engine)
    out = cfg.folders.outbox / "Interview"
    assert tree(out) == {"face.mp4", "report.txt", "job.log", "input/speech.wav", "input/face.mp4",
                         "preview/face.jpg", "preview/face.json"}
    assert (out / "face.mp4").read_bytes().startswith(b"LIPSYNCED RIFF speech")
    assert "ok      face.mp4  ->  face.mp4" in (out / "report.txt").read_text()
    assert "face.mp4: rendering" in (out / "job.log").read_text()
    assert_nothing_held(cfg)
    job = store.find_job("Interview")
    assert (job.state, job.attempt, job.outbox_path) == ("done", 1, str(out))
    task, = store.tasks(job.id)
    assert (task.state, task.progress, task.output_path) == ("done", 1.0, str(out / "face.mp4"))
    row, = store.status()
    assert (row["state"], row["videos_done"], row["percent"], row["result"]) == ("done", "1/1", 100.0, str(out))


def test_partial_failure_splits_successes_and_failures(cfg, store, engine):
    make_job(cfg.folders.inbox, "mixed", {"speech.wav": b"a", "good.mp4": b"v", "bad.mov": b"noface",
                                          "job.yaml": "engine: {crf: 20}\n", "notes.txt": b"n"})
    drain(cfg, store, engine)
    assert tree(cfg.folders.outbox / "mixed") == {"good.mp4", "input/good.mp4", "report.txt", "job.log",
                                                  "preview/good.jpg", "preview/good.json", "preview/bad.jpg",
                                                  "preview/bad.json"}
    err = cfg.folders.error / "mixed"
    assert tree(err) == {"bad.mov", "speech.wav", "job.yaml", "notes.txt", "error.txt", "job.log"}
    text = (err / "error.txt").read_text()
    assert "1 of 2 videos" in text and "bad.mov: No face was found in bad.mov." in text
    assert "moved to" in (cfg.folders.outbox / "mixed" / "report.txt").read_text()
    job = store.find_job("mixed")
    assert (job.state, job.error) == ("done", "1 of 2 videos failed; see error/mixed/error.txt")
    assert_nothing_held(cfg)


def test_all_videos_failing_moves_the_folder_as_dropped_to_error(cfg, store, engine):
    make_job(cfg.folders.inbox, "nope", {"speech.wav": b"a", "x.mp4": b"broken", "y.png": b"noface"})
    drain(cfg, store, engine)
    assert not (cfg.folders.outbox / "nope").exists()
    err = cfg.folders.error / "nope"
    assert tree(err) == {"speech.wav", "x.mp4", "y.png", "error.txt", "job.log"}
    assert "x.mp4 cannot be decoded" in (err / "error.txt").read_text()
    job = store.find_job("nope")
    assert (job.state, job.error_path) == ("failed", str(err))
    assert [t.state for t in store.tasks(job.id)] == ["failed", "failed"]


def test_unusable_audio_fails_the_job_with_the_reason(cfg, store, engine):
    make_job(cfg.folders.inbox, "quiet", {"speech.wav": b"silence", "x.mp4": b"v"})
    drain(cfg, store, engine)
    assert "The audio speech.wav cannot be used: the audio is silent" in \
        (cfg.folders.error / "quiet" / "error.txt").read_text()


@pytest.mark.parametrize("job_yaml, message", [
    ("engine:\n  loop: sideways\n", "job.yaml: engine.loop: must be one of pingpong, loop; got 'sideways'"),
    ("colour: red\n", "job.yaml: colour: unknown setting"),
    ("priority: high\n", "job.yaml: priority: must be a whole number"),
    ("audio: other.wav\n", "job.yaml: audio: no audio file named 'other.wav'"),
    ("output: '{name}.mp4'\n", "job.yaml: output: unknown field {name}"),
    ("engine: [1, 2\n", "job.yaml: is not valid YAML (line 2"),
])
def test_an_invalid_job_yaml_goes_to_error_naming_the_field(cfg, store, engine, job_yaml, message):
    make_job(cfg.folders.inbox, "bad yaml", {"speech.wav": b"a", "x.mp4": b"v", "job.yaml": job_yaml})
    drain(cfg, store, engine)
    err = cfg.folders.error / "bad yaml"
    assert tree(err) == {"speech.wav", "x.mp4", "job.yaml", "error.txt", "job.log"}
    assert message in (err / "error.txt").read_text()
    assert message in (err / "job.log").read_text()
    assert store.find_job("bad yaml").state == "failed"
    assert engine.rendered == []


def test_job_yaml_picks_audio_videos_naming_and_options(cfg, store, engine):
    make_job(cfg.folders.inbox, "chosen", {
        "a.wav": b"A", "b.wav": b"B", "one.mp4": b"1", "two.jpg": b"2", "unused.mp4": b"3",
        "job.yaml": "audio: b.wav\nvideos: [two.jpg, one.mp4]\noutput: '{n}-{stem}_{audio}'\n"
                    "engine: {loop: loop}\n"})
    drain(cfg, store, engine)
    out = cfg.folders.outbox / "chosen"
    assert {"1-two_b.mp4", "2-one_b.mp4"} <= tree(out)
    assert (out / "2-one_b.mp4").read_bytes().startswith(b"LIPSYNCED B")
    assert {"input/a.wav", "input/b.wav", "input/unused.mp4", "input/job.yaml"} <= tree(out)
    assert store.find_job("chosen").option_values["loop"] == "loop"


def test_two_audio_files_without_job_yaml_is_a_clear_error(cfg, store, engine):
    make_job(cfg.folders.inbox, "two", {"a.wav": b"A", "b.mp3": b"B", "v.mp4": b"v"})
    drain(cfg, store, engine)
    assert "Found 2 audio files (a.wav, b.mp3)" in (cfg.folders.error / "two" / "error.txt").read_text()


def test_priority_moves_a_job_ahead_then_oldest_first(cfg, store, engine):
    make_job(cfg.folders.inbox, "first", {"s.wav": b"a", "first.mp4": b"v"})
    intake_round(cfg, store)
    make_job(cfg.folders.inbox, "second", {"s.wav": b"a", "second.mp4": b"v2"})
    intake_round(cfg, store)
    make_job(cfg.folders.inbox, "urgent", {"s.wav": b"a", "urgent.mp4": b"v3", "job.yaml": "priority: 5"})
    drain(cfg, store, engine)
    assert engine.rendered == ["urgent.mp4", "first.mp4", "second.mp4"]


def test_names_users_type_never_crash_and_outputs_are_windows_safe(cfg, store, engine):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    files = {"voix 🎤.wav": b"a", f"{nfc}.mp4": b"1", f"{nfd}.mp4": b"2", "Clip.mp4": b"3", "clip.mp4": b"4",
             "CON.mp4": b"5", "what?<now>.mov": b"6", "trailing. .mkv": b"7"}
    make_job(cfg.folders.inbox, "Ünïcödé job 🎬", files)
    drain(cfg, store, engine)
    out = cfg.folders.outbox / "Ünïcödé job 🎬"
    outputs = {p.name for p in out.glob("*.mp4")}
    assert outputs == {"café.mp4", "café (2).mp4", "Clip.mp4", "clip (2).mp4", "_CON.mp4", "what__now_.mp4",
                       "trailing. .mp4"}
    assert len({o.casefold() for o in outputs}) == len(outputs)
    assert {f"input/{name}" for name in files} <= tree(out)


def test_names_in_an_old_encoding_render_with_valid_output_names(cfg, store, engine):
    """A share with the wrong charset writes Latin-1 bytes (Python: surrogate escapes)."""
    folder = Path(os.fsdecode(bytes(cfg.folders.inbox) + b"/caf\xe9"))
    latin1 = os.fsdecode(b"Entr\xe9e \x81.mp4")
    make_job(folder.parent, folder.name, {"s.wav": b"a", latin1: b"v", "fine.mp4": b"w"})
    drain(cfg, store, engine)
    job = store.job(1)
    assert (job.name, job.state) == ("café", "done")
    assert engine.rendered == [latin1, "fine.mp4"]
    out = cfg.folders.outbox / "café"
    names = {p.name for p in out.iterdir()}
    assert {"Entrée \ufffd.mp4", "fine.mp4"} <= names
    for name in names:
        name.encode("utf-8")  # every name the service wrote is valid UTF-8 (no surrogate escapes)
    assert (out / "input" / latin1).read_bytes() == b"v"  # the input comes back byte for byte, name too
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert "ok      Entrée \ufffd.mp4  ->  Entrée \ufffd.mp4" in report
    assert "Entrée" in (out / "job.log").read_text(encoding="utf-8")


def test_a_failing_video_with_an_old_encoding_name_is_reported_readably(cfg, store, engine):
    latin1 = os.fsdecode(b"visage \xe9.mov")
    make_job(cfg.folders.inbox, "bad", {"s.wav": b"a", latin1: b"broken", "ok.mp4": b"v"})
    drain(cfg, store, engine)
    err = cfg.folders.error / "bad"
    assert "visage é.mov: visage é.mov cannot be decoded." in (err / "error.txt").read_text(encoding="utf-8")
    assert (err / latin1).read_bytes() == b"broken"
    assert (cfg.folders.outbox / "bad" / "ok.mp4").is_file()


def test_two_names_that_read_the_same_are_refused_not_confused(cfg, store, engine):
    make_job(cfg.folders.inbox, "twins", {"s.wav": b"a", "Café.mp4": b"1", os.fsdecode(b"Caf\xe9.mp4"): b"2"})
    drain(cfg, store, engine)
    assert "Two files are both named 'Café.mp4'" in (cfg.folders.error / "twins" / "error.txt").read_text()
    assert engine.rendered == []


def test_windows_reserved_job_names_are_sanitised(cfg, store, engine):
    make_job(cfg.folders.inbox, "aux", {"s.wav": b"a", "v.mp4": b"v"})
    make_job(cfg.folders.inbox, "job...", {"s.wav": b"a", "v.mp4": b"w"})
    drain(cfg, store, engine)
    assert {p.name for p in cfg.folders.outbox.iterdir()} == {"_aux", "job"}


def test_results_never_overwrite_an_existing_folder(cfg, store, engine):
    (cfg.folders.outbox / "Interview").mkdir()
    (cfg.folders.outbox / "Interview" / "face.mp4").write_bytes(b"older result")
    (cfg.folders.outbox / "INTERVIEW (2)").mkdir()
    make_job(cfg.folders.inbox, "Interview")
    drain(cfg, store, engine)
    assert (cfg.folders.outbox / "Interview" / "face.mp4").read_bytes() == b"older result"
    assert (cfg.folders.outbox / "Interview (3)" / "face.mp4").is_file()


JUNK = {".DS_Store": b"j", "._v.mp4": b"j", "Thumbs.db": b"j", "desktop.ini": b"j", "~$notes.docx": b"j",
        "v.mp4.part": b"j", "x.crdownload": b"j", "__MACOSX/._s.wav": b"j", "@eaDir/v.mp4/SYNOPHOTO.jpg": b"j",
        ".syncthing.v.mp4.tmp": b"j"}


def test_junk_files_are_not_used_but_travel_with_the_job(cfg, store, engine):
    make_job(cfg.folders.inbox, "mac", {"s.wav": b"a", "v.mp4": b"v", **JUNK})
    drain(cfg, store, engine)
    assert engine.rendered == ["v.mp4"]
    assert tree(cfg.folders.outbox / "mac") == {"v.mp4", "input/v.mp4", "input/s.wav", "report.txt", "job.log",
                                                 "preview/v.jpg", "preview/v.json", *(f"input/{name}" for name in JUNK)}
    assert_nothing_held(cfg)


def test_junk_of_a_failed_job_goes_to_error_with_it(cfg, store, engine):
    make_job(cfg.folders.inbox, "mac", {"s.wav": b"a", "v.mp4": b"noface", **JUNK})
    drain(cfg, store, engine)
    assert tree(cfg.folders.error / "mac") == {"s.wav", "v.mp4", "error.txt", "job.log", *JUNK}


def test_a_folder_of_junk_only_is_not_taken(cfg, store, engine):
    make_job(cfg.folders.inbox, "still copying", {".DS_Store": b"j", "v.mp4.part": b"j"})
    drain(cfg, store, engine)
    assert (cfg.folders.inbox / "still copying" / "v.mp4.part").is_file() and store.status() == []


@pytest.mark.parametrize("policy, expected_state", [("skip", "skipped"), ("rerun", "done")])
def test_identical_redrop_is_recognised(cfg, store, engine, policy, expected_state):
    cfg = dataclasses.replace(cfg, jobs=dataclasses.replace(cfg.jobs, duplicates=policy))
    make_job(cfg.folders.inbox, "take 1")
    drain(cfg, store, engine)
    make_job(cfg.folders.inbox, "take 2")  # other name, same bytes
    drain(cfg, store, engine)
    second = store.find_job("take 2")
    assert second.state == expected_state
    assert second.note is None  # a finished job keeps no note; its report says it
    report = (cfg.folders.outbox / "take 2" / "report.txt").read_text()
    assert "Same audio, videos and options as job #1" in report
    assert engine.rendered == ["face.mp4"] * (1 if policy == "skip" else 2)


def test_cancel_a_queued_job_files_it_to_error(cfg, store, engine):
    make_job(cfg.folders.inbox, "oops")
    intake_round(cfg, store)
    store.request_cancel(store.find_job("oops").id)
    drain(cfg, store, engine)
    assert engine.rendered == []
    assert "was cancelled" in (cfg.folders.error / "oops" / "error.txt").read_text()
    assert store.find_job("oops").state == "cancelled"


def test_cancel_a_running_job_stops_the_render(cfg, store):
    def cancel_from_another_shell(frame: int) -> None:  # the render runs in a thread of its own
        if frame == 3:
            other = Store(cfg.folders.database)
            other.request_cancel(1)
            other.close()

    engine = FakeEngine(frame_delay=0.1, on_frame=cancel_from_another_shell)
    make_job(cfg.folders.inbox, "long")
    drain(cfg, store, engine)
    assert engine.rendered == []
    assert store.job(1).state == "cancelled"
    assert tree(cfg.folders.error / "long") >= {"speech.wav", "face.mp4", "error.txt"}


def test_stop_flag_interrupts_and_requeues_then_the_job_runs_again(cfg, store):
    stop = threading.Event()
    engine = FakeEngine(frame_delay=0.1, on_frame=lambda n: n == 4 and stop.set())
    make_job(cfg.folders.inbox, "stopped", {"s.wav": b"a", "a.mp4": b"1", "b.mp4": b"2"})
    drain(cfg, store, engine, stop)
    job = store.job(1)
    assert (job.state, job.note) == ("queued", "Interrupted by a service stop; it runs again at the next start.")
    assert [t.state for t in store.tasks(1)] == ["queued", "queued"]
    assert list(cfg.folders.outbox.iterdir()) == []
    drain(cfg, store, FakeEngine())
    assert (store.job(1).state, store.job(1).attempt) == ("done", 2)


def test_missing_model_keeps_the_job_queued_with_a_reason_until_it_appears(cfg, store):
    engine = FakeEngine(models_dir=cfg.engine.models_dir)
    make_job(cfg.folders.inbox, "early")
    runner = drain(cfg, store, engine)
    job = store.job(1)
    assert job.state == "queued"
    assert f"put wav2lip_gan.pth in {cfg.engine.models_dir}" in job.note
    assert tree(Path(job.work_dir) / "input") == {"speech.wav", "face.mp4"}
    (cfg.engine.models_dir / "wav2lip_gan.pth").write_bytes(b"weights")
    runner._blocked_until.clear()  # as if model_retry_interval had passed
    while runner.step(store):
        pass
    assert store.job(1).state == "done"


def test_disk_full_while_publishing_keeps_inputs_and_retry_runs_it_again(cfg, store, engine, monkeypatch):
    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(publish, "_copy_data", no_space)
    make_job(cfg.folders.inbox, "big")
    drain(cfg, store, engine)
    job = store.job(1)
    assert job.state == "failed"
    assert job.error.startswith(f"Not enough free space in {cfg.folders.outbox}")
    assert list(cfg.folders.outbox.iterdir()) == []  # no temp folder left behind either
    assert tree(Path(job.work_dir)) >= {"input/speech.wav", "input/face.mp4", "output/face.mp4"}
    monkeypatch.undo()
    assert "queued again" in retry(store, cfg, "big")
    drain(cfg, store, engine)
    assert store.job(1).state == "done" and (cfg.folders.outbox / "big" / "face.mp4").is_file()


def test_retry_of_a_failed_job_moves_its_folder_back_to_the_inbox(cfg, store, engine):
    make_job(cfg.folders.inbox, "fixme", {"s.wav": b"a", "v.mp4": b"broken"})
    drain(cfg, store, engine)
    (cfg.folders.error / "fixme" / "v.mp4").write_bytes(b"fixed")
    assert "moved back to the inbox" in retry(store, cfg, "fixme")
    assert not (cfg.folders.error / "fixme").exists()
    assert tree(cfg.folders.inbox / "fixme") == {"s.wav", "v.mp4"}
    drain(cfg, store, engine)
    assert store.find_job("fixme").id == 2 and store.job(2).state == "done"


def test_a_crash_while_filing_finishes_on_restart_without_duplicates(cfg, store, engine, monkeypatch):
    def crash(_self, _job_id):
        raise KeyboardInterrupt  # stands in for kill -9 right after the outbox folder appeared

    make_job(cfg.folders.inbox, "halfway", {"s.wav": b"a", "ok.mp4": b"v", "bad.mp4": b"noface"})
    make_job(cfg.folders.outbox, ".lipsyncd-0badcafe.tmp", {"ok.mp4": b"half a copy"})  # an earlier crash
    monkeypatch.setattr(Store, "finish", crash)
    with pytest.raises(KeyboardInterrupt):
        drain(cfg, store, engine)
    assert store.job(1).state == "filing"
    monkeypatch.undo()
    recover(store, cfg)
    assert store.job(1).state == "done"
    assert sorted(p.name for p in cfg.folders.outbox.iterdir()) == ["halfway"]
    assert sorted(p.name for p in cfg.folders.error.iterdir()) == ["halfway"]
    assert_nothing_held(cfg)


def test_recover_undoes_a_claim_that_never_moved_and_completes_one_that_did(cfg, store, engine):
    make_job(cfg.folders.inbox, "not moved")
    store.begin_intake("not moved", cfg.folders.processing)
    moved = store.begin_intake("moved", cfg.folders.processing)
    make_job(Path(moved.work_dir), "input")
    recover(store, cfg)
    assert [j.name for j in store.jobs_in("intake", "queued")] == ["moved"]
    assert (cfg.folders.inbox / "not moved").is_dir()
    drain(cfg, store, engine)
    assert {p.name for p in cfg.folders.outbox.iterdir()} == {"moved", "not moved"}


def test_work_folders_unknown_to_the_database_go_back_to_the_inbox(cfg, store):
    make_job(cfg.folders.processing / "job-99", "input")
    recover(store, cfg)
    assert tree(cfg.folders.inbox / "recovered job-99") == {"speech.wav", "face.mp4"}
    assert not (cfg.folders.processing / "job-99").exists()


def test_cross_filesystem_publish_copies_verifies_then_deletes(cfg, store, engine, monkeypatch):
    def exdev(*_args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    copies = []
    real_copy = publish.copy_verified
    monkeypatch.setattr(os, "link", exdev)
    monkeypatch.setattr(publish, "copy_verified", lambda s, d: (copies.append(Path(s).name), real_copy(s, d)))
    make_job(cfg.folders.inbox, "remote")
    drain(cfg, store, engine)
    out = cfg.folders.outbox / "remote"
    assert (out / "input" / "face.mp4").read_bytes() == b"video bytes"
    assert sorted(copies) == ["face.jpg", "face.json", "face.mp4", "face.mp4", "job.log", "speech.wav"]
    assert_nothing_held(cfg)



def test_an_engine_bug_fails_the_video_or_job_but_not_the_service(cfg, store):
    class Buggy(FakeEngine):
        def render(self, audio, video, *args, **kwargs):
            if video.name == "bug.mp4":
                raise RuntimeError("index out of range")
            return super().render(audio, video, *args, **kwargs)

    make_job(cfg.folders.inbox, "buggy", {"s.wav": b"a", "bug.mp4": b"1", "fine.mp4": b"2"})
    drain(cfg, store, Buggy())
    assert [t.error for t in store.tasks(1)] == [
        "Internal error (RuntimeError: index out of range). Please report it, with job.log.", None]

    class BuggyAudio(FakeEngine):
        def load_audio(self, path, options=None):
            raise MemoryError("too big")

    make_job(cfg.folders.inbox, "huge", {"s.wav": b"a", "v.mp4": b"3"})
    drain(cfg, store, BuggyAudio())
    assert store.job(2).state == "failed"
    assert "Internal error (MemoryError: too big)" in (cfg.folders.error / "huge" / "error.txt").read_text()


def test_each_video_is_hashed_once_and_the_engine_gets_the_hash(cfg, store, engine):
    """Intake reads every video once; the engine's face-track cache reuses that sha256 instead
    of reading a large file from the share again."""
    import hashlib

    make_job(cfg.folders.inbox, "two", {"s.wav": b"a", "one.mp4": b"first video", "two.mp4": b"second video"})
    drain(cfg, store, engine)
    assert engine.digests == [hashlib.sha256(b"first video").hexdigest(), hashlib.sha256(b"second video").hexdigest()]
