"""job.yaml's preview_only and preview_seconds, and config jobs.keep_inputs: what gets rendered,
and where every input ends up."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.jobfolder import JobFolderError, content_hash, load_spec
from lipsyncd.daemon.report import INPUTS_DELETED, PREVIEW_ONLY
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher
from lipsyncd.daemon.web import files
from lipsyncd.daemon.web.app import create_app
from lipsyncd.engine import RenderOptions
from starlette.testclient import TestClient

SPEECH = b"speech " * 100
"""700 bytes: the fake engine's audio lasts len / 100 = 7 s."""


@pytest.fixture
def cfg(cfg: Config) -> Config:
    return dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))


def keeping(cfg: Config, policy: str) -> Config:
    return dataclasses.replace(cfg, jobs=dataclasses.replace(cfg.jobs, keep_inputs=policy))


def run_all(cfg: Config, store: Store, engine: FakeEngine) -> None:
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    intake.tick(store)
    intake.tick(store)
    runner = Runner(cfg, lambda: engine, threading.Event())
    while runner.step(store):
        pass


def recording(engine: FakeEngine) -> list[tuple[str, str, int]]:
    """Calls to the engine as (what, video, audio length in the fake's units)."""
    calls: list[tuple[str, str, int]] = []
    preview, render = engine.preview, engine.render
    engine.preview = lambda a, v, *args, **kw: calls.append(("preview", v.name, len(a.samples))) or preview(a, v, *args, **kw)
    engine.render = lambda a, v, *args, **kw: calls.append(("render", v.name, len(a.samples))) or render(a, v, *args, **kw)
    return calls


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_preview_only_stops_after_the_previews_and_returns_the_folder_to_drop_again(cfg, store, engine):
    calls = recording(engine)
    make_job(cfg.folders.inbox, "look", {"s.wav": SPEECH, "a.mp4": b"1", "b.mp4": b"2", "notes.txt": b"hi",
                                         "job.yaml": b"preview_only: true\n"})
    run_all(cfg, store, engine)
    assert calls == [("preview", "a.mp4", 700), ("preview", "b.mp4", 700)]  # nothing rendered
    job = store.find_job("look")
    assert (job.state, job.error) == ("skipped", PREVIEW_ONLY)
    out = cfg.folders.outbox / "look"
    assert tree(out) == ["input/a.mp4", "input/b.mp4", "input/job.yaml", "input/notes.txt", "input/s.wav", "job.log",
                         "preview/a.jpg", "preview/a.json", "preview/b.jpg", "preview/b.json", "report.txt"]
    report = (out / "report.txt").read_text()
    assert 'lipsyncd job "look" (#1) stopped after its previews.' in report
    assert PREVIEW_ONLY in report and "PREVIEW a.mp4: not rendered" in report and "FAILED" not in report
    assert list(cfg.folders.error.iterdir()) == []

    again = shutil.copytree(out / "input", cfg.folders.inbox / "look again")  # as the report says
    (again / "job.yaml").write_text("preview_only: false\n")
    run_all(cfg, store, engine)
    assert calls[2:] == [("preview", "a.mp4", 700), ("preview", "b.mp4", 700),
                         ("render", "a.mp4", 700), ("render", "b.mp4", 700)]
    assert store.find_job("look again").state == "done"
    assert (cfg.folders.outbox / "look again" / "a.mp4").is_file()


def test_a_cancel_during_the_previews_of_a_preview_only_job_cancels_it(cfg, store):
    engine = FakeEngine()
    preview = engine.preview

    def cancel_then_preview(*args, **kw):
        store.request_cancel(1)
        return preview(*args, **kw)

    engine.preview = cancel_then_preview
    make_job(cfg.folders.inbox, "look", {"s.wav": SPEECH, "a.mp4": b"1", "job.yaml": b"preview_only: true\n"})
    run_all(cfg, store, engine)
    assert store.find_job("look").state == "cancelled"
    assert (cfg.folders.error / "look" / "a.mp4").is_file()


