"""The dashboard in process (Starlette's test client): pages, actions, files, ZIP, auth, CSRF, upload."""

from __future__ import annotations

import dataclasses
import io
import os
import time
import zipfile
from pathlib import Path

import yaml
from starlette.testclient import TestClient

from lipsyncd.daemon import slot_status
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.executor import SlotState
from lipsyncd.daemon.filing import OUTPUT_DIR
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.web.app import create_app

ORIGIN = {"Origin": "http://127.0.0.1"}
TOKEN = "0123456789abcdef-token"


def client(cfg: Config, **web) -> TestClient:
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=True, **web))
    return TestClient(create_app(cfg), base_url="http://127.0.0.1", follow_redirects=False)


def running_job(cfg: Config, store: Store, name: str = "Interview 🎬", outputs: dict[str, bytes] | None = None) -> int:
    job = store.begin_intake(name, cfg.folders.processing)
    outputs = outputs or {"a.mp4": b"first result", "b.mp4": b"second result"}
    store.enqueue(job.id, audio="s.wav", videos=[(v, v, None) for v in outputs], naming="{stem}.mp4", priority=0,
                  options={}, content_hash="h")
    work = Path(store.job(job.id).work_dir)
    (work / "input").mkdir(parents=True)
    (work / "input" / "s.wav").write_bytes(b"speech")
    (work / OUTPUT_DIR).mkdir()
    store.claim(job.id)
    for task in store.tasks(job.id):
        store.task_started(task.id)
        (work / OUTPUT_DIR / task.output_name).write_bytes(outputs[task.output_name])
        store.task_finished(task.id, "done")
    return job.id


def test_dashboard_shows_the_running_job_with_stage_speed_and_eta(cfg, store):
    job_id = running_job(cfg, store, outputs={"a.mp4": b"x"})
    task = store.tasks(job_id)[0]
    store.db.execute("UPDATE tasks SET state = 'running' WHERE id = ?", [task.id])
    store.task_progress(task.id, 40, 100, "render", 8.0, 7.5)
    page = client(cfg).get("/")
    assert page.status_code == 200
    assert "Interview 🎬" in page.text and 'class="stage">render' in page.text and ">8.0</span> fps" in page.text
    assert 'aria-valuenow="40.0"' in page.text
    status = client(cfg).get("/api/status").json()
    assert status["jobs"][0]["stage"] == "render" and status["jobs"][0]["video_eta_s"] <= 8  # rounded to the second


def test_results_stream_as_one_zip_with_unicode_names(cfg, store):
    job_id = running_job(cfg, store, outputs={"Grüße 🎬.mp4": b"A" * 3_000_000, "b.mp4": b"second"})
    response = client(cfg).get(f"/jobs/{job_id}/results.zip")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert "filename*=UTF-8''Interview%20%F0%9F%8E%AC.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["Grüße 🎬.mp4", "b.mp4"]
        assert archive.read("Grüße 🎬.mp4") == b"A" * 3_000_000 and archive.testzip() is None
        assert all(i.flag_bits & 0x08 for i in archive.infolist())  # written as a stream (data descriptors)


