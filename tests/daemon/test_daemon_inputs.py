"""Inputs people really drop: unzipped folders, links, odd job.yaml, every promised format, and
what the user reads about them (warnings, cancels, notes), through intake, runner and filing."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store
from lipsyncd.engine import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from test_daemon_pipeline import assert_nothing_held, drain, intake_round, tree


@pytest.fixture
def cfg(cfg: Config) -> Config:
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))


# -- what unzipping Job.zip makes ----------------------------------------------------------------

def test_a_lone_sub_folder_s_media_are_used(cfg, store, engine):
    make_job(cfg.folders.inbox, "Job", {"Job/speech.wav": b"a", "Job/face.mp4": b"v", "Job/notes.txt": b"n",
                                        "__MACOSX/Job/._face.mp4": b"j"})
    drain(cfg, store, engine)
    assert engine.rendered == ["face.mp4"]
    assert tree(cfg.folders.outbox / "Job") == {
        "face.mp4", "report.txt", "job.log", "preview/face.jpg", "preview/face.json", "input/Job/speech.wav", "input/Job/face.mp4", "input/Job/notes.txt",
        "input/__MACOSX/Job/._face.mp4"}
    assert_nothing_held(cfg)


def test_job_yaml_beside_or_inside_the_lone_sub_folder_names_files_without_it(cfg, store, engine):
    make_job(cfg.folders.inbox, "inside", {"Take/Take/s.wav": b"a", "Take/Take/a.mp4": b"1", "Take/Take/b.mp4": b"2",
                                           "Take/Take/job.yaml": "videos: [b.mp4]\n"})
    make_job(cfg.folders.inbox, "beside", {"Take/s.wav": b"a", "Take/a.mp4": b"3", "Take/b.mp4": b"4",
                                           "job.yaml": "videos: [a.mp4]\noutput: '{stem} synced'\n"})
    drain(cfg, store, engine)
    assert sorted(engine.rendered) == ["a.mp4", "b.mp4"]
    assert (cfg.folders.outbox / "inside" / "b.mp4").read_bytes().endswith(b"2")
    assert (cfg.folders.outbox / "beside" / "a synced.mp4").read_bytes().endswith(b"3")


def test_no_audio_names_the_audio_found_in_sub_folders(cfg, store, engine):
    make_job(cfg.folders.inbox, "nested", {"face.mp4": b"v", "old/speech.wav": b"a"})
    make_job(cfg.folders.inbox, "two", {"a/s.wav": b"a", "a/v.mp4": b"v", "b/s.wav": b"a", "b/v.mp4": b"w"})
    drain(cfg, store, engine)
    nested = (cfg.folders.error / "nested" / "error.txt").read_text()
    assert "No audio file in the folder" in nested
    assert "Found in sub-folders, which are not used: old/speech.wav" in nested
    two = (cfg.folders.error / "two" / "error.txt").read_text()
    assert "Found in sub-folders, which are not used: a/s.wav, b/s.wav" in two
    assert engine.rendered == []


def test_job_yaml_that_is_a_folder_is_an_error(cfg, store, engine):
    make_job(cfg.folders.inbox, "odd", {"s.wav": b"a", "v.mp4": b"v", "job.yaml/priority.txt": b"5"})
    drain(cfg, store, engine)
    err = cfg.folders.error / "odd"
    assert "job.yaml is a folder, not a file" in (err / "error.txt").read_text()
    assert tree(err) == {"s.wav", "v.mp4", "job.yaml/priority.txt", "error.txt", "job.log"}
    assert engine.rendered == []


def test_every_suffix_the_engine_reads_is_taken(cfg, store, engine):
    files = {"s.wav": b"a", **{f"clip{suffix}": suffix.encode() for suffix in VIDEO_SUFFIXES + IMAGE_SUFFIXES},
             "notes.xyz": b"n"}
    make_job(cfg.folders.inbox, "formats", files)
    drain(cfg, store, engine)
    assert sorted(engine.rendered) == sorted(f"clip{suffix}" for suffix in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    assert {".mpg", ".m4v", ".ts", ".mpeg", ".webp"} <= set(VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    assert "input/notes.xyz" in tree(cfg.folders.outbox / "formats")


# -- links ----------------------------------------------------------------------------------

def test_a_linked_video_is_reported_and_returned_as_the_link_it_was(cfg, store, engine, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "real.mp4").write_bytes(b"v")
    folder = make_job(cfg.folders.inbox, "linked", {"s.wav": b"a"})
    os.symlink(tmp_path / "elsewhere" / "real.mp4", folder / "face.mp4")
    os.symlink("../nowhere", folder / "dangling.mov")
    os.symlink(tmp_path / "elsewhere", folder / "a folder")
    drain(cfg, store, engine)
    err = cfg.folders.error / "linked"
    text = (err / "error.txt").read_text()
    assert "No video or still image in the folder" in text
    assert text.count("face.mp4 is a link; links are not followed — copy the file itself.") == 1
    assert "Note:\n  a folder is a link" in text
    assert os.readlink(err / "face.mp4") == str(tmp_path / "elsewhere" / "real.mp4")
    assert os.readlink(err / "dangling.mov") == "../nowhere"
    assert os.readlink(err / "a folder") == str(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "real.mp4").read_bytes() == b"v"  # the target is untouched
    assert engine.rendered == []
    assert_nothing_held(cfg)


def test_a_link_beside_real_inputs_is_noted_in_the_report(cfg, store, engine, tmp_path):
    (tmp_path / "real.mp4").write_bytes(b"v")
    folder = make_job(cfg.folders.inbox, "mixed", {"s.wav": b"a", "face.mp4": b"w"})
    os.symlink(tmp_path / "real.mp4", folder / "other.mp4")
    drain(cfg, store, engine)
    out = cfg.folders.outbox / "mixed"
    assert engine.rendered == ["face.mp4"]
    assert (out / "input" / "other.mp4").is_symlink()
    assert "Note:     other.mp4 is a link; links are not followed — copy the file itself." in \
        (out / "report.txt").read_text()


# -- a render that hardly found a face ------------------------------------------------------------

def test_few_frames_with_a_face_is_a_warning_in_report_status_and_outcome(cfg, store, engine):
    make_job(cfg.folders.inbox, "sideways", {"s.wav": b"a", "phone.mp4": b"fewfaces", "good.mp4": b"v"})
    drain(cfg, store, engine)
    report = (cfg.folders.outbox / "sideways" / "report.txt").read_text()
    warning = "ok, but no face was found in 9 of 10 frames: only 1 frame was re-drawn"
    assert 'job "sideways" (#1) finished, with a warning.' in report
    assert f"WARNING phone.mp4  ->  phone.mp4: {warning}" in report
    assert "ok      good.mp4  ->  good.mp4" in report
    job = store.job(1)
    assert job.state == "done" and job.error.startswith(f"phone.mp4: {warning}")
    assert store.status()[0]["message"] == job.error
    good, phone = store.tasks(1)
    assert (phone.state, good.error) == ("done", None) and phone.error.startswith(warning)


# -- cancel and the notes a user reads ----------------------------------------------------------------

def test_cancelling_a_queued_job_takes_effect_while_another_job_renders(cfg, store):
    started, release = threading.Event(), threading.Event()

    def on_frame(_n: int) -> None:
        started.set()
        release.wait(10)

    make_job(cfg.folders.inbox, "long", {"s.wav": b"a", "long.mp4": b"v"})
    intake_round(cfg, store)
    make_job(cfg.folders.inbox, "next", {"s.wav": b"a", "next.mp4": b"w"})
    intake_round(cfg, store)
    runner = Runner(cfg, lambda: FakeEngine(on_frame=on_frame), threading.Event())

    def run_one() -> None:
        own = Store(cfg.folders.database)
        runner.step(own)
        own.close()

    thread = threading.Thread(target=run_one)
    thread.start()
    try:
        assert started.wait(10)
        store.request_cancel(store.find_job("next").id)
        intake_round(cfg, store)  # the intake thread's next round
        assert store.find_job("next").state == "cancelled"
        assert store.find_job("long").state == "running"
        err = cfg.folders.error / "next"
        assert tree(err) == {"s.wav", "next.mp4", "error.txt", "job.log"}
        assert "cancelled before it started" in (err / "job.log").read_text()
        assert "next.mp4: cancelled before it started" in (err / "error.txt").read_text()
    finally:
        release.set()
        thread.join(10)
    assert store.find_job("long").state == "done"


def test_a_cancelled_waiting_job_drops_its_waiting_note(cfg, store):
    engine = FakeEngine(models_dir=cfg.engine.models_dir)
    make_job(cfg.folders.inbox, "early")
    drain(cfg, store, engine)
    assert store.job(1).note.startswith("Waiting: ")
    store.request_cancel(1)
    intake_round(cfg, store)
    job = store.job(1)
    assert (job.state, job.note) == ("cancelled", None)
    assert store.status()[0]["message"] is None
    assert "Waiting" not in (cfg.folders.error / "early" / "error.txt").read_text()


def cancel_at(cfg, frame: int):
    """An on_frame callback that cancels job 1 at ``frame``, as ``lipsyncd cancel`` would: on a
    connection of its own (the render runs in a thread of its own)."""
    def on_frame(n: int) -> None:
        if n == frame:
            other = Store(cfg.folders.database)
            other.request_cancel(1)
            other.close()

    return on_frame


def test_a_job_cancelled_midway_says_how_far_it_got(cfg, store):
    # the render's own thread cannot read the database: the runner sees the cancel between two
    # frames and stops the render at its next check, after frame 7
    engine = FakeEngine(frame_delay=0.2, on_frame=cancel_at(cfg, 6))
    make_job(cfg.folders.inbox, "long")
    drain(cfg, store, engine)
    text = (cfg.folders.error / "long" / "error.txt").read_text()
    assert "face.mp4: cancelled at 70 %, frame 7 of 10; no output was kept" in text
    assert "not run" not in text


def test_a_new_attempt_shows_neither_the_old_note_nor_the_old_progress(cfg, store):
    stop = threading.Event()
    make_job(cfg.folders.inbox, "stopped")
    # slow enough frames that the runner's loop sees the stop and stops the render's own thread
    drain(cfg, store, FakeEngine(frame_delay=0.1, on_frame=lambda n: n == 4 and stop.set()), stop)
    job, = store.jobs_in("queued")
    assert job.note.startswith("Interrupted")
    task, = store.tasks(job.id)
    assert (task.progress, task.frames_done, task.frames_total) == (0, None, None)
    seen = []

    def on_frame(n: int) -> None:
        if n == 1:  # on a connection of its own: the render runs in a thread of its own
            reader = Store(cfg.folders.database)
            seen.append((reader.job(1).note, reader.tasks(1)[0].frames_done))
            reader.close()

    drain(cfg, store, FakeEngine(on_frame=on_frame))
    assert seen == [(None, None)]
    report = (cfg.folders.outbox / "stopped" / "report.txt").read_text()
    assert "Interrupted" not in report and "Attempts: 2" in report
    assert store.job(1).note is None


def test_a_cancel_is_read_within_half_a_second_whatever_the_progress_interval(cfg, store):
    cfg = dataclasses.replace(cfg, service=dataclasses.replace(cfg.service, progress_interval=60))
    engine = FakeEngine(frame_delay=0.15, on_frame=cancel_at(cfg, 2))
    make_job(cfg.folders.inbox, "long")
    drain(cfg, store, engine)
    assert engine.rendered == [] and store.job(1).state == "cancelled"