def test_preview_seconds_renders_the_first_seconds_of_each_video_before_the_renders(cfg, store, engine):
    calls = recording(engine)
    make_job(cfg.folders.inbox, "clip", {"s.wav": SPEECH, "a.mp4": b"1", "b.mp4": b"broken",
                                         "job.yaml": b"preview_seconds: 2\n"})
    run_all(cfg, store, engine)
    assert calls == [("preview", "a.mp4", 700), ("preview", "b.mp4", 700),  # the pictures first: seconds
                     ("render", "a.mp4", 200), ("render", "b.mp4", 200),    # then 2 s clips
                     ("render", "a.mp4", 700), ("render", "b.mp4", 700)]    # then the whole
    out = cfg.folders.outbox / "clip"
    assert sorted(p.name for p in (out / "preview").iterdir()) == ["a-preview.mp4", "a.jpg", "a.json"]
    assert (out / "preview" / "a-preview.mp4").read_bytes().startswith(b"LIPSYNCED speech ")
    assert json.loads((out / "preview" / "a.json").read_text())["clip"] == "a-preview.mp4"
    assert "b.mp4: no preview clip: b.mp4 cannot be decoded." in (out / "job.log").read_text()
    ((shown, figures),) = files.previews(store.find_job("clip"))
    assert (shown.rel, figures["clip_rel"]) == ("preview/a.jpg", "preview/a-preview.mp4")
    web = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=True))
    page = TestClient(create_app(web), base_url="http://127.0.0.1").get("/jobs/1").text  # the job page plays it
    assert 'class="preview-clip" src="/jobs/1/files/outbox/preview/a-preview.mp4"' in page
    assert [t.attempt for t in store.tasks(1)] == [1, 1]  # previews are not attempts


def test_preview_only_with_preview_seconds_renders_only_the_clips(cfg, store, engine):
    calls = recording(engine)
    make_job(cfg.folders.inbox, "clip", {"s.wav": SPEECH, "a.mp4": b"1",
                                         "job.yaml": b"preview_only: true\npreview_seconds: 1.5\n"})
    run_all(cfg, store, engine)
    assert calls == [("preview", "a.mp4", 700), ("render", "a.mp4", 150)]
    assert store.find_job("clip").state == "skipped"
    assert (cfg.folders.outbox / "clip" / "preview" / "a-preview.mp4").is_file()
    assert not (cfg.folders.outbox / "clip" / "a.mp4").exists()


def test_keep_inputs_delete_files_only_what_was_made_after_a_job_that_went_entirely_well(cfg, store, engine):
    cfg = keeping(cfg, "delete")
    make_job(cfg.folders.inbox, "fine", {"s.wav": SPEECH, "a.mp4": b"1", "notes.txt": b"hi"})
    run_all(cfg, store, engine)
    out = cfg.folders.outbox / "fine"
    assert tree(out) == ["a.mp4", "job.log", "preview/a.jpg", "preview/a.json", "report.txt"]
    assert INPUTS_DELETED in (out / "report.txt").read_text()
    assert list(cfg.folders.processing.iterdir()) == [] and list(cfg.folders.error.iterdir()) == []


@pytest.mark.parametrize("files, job_yaml, outbox_inputs, error_inputs", [
    ({"a.mp4": b"1", "b.mp4": b"broken"}, None, ["input/a.mp4"], ["b.mp4", "error.txt", "job.log", "s.wav"]),
    ({"a.mp4": b"fewfaces"}, None, ["input/a.mp4", "input/s.wav"], []),  # a warning: it may be rendered again
    ({"a.mp4": b"1"}, b"preview_only: true\n", ["input/a.mp4", "input/job.yaml", "input/s.wav"], []),
    ({"a.mp4": b"noface"}, None, [], ["a.mp4", "error.txt", "job.log", "s.wav"]),
])
def test_keep_inputs_delete_never_deletes_the_inputs_of_a_job_that_did_not_go_entirely_well(
        cfg, store, engine, files, job_yaml, outbox_inputs, error_inputs):
    cfg = keeping(cfg, "delete")
    make_job(cfg.folders.inbox, "job", {"s.wav": SPEECH, **files, **({"job.yaml": job_yaml} if job_yaml else {})})
    run_all(cfg, store, engine)
    out = cfg.folders.outbox / "job"
    kept = [f for f in tree(out) if f.startswith("input/")] if out.exists() else []
    assert kept == outbox_inputs
    assert (tree(cfg.folders.error / "job") if (cfg.folders.error / "job").exists() else []) == error_inputs
    assert not out.exists() or INPUTS_DELETED not in (out / "report.txt").read_text()


