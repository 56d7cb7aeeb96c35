"""The status files on the share: what they say, atomic replacement, throttling, failures."""

from __future__ import annotations

import threading

from lipsyncd.daemon.sharestatus import HTML_NAME, TEXT_NAME, ShareStatus, render_text, write_atomic


def view(paused: bool = False, percent: float = 42.0) -> dict:
    return {"now": "2026-03-01T14:05:09+00:00", "paused": paused, "jobs": [
        {"name": "Interview", "state": "running", "percent": percent, "current_video": "a.mp4", "job_eta_s": 190},
        {"name": "Promo <b>", "state": "queued", "queue_position": 1},
        {"name": "Teaser", "state": "queued", "queue_position": 3},
        {"name": "Old", "state": "done", "message": None},
        {"name": "Bad", "state": "failed", "message": "No face was found in a.mp4."},
    ]}


def test_the_text_says_where_each_job_is():
    text = render_text(view())
    assert text.splitlines() == [
        "lipsyncd status at 2026-03-01T14:05:09+00:00", "",
        "Interview: rendering 42 % (a.mp4, 3 min 10 s left)",
        "Promo <b>: queued 1st", "Teaser: queued 3rd", "Old: done → outbox",
        "Bad: failed → error folder: No face was found in a.mp4."]
    assert "queued 1st (queue paused)" in render_text(view(paused=True))


def test_files_are_written_throttled_and_only_when_changed(tmp_path):
    share = ShareStatus(tmp_path, min_interval_s=5)
    assert share.update(view(), now=0.0)
    assert "Promo &lt;b&gt;: " not in (tmp_path / HTML_NAME).read_text()  # escaped in a table cell instead
    assert "<td>Promo &lt;b&gt;</td>" in (tmp_path / HTML_NAME).read_text()
    assert not share.update(view(percent=50), now=1.0)  # too soon
    assert not share.update(view(), now=10.0)  # nothing changed
    assert share.update(view(percent=50), now=10.0)
    assert "rendering 50 %" in (tmp_path / TEXT_NAME).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [HTML_NAME, TEXT_NAME]  # no temporary left


def test_a_reader_never_sees_half_a_file(tmp_path):
    target = tmp_path / TEXT_NAME
    versions = [("A" * 200_000) + "\n", ("B" * 300_000) + "\n"]
    write_atomic(target, versions[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(60):
            write_atomic(target, versions[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        assert target.read_text() in versions
        reads += 1
    thread.join()
    assert reads > 0


def test_an_unwritable_folder_is_logged_not_raised(tmp_path, caplog):
    share = ShareStatus(tmp_path / "missing")
    assert not share.update(view(), now=0.0)
    assert not share.update(view(percent=1), now=10.0)
    assert sum("cannot write the status files" in r.message for r in caplog.records) == 1
