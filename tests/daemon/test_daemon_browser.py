"""The dashboard in a real browser (Playwright driving Debian's chromium) against the real
service in a subprocess with the fake engine: live progress, ZIP, pause/cancel/retry, preview
clips ordered from the pages, upload, and a login on a non-loopback listener. Needs
``apt-get install chromium`` (CI installs it).

Set ``LIPSYNCD_SCREENSHOTS=docs/images`` to refresh the README's screenshots from this run.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import make_job, write_config, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_daemon_process import query, start, stop_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TOKEN = "e2e-token-0123456789abcdef"
FRAME_DELAY = 0.5
"""The fake engine's seconds per frame: 5 s per video, slow enough to watch progress move on a
busy machine."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, root: Path, **web) -> None:
        self.port = free_port()
        self.root = root
        self.config = write_config(root, web={"enabled": True, "port": self.port, **web},
                                   status={"folder": str(root)})
        self.db = root / "state" / "lipsyncd.sqlite3"
        self.proc = start(self.config, FRAME_DELAY)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self.listening, "the dashboard to listen", timeout=20)

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def state(self, name: str) -> str | None:
        rows = query(self.db, f"SELECT state FROM jobs WHERE name = '{name}' ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None

    def job_id(self, name: str) -> int:
        return query(self.db, f"SELECT id FROM jobs WHERE name = '{name}' ORDER BY id DESC LIMIT 1")[0][0]

    def stop(self) -> None:
        assert stop_service(self.proc) == 0, (self.root / "service.log").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("web"))
    yield svc
    svc.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 640}, accept_downloads=True)
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 1000
    target = os.environ.get("LIPSYNCD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def test_progress_moves_live_and_the_zip_holds_exactly_the_outputs(service, page, tmp_path):
    make_job(service.root / "inbox", "Interview 🎬", {"speech.wav": b"RIFF speech", "camera A.mp4": b"first",
                                                      "Grüße.mp4": b"second"})
    page.goto(service.url + "/")
    bar = page.locator("article.now .bar")
    expect(bar).to_be_visible(timeout=15_000)
    make_job(service.root / "inbox", "Product demo")  # waits while the interview renders
    expect(page.locator("article.now .current")).to_have_text("camera A.mp4", timeout=5_000)
    first = float(bar.get_attribute("aria-valuenow"))
    wait_for(lambda: float(bar.get_attribute("aria-valuenow") or 0) > first, "the bar to move without a reload")
    expect(page.locator("article.now .fps")).to_be_visible(timeout=5_000)
    waiting = page.locator("table.queue tr", has_text="Product demo")
    expect(waiting.locator("time")).to_have_count(1, timeout=10_000)  # its expected start, in local time
    expect(waiting.locator("td").first).to_have_text("1")
    screenshot(page, "dashboard.png", tmp_path)

    page.locator("article.now h3 a").click()  # the job page, while it renders
    expect(page.locator(".previews img")).to_have_count(2)
    assert service.state("Interview 🎬") == "running"  # the previews came before the render ended
    expect(page.locator(".previews figcaption").first).to_contain_text("a face in 10 of 10 frames")
    expect(page.locator("#job-state")).to_have_text("done", timeout=30_000)  # the page follows live
    expect(page.locator(".results video")).to_have_count(2)
    screenshot(page, "job.png", tmp_path)
    with page.expect_download() as download:
        page.click("#zip")
    archive = tmp_path / "results.zip"
    download.value.save_as(archive)
    outbox = service.root / "outbox" / "Interview 🎬"
    expected = {p.name: p.read_bytes() for p in outbox.iterdir() if p.suffix == ".mp4"}
    with zipfile.ZipFile(archive) as z:
        assert {n: z.read(n) for n in z.namelist()} == expected
    assert sorted(expected) == ["Grüße.mp4", "camera A.mp4"]
    share_status = service.root / "lipsyncd-status.txt"
    wait_for(lambda: "Interview 🎬: done → outbox" in share_status.read_text(encoding="utf-8"),
             "the share's status file", timeout=10)


def test_pause_cancel_retry_and_resume_from_the_pages(service, page):
    page.goto(service.url + "/")
    page.click("#pause")
    expect(page.locator("#paused")).to_be_visible()
    make_job(service.root / "inbox", "held")
    wait_for(lambda: service.state("held") == "queued", "the drop to be queued", timeout=15)
    page.wait_for_timeout(1000)
    assert service.state("held") == "queued"  # paused: it does not start
    page.locator("tr", has_text="held").locator("button[data-action^=cancel]").click()
    wait_for(lambda: service.state("held") == "cancelled", "the cancel", timeout=15)
    page.goto(service.url + "/history?state=cancelled")
    page.locator("tr", has_text="held").locator("button[data-action^=retry]").click()
    expect(page.locator(".msg")).to_contain_text("moved back to the inbox")
    wait_for(lambda: service.state("held") == "queued", "the retried job to be queued", timeout=15)
    page.goto(service.url + "/")
    page.click("#resume")
    wait_for(lambda: service.state("held") == "done", "the resumed job to run", timeout=30)


def test_a_preview_clip_is_ordered_for_a_waiting_job_and_for_a_finished_one(service, page):
    page.goto(service.url + "/")
    page.click("#pause")
    make_job(service.root / "inbox", "Clip first", {"speech.wav": b"RIFF clip", "face.mp4": b"clip me"})
    row = page.locator("table.queue tr", has_text="Clip first")
    row.locator("button[data-action^=preview]").click(timeout=15_000)  # "Preview 5 s", once it is queued
    expect(page.locator(".msg")).to_contain_text("preview clip before the full renders")
    page.click("#resume")
    wait_for(lambda: service.state("Clip first") == "done", "the job with its clip to render", timeout=40)
    assert (service.root / "outbox" / "Clip first" / "preview" / "face-preview.mp4").is_file()

    page.goto(f"{service.url}/jobs/{service.job_id('Clip first')}")
    page.fill("#preview-order input[name=seconds]", "2")
    page.click("#preview-order button")
    expect(page.locator(".msg")).to_contain_text("renders the first 2 s of its videos")
    wait_for(lambda: service.state("Clip first (preview)") == "skipped", "the preview-only job", timeout=40)
    page.goto(f"{service.url}/jobs/{service.job_id('Clip first (preview)')}")
    expect(page.locator("video.preview-clip")).to_have_count(1)
    assert (service.root / "outbox" / "Clip first" / "face.mp4").is_file()  # the first job's result stays


def test_the_upload_page_creates_a_job_that_renders(service, page, tmp_path):
    files = []
    for name, data in (("voice.wav", b"RIFF upload"), ("face 1.mp4", b"uploaded video")):
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    page.goto(service.url + "/upload")
    page.set_input_files("#files", files)
    page.fill("#name", "From the browser")
    page.click("#start")
    expect(page.locator("#upload-status")).to_contain_text("is in the inbox", timeout=10_000)
    wait_for(lambda: service.state("From the browser") == "done", "the uploaded job to render", timeout=30)
    result = service.root / "outbox" / "From the browser" / "face 1.mp4"
    assert result.read_bytes().endswith(b"uploaded video")


def test_a_non_loopback_listener_refuses_requests_without_a_login(tmp_path, page):
    svc = Service(tmp_path, host="0.0.0.0", token=TOKEN)
    try:
        url = f"http://127.0.0.1:{svc.port}"  # listening on every interface; asked on loopback only
        for path in ("/api/status", "/metrics", "/jobs/1/results.zip"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url + path, timeout=5)
            assert refused.value.code == 401
        page.goto(url + "/")
        expect(page.locator("h2")).to_have_text("Log in")
        page.fill("input[name=token]", "not the token")
        page.click("form.login button")
        expect(page.locator("#login-failed")).to_be_visible()
        page.fill("input[name=token]", TOKEN)
        page.click("form.login button")
        expect(page.locator("#pause")).to_be_visible()
        request = urllib.request.Request(url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        svc.stop()