def test_keep_inputs_keep_is_the_default(cfg, store, engine):
    assert cfg.jobs.keep_inputs == "keep"
    make_job(cfg.folders.inbox, "fine", {"s.wav": SPEECH, "a.mp4": b"1"})
    run_all(cfg, store, engine)
    assert tree(cfg.folders.outbox / "fine" / "input") == ["a.mp4", "s.wav"]


def spec_of(tmp_path: Path, job_yaml: str):
    folder = make_job(tmp_path, "j", {"s.wav": b"a", "v.mp4": b"1", "job.yaml": job_yaml})
    return load_spec(folder, defaults=RenderOptions(), naming="{stem}.mp4")


@pytest.mark.parametrize("job_yaml, message", [
    ("preview_only: yes please", "job.yaml: preview_only: must be true or false; got 'yes please'"),
    ("preview_seconds: 0", "job.yaml: preview_seconds: must be a number of seconds from 1 to 60; got 0"),
    ("preview_seconds: 61", "got 61"),
    ("preview_seconds: true", "got True"),
    ("preview_seconds: five", "got 'five'"),
])
def test_invalid_preview_settings_name_the_field(tmp_path, job_yaml, message):
    with pytest.raises(JobFolderError) as err:
        spec_of(tmp_path, job_yaml)
    assert message in str(err.value)


def test_preview_settings_are_part_of_the_jobs_identity_and_stored_beside_the_engine_options(tmp_path, store):
    plain = spec_of(tmp_path / "1", "")
    only = spec_of(tmp_path / "2", "preview_only: true\npreview_seconds: 5")
    assert (only.preview_only, only.preview_seconds, plain.preview_only, plain.preview_seconds) == (True, 5.0, False, None)
    hashes = {"s.wav": "0" * 64, "v.mp4": "1" * 64}
    assert content_hash(hashes, only) != content_hash(hashes, plain)
    assert content_hash(hashes, spec_of(tmp_path / "3", "preview_only: false")) == content_hash(hashes, plain)
    job = store.begin_intake("j", tmp_path)
    store.enqueue(job.id, audio="s.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=0,
                  options={**only.options.as_dict(), **only.job_settings()}, content_hash="x")
    job = store.job(job.id)
    assert (job.preview_only, job.preview_seconds) == (True, 5.0)
    assert RenderOptions.from_mapping(job.option_values) == only.options  # the engine never sees them


ORIGIN = {"Origin": "http://127.0.0.1", "Referer": "http://127.0.0.1/"}


def dashboard(cfg: Config) -> TestClient:
    web = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=True))
    return TestClient(create_app(web), base_url="http://127.0.0.1", follow_redirects=False)


def test_a_preview_ordered_for_a_waiting_job_is_rendered_before_its_renders(cfg, store, engine):
    calls = recording(engine)
    make_job(cfg.folders.inbox, "wait", {"s.wav": SPEECH, "a.mp4": b"1"})
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    intake.tick(store)
    intake.tick(store)
    job = store.find_job("wait")
    assert job.state == "queued"
    r = dashboard(cfg).post(f"/jobs/{job.id}/preview", data={"seconds": "3"}, headers=ORIGIN)
    assert r.status_code == 303 and "preview+clip+before+the+full+renders" in r.headers["location"]
    assert store.job(job.id).preview_seconds == 3.0 and not store.job(job.id).preview_only
    runner = Runner(cfg, lambda: engine, threading.Event())
    while runner.step(store):
        pass
    assert calls == [("preview", "a.mp4", 700), ("render", "a.mp4", 300), ("render", "a.mp4", 700)]
    assert store.job(job.id).state == "done"
    assert tree(cfg.folders.outbox / "wait") == ["a.mp4", "input/a.mp4", "input/s.wav", "job.log", "preview/a-preview.mp4",
                                                 "preview/a.jpg", "preview/a.json", "report.txt"]