def test_a_result_is_served_with_ranges_so_browsers_can_seek(cfg, store):
    job_id = running_job(cfg, store, outputs={"a.mp4": bytes(range(256)) * 4})
    page = client(cfg).get(f"/jobs/{job_id}")
    assert '<video controls preload="metadata" src="/jobs/1/files/work/output/a.mp4">' in page.text
    part = client(cfg).get(f"/jobs/{job_id}/files/work/output/a.mp4", headers={"Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == bytes(range(256))
    assert part.headers["content-range"] == "bytes 256-511/1024"


def test_no_url_reaches_outside_the_jobs_folders(cfg, store):
    job_id = running_job(cfg, store)
    (cfg.folders.state / "secret.txt").write_text("no")
    c = client(cfg)
    for rel in ("../../../state/secret.txt", "..%2F..%2F..%2Fstate%2Fsecret.txt", "/etc/passwd"):
        assert c.get(f"/jobs/{job_id}/files/work/{rel}").status_code == 404
    assert c.get(f"/jobs/{job_id}/files/elsewhere/input/s.wav").status_code == 404


def test_actions_pause_move_cancel_and_retry(cfg, store):
    ids = []
    for name in ("first", "second"):
        job = store.begin_intake(name, cfg.folders.processing)
        store.enqueue(job.id, audio="s.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=0,
                      options={}, content_hash=name)
        ids.append(job.id)
    c = client(cfg)
    r = c.post("/queue/pause", headers={**ORIGIN, "Referer": "http://127.0.0.1/"})
    assert r.status_code == 303 and r.headers["location"].startswith("/?msg=Queue+paused") and store.paused
    assert "Queue paused" in c.get("/").text
    c.post(f"/jobs/{ids[1]}/up", headers=ORIGIN)
    assert [j.id for j in store.jobs_in("queued")] == [ids[1], ids[0]]
    c.post(f"/jobs/{ids[0]}/cancel", headers=ORIGIN)
    assert store.cancel_requested(ids[0])
    r = c.post(f"/jobs/{ids[1]}/retry", headers={**ORIGIN, "Referer": f"http://127.0.0.1/jobs/{ids[1]}"})
    assert r.headers["location"].startswith(f"/jobs/{ids[1]}?msg=Not+done") and "does+not+need+a+retry" in \
        r.headers["location"]
    c.post("/queue/resume", headers=ORIGIN)
    assert not store.paused


def test_without_a_login_only_loopback_names_are_answered(cfg, store):
    c = client(cfg)
    assert c.get("/api/status", headers={"Host": "localhost:8765"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "[::1]:8765"}).status_code == 200
    refused = c.get("/api/status", headers={"Host": "attacker.example"})  # DNS rebinding
    assert refused.status_code == 403 and "set web.token" in refused.text


def test_cross_site_posts_are_refused(cfg, store):
    c = client(cfg)
    assert c.post("/queue/pause").status_code == 403  # no Origin, no Referer
    assert c.post("/queue/pause", headers={"Origin": "http://evil.example"}).status_code == 403
    assert not store.paused


def test_a_login_is_required_when_credentials_are_configured(cfg, store):
    c = client(cfg, host="0.0.0.0", token=TOKEN)
    assert c.get("/api/status").status_code == 401
    assert c.get("/metrics").status_code == 401
    assert c.get("/", headers={"Accept": "text/html"}).headers["location"] == "/login?next=/"
    assert c.post("/queue/pause", headers=ORIGIN).status_code == 401 and not store.paused
    assert c.get("/healthz").text == "ok\n"
    assert c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong"}).status_code == 401
    assert "did not match" in c.post("/login", data={"token": "nope"}, headers=ORIGIN).text
    r = c.post("/login?next=/history", data={"token": TOKEN}, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/history"
    assert "samesite=strict" in r.headers["set-cookie"].lower() and "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/api/status").status_code == 200  # the session cookie
    assert c.post("/queue/pause", headers={"Origin": "http://evil.example"}).status_code == 403


def test_basic_auth_with_user_and_password(cfg, store):
    c = client(cfg, host="0.0.0.0", username="ann", password="s3cret")
    assert c.get("/api/status", auth=("ann", "wrong")).status_code == 401
    assert c.get("/api/status", auth=("ann", "s3cret")).status_code == 200


def test_metrics_in_prometheus_text_format(cfg, store):
    running_job(cfg, store, outputs={"a.mp4": b"x"})
    text = client(cfg).get("/metrics").text
    assert "# TYPE lipsyncd_queue_length gauge\nlipsyncd_queue_length 0\n" in text
    assert "lipsyncd_running_jobs 1\n" in text and 'lipsyncd_jobs_finished{state="done"} 0\n' in text
    assert "lipsyncd_render_fps" in text and "lipsyncd_job_seconds" in text
    assert "lipsyncd_slots 0\n" in text and "lipsyncd_slots_busy 0\n" in text  # no slot before the first job


def test_the_queue_page_and_metrics_show_each_slot(cfg, store):
    slot_status.write(cfg.folders.state, [SlotState("cpu0", "render1", 3, "interview.mp4", 120, 300, 24.46),
                                          SlotState("cpu1", "render1")])
    c = client(cfg)
    text = c.get("/metrics").text
    assert "lipsyncd_slots 2\n" in text and "lipsyncd_slots_busy 1\n" in text
    page = c.get("/").text
    assert "cpu0 (render1): job 3 · interview.mp4 · frame 120 of 300 · 24.5 fps" in page
    assert "cpu1 (render1): idle" in page


def test_history_filters(cfg, store):
    for name, state in (("Promo", "done"), ("Interview", "failed")):
        store.db.execute("INSERT INTO jobs (name, state, work_dir) VALUES (?, ?, 'w')", [name, state])
    page = client(cfg).get("/history?state=failed&name=inter").text
    assert "Interview" in page and "Promo" not in page


def test_upload_becomes_a_job_folder_in_the_inbox_only_when_complete(cfg):
    c = client(cfg)
    upload_id = c.post("/upload/start", headers=ORIGIN).json()["id"]
    for rel, data in (("voice.wav", b"speech"), ("Caméra A.mp4", b"video"), ("notes/x.txt", b"n")):
        assert c.put(f"/upload/{upload_id}/files/{rel}", content=data, headers=ORIGIN).status_code == 200
    assert [p.name for p in cfg.folders.inbox.iterdir() if not p.name.startswith(".")] == []  # not yet visible
    assert c.put(f"/upload/{upload_id}/files/../escape.txt", content=b"x", headers=ORIGIN).status_code in (400, 404)
    r = c.post(f"/upload/{upload_id}/finish", data={"name": "Web job", "priority": "3", "loop": "loop",
                                                     "preview_seconds": "5", "preview_only": "1"}, headers=ORIGIN)
    assert r.json()["name"] == "Web job"
    job = cfg.folders.inbox / "Web job"
    assert sorted(p.relative_to(job).as_posix() for p in job.rglob("*") if p.is_file()) == \
        ["Caméra A.mp4", "job.yaml", "notes/x.txt", "voice.wav"]
    assert yaml.safe_load((job / "job.yaml").read_text()) == {"priority": 3, "preview_seconds": 5, "preview_only": True,
                                                                "engine": {"loop": "loop"}}
    assert list((cfg.folders.inbox / ".uploading").iterdir()) == []


def test_an_abandoned_upload_is_removed_after_a_day(cfg):
    from lipsyncd.daemon.web import upload

    old = upload.start(cfg.folders.inbox)
    upload.target(cfg.folders.inbox, old, "a.wav").write_bytes(b"half")
    old_dir = cfg.folders.inbox / upload.UPLOADING / old
    day_ago = time.time() - upload.STALE_S - 60
    for path in (old_dir, *old_dir.rglob("*")):
        os.utime(path, (day_ago, day_ago))
    recent = upload.start(cfg.folders.inbox)
    upload.start(cfg.folders.inbox)
    assert not old_dir.exists() and (cfg.folders.inbox / upload.UPLOADING / recent).is_dir()


def test_uploads_can_be_switched_off(cfg):
    c = client(cfg, upload=False)
    assert c.get("/upload").status_code == 404
    assert c.post("/upload/start", headers=ORIGIN).status_code == 404


def test_a_waiting_job_offers_a_preview_on_the_queue_and_its_page(cfg, store):
    job = store.begin_intake("waiting", cfg.folders.processing)
    store.enqueue(job.id, audio="s.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=0,
                  options={}, content_hash="w")
    c = client(cfg)
    assert f'<button data-action="preview-{job.id}"' in c.get("/").text and ">Preview 5 s</button>" in c.get("/").text
    assert 'id="preview-order"' in c.get(f"/jobs/{job.id}").text
    locked = client(cfg, host="0.0.0.0", token=TOKEN)
    assert locked.post(f"/jobs/{job.id}/preview", data={"seconds": "5"}, headers=ORIGIN).status_code == 401
    r = c.post(f"/jobs/{job.id}/preview", data={"seconds": "5"}, headers={**ORIGIN, "Referer": "http://127.0.0.1/"})
    assert r.status_code == 303 and r.headers["location"].startswith("/?msg=Job+1")
    assert 'id="preview-ordered">preview clip 5 s' in c.get(f"/jobs/{job.id}").text