def test_a_preview_of_a_finished_job_is_a_new_preview_only_job_from_its_kept_inputs(cfg, store, engine):
    calls = recording(engine)
    make_job(cfg.folders.inbox, "done {job}", {"s.wav": SPEECH, "a.mp4": b"1", "b.mp4": b"broken", "notes.txt": b"n",
                                               "job.yaml": b"output: '{job} {stem}'\nengine: {loop: loop}\n"})
    run_all(cfg, store, engine)
    job = store.find_job("done {job}")
    assert job.state == "done" and (cfg.folders.error / "done {job}" / "b.mp4").is_file()  # inputs in two places
    before = {folder: tree(folder) for folder in (cfg.folders.outbox / "done {job}", cfg.folders.error / "done {job}")}
    r = dashboard(cfg).post(f"/jobs/{job.id}/preview", data={"seconds": "2"},
                            headers={**ORIGIN, "Referer": f"http://127.0.0.1/jobs/{job.id}"})
    assert r.headers["location"].startswith(f"/jobs/{job.id}?msg=") and "results+stay" in r.headers["location"]
    copy = cfg.folders.inbox / "done {job} (preview)"
    assert tree(copy) == ["a.mp4", "b.mp4", "job.yaml", "notes.txt", "s.wav"]  # not error.txt, job.log
    assert (copy / "a.mp4").stat().st_ino == (cfg.folders.outbox / "done {job}" / "input" / "a.mp4").stat().st_ino
    del calls[:]
    run_all(cfg, store, engine)
    assert calls == [("preview", "a.mp4", 700), ("preview", "b.mp4", 700), ("render", "a.mp4", 200),
                     ("render", "b.mp4", 200)]  # the clips only, b.mp4's failing as before
    preview = store.find_job("done {job} (preview)")
    assert (preview.state, preview.preview_seconds, preview.option_values["loop"]) == ("skipped", 2.0, "loop")
    out = cfg.folders.outbox / "done {job} (preview)"
    assert "preview/done {job} a-preview.mp4" in tree(out)  # named as the job's own renders
    assert yaml.safe_load((out / "input" / "job.yaml").read_text())["preview_only"] is True
    assert {folder: tree(folder) for folder in before} == before  # the first job's results stay as they were
    assert store.job(job.id).state == "done"


def test_no_preview_without_the_inputs_or_while_rendering(cfg, store, engine):
    make_job(cfg.folders.inbox, "gone", {"s.wav": SPEECH, "a.mp4": b"1"})
    run_all(cfg, store, engine)
    shutil.rmtree(cfg.folders.outbox / "gone" / "input")  # jobs.keep_inputs: delete, or a clean-up
    c = dashboard(cfg)
    r = c.post("/jobs/1/preview", data={"seconds": "5"}, headers=ORIGIN)
    assert "Not+done" in r.headers["location"] and "no+longer+kept" in r.headers["location"]
    assert "preview-order" not in c.get("/jobs/1").text  # no button where it cannot work
    store.db.execute("UPDATE jobs SET state = 'running' WHERE id = 1")
    assert "Not+done" in c.post("/jobs/1/preview", data={"seconds": "5"}, headers=ORIGIN).headers["location"]
    store.db.execute("UPDATE jobs SET state = 'queued' WHERE id = 1")
    for bad in ("0", "61", "five"):
        assert "Not+done" in c.post("/jobs/1/preview", data={"seconds": bad}, headers=ORIGIN).headers["location"]
    assert c.post("/jobs/1/preview", data={"seconds": "5"}).status_code == 403  # cross-site: refused
    assert store.job(1).preview_seconds is None
    assert list(p.name for p in cfg.folders.inbox.iterdir() if not p.name.startswith(".")) == []
