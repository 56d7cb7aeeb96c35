"""Model registry: paths, checks, resumable fetch (against a local server only), install, CLI."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from lipsyncd.engine import models
from lipsyncd.engine.cli_models import models_group
from lipsyncd.engine.errors import ModelError
from weights import write_layout_checkpoint

PAYLOAD = bytes(range(256)) * 12_000  # 3 MB, a few download chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Server:
    """A local file server with knobs for the failures a real download meets."""

    url: str = ""
    body: bytes = PAYLOAD
    cut_after: int | None = None
    """Send only this many bytes of a response, then drop the connection ..."""
    cuts_left: int = 0
    """... for this many responses."""
    honour_range: bool = True
    status: int = 200
    ranges: list[str | None] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.ranges.append(self.headers.get("Range"))
            if state.status != 200:
                self.send_error(state.status)
                return
            start = 0
            header = self.headers.get("Range")
            if header and state.honour_range:
                start = int(header.removeprefix("bytes=").rstrip("-"))
                if start >= len(state.body):
                    self.send_error(416)
                    return
            body = state.body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(state.body) - 1}/{len(state.body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cuts_left and state.cut_after is not None:
                state.cuts_left -= 1
                body = body[:state.cut_after]
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/wav2lip_gan.pth"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    """Point both models at the local server; the GAN model's checksum is the payload's."""
    gan = replace(models.REGISTRY["wav2lip_gan"], urls=(server.url,), sha256=PAYLOAD_SHA)
    plain = replace(models.REGISTRY["wav2lip"], urls=(server.url,))
    monkeypatch.setitem(models.REGISTRY, "wav2lip_gan", gan)
    monkeypatch.setitem(models.REGISTRY, "wav2lip", plain)


# --- paths and requirements -------------------------------------------------------------------

def test_registry_entries_are_well_formed() -> None:
    wav2lip = {name: entry for name, entry in models.REGISTRY.items() if name.startswith("wav2lip")}
    assert set(wav2lip) == {"wav2lip_gan", "wav2lip"}  # MuseTalk's entries: test_musetalk_registry.py
    for name, entry in wav2lip.items():
        assert entry.filename == f"{name}.pth"
        assert entry.urls and all(u.startswith("https://") for u in entry.urls)
        assert entry.sha256 is None or len(bytes.fromhex(entry.sha256)) == 32


def test_require_model_says_where_to_put_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        models.require_model(tmp_path, "wav2lip_gan")
    message = str(caught.value)
    assert str((tmp_path / "wav2lip_gan.pth").resolve()) in message
    assert "lipsyncd models fetch wav2lip_gan" in message
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    assert models.require_model(tmp_path, "wav2lip_gan") == tmp_path / "wav2lip_gan.pth"


def test_require_model_mentions_a_partial_download(tmp_path: Path) -> None:
    (tmp_path / "wav2lip.pth.part").write_bytes(b"x")
    with pytest.raises(ModelError, match="partial download"):
        models.require_model(tmp_path, "wav2lip")


def test_unknown_model_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="wav2lip_gan, wav2lip"):
        models.model_path(tmp_path, "wav2lip_hd")


# --- list and verify --------------------------------------------------------------------------

@pytest.mark.usefixtures("registry")
def test_list_models_reports_presence_size_and_checksum(tmp_path: Path) -> None:
    assert [(s.name, s.checksum, s.ok) for s in models.list_models(tmp_path)][:2] == [
        ("wav2lip_gan", "missing", False), ("wav2lip", "missing", False)]
    (tmp_path / "wav2lip_gan.pth").write_bytes(PAYLOAD[:-1] + b"?")
    (tmp_path / "wav2lip.pth").write_bytes(b"anything")
    gan, plain = models.list_models(tmp_path)[:2]
    assert (gan.present, gan.size, gan.checksum, gan.ok) == (True, len(PAYLOAD), "mismatch", False)
    assert "sha256" in gan.problem
    assert (plain.checksum, plain.ok) == ("unknown", True)  # list does not load checkpoints


@pytest.mark.usefixtures("registry")
def test_verify_without_published_checksum_checks_the_layout(tmp_path: Path) -> None:
    (tmp_path / "wav2lip.pth").write_bytes(b"<html>rate limited</html>")
    status = models.verify(tmp_path, "wav2lip")
    assert (status.checksum, status.ok) == ("unknown", False)
    assert "not a readable PyTorch checkpoint" in status.problem
    write_layout_checkpoint(tmp_path / "wav2lip.pth")
    assert models.verify(tmp_path, "wav2lip").ok


# --- fetch ------------------------------------------------------------------------------------

@pytest.mark.usefixtures("registry")
def test_fetch_downloads_checks_and_renames(tmp_path: Path, server: Server) -> None:
    seen: list[tuple[int, int | None]] = []
    path = models.fetch(tmp_path / "models", "wav2lip_gan", progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "models" / "wav2lip_gan.pth"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "models" / "wav2lip_gan.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert models.fetch(tmp_path / "models", "wav2lip_gan") == path  # present and valid: no download
    assert len(server.ranges) == 1


@pytest.mark.usefixtures("registry")
def test_fetch_resumes_after_a_dropped_connection(tmp_path: Path, server: Server) -> None:
    server.cut_after, server.cuts_left = 1_000_000, 1
    path = models.fetch(tmp_path, "wav2lip_gan")
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=1000000-"]


@pytest.mark.usefixtures("registry")
def test_fetch_resumes_a_partial_file_left_by_an_earlier_run(tmp_path: Path, server: Server) -> None:
    (tmp_path / "wav2lip_gan.pth.part").write_bytes(PAYLOAD[:12_345])
    assert models.fetch(tmp_path, "wav2lip_gan").read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=12345-"]


@pytest.mark.usefixtures("registry")
def test_fetch_keeps_the_part_when_the_network_keeps_failing(tmp_path: Path, server: Server) -> None:
    server.cut_after, server.cuts_left = 500_000, models.ATTEMPTS_PER_URL
    with pytest.raises(ModelError, match="run the command again to resume"):
        models.fetch(tmp_path, "wav2lip_gan")
    part = tmp_path / "wav2lip_gan.pth.part"
    assert part.stat().st_size == models.ATTEMPTS_PER_URL * 500_000
    assert not (tmp_path / "wav2lip_gan.pth").exists()
    assert models.fetch(tmp_path, "wav2lip_gan").read_bytes() == PAYLOAD  # network back: resumes
    assert server.ranges[-1] == f"bytes={models.ATTEMPTS_PER_URL * 500_000}-"


@pytest.mark.usefixtures("registry")
def test_fetch_restarts_when_the_server_ignores_range(tmp_path: Path, server: Server) -> None:
    server.honour_range = False
    (tmp_path / "wav2lip_gan.pth.part").write_bytes(b"stale bytes from another file")
    assert models.fetch(tmp_path, "wav2lip_gan").read_bytes() == PAYLOAD


@pytest.mark.usefixtures("registry")
def test_fetch_with_a_complete_part_gets_416_and_finishes(tmp_path: Path, server: Server) -> None:
    (tmp_path / "wav2lip_gan.pth.part").write_bytes(PAYLOAD)
    assert models.fetch(tmp_path, "wav2lip_gan").read_bytes() == PAYLOAD


@pytest.mark.usefixtures("registry")
def test_fetch_deletes_a_download_with_the_wrong_checksum(tmp_path: Path, server: Server) -> None:
    server.body = PAYLOAD[:-1] + b"?"
    with pytest.raises(ModelError, match="rejected and deleted: it is not the official wav2lip_gan.pth"):
        models.fetch(tmp_path, "wav2lip_gan")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("registry")
def test_fetch_without_checksum_rejects_a_non_checkpoint(tmp_path: Path, server: Server) -> None:
    server.body = b"<html>Sign in to continue</html>"
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        models.fetch(tmp_path, "wav2lip")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("registry")
def test_fetch_reports_http_errors(tmp_path: Path, server: Server) -> None:
    server.status = 404
    with pytest.raises(ModelError, match="HTTP 404"):
        models.fetch(tmp_path, "wav2lip_gan")
    assert len(server.ranges) == 1  # an HTTP refusal is not retried


@pytest.mark.usefixtures("registry")
def test_fetch_from_an_explicit_url(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = replace(models.REGISTRY["wav2lip_gan"], urls=("https://unreachable.invalid/x.pth",))
    monkeypatch.setitem(models.REGISTRY, "wav2lip_gan", entry)
    assert models.fetch(tmp_path, "wav2lip_gan", url=server.url).read_bytes() == PAYLOAD


# --- install ----------------------------------------------------------------------------------

@pytest.mark.usefixtures("registry")
def test_install_checks_then_copies(tmp_path: Path) -> None:
    good = tmp_path / "download.bin"
    good.write_bytes(PAYLOAD)
    assert models.install_file(tmp_path / "m", "wav2lip_gan", good).read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["wav2lip_gan.pth"]  # no temp left
    assert models.install_file(tmp_path / "m", "wav2lip", write_layout_checkpoint(tmp_path / "w.pth")).is_file()


@pytest.mark.usefixtures("registry")
def test_install_refuses_a_wrong_file_and_leaves_it_alone(tmp_path: Path) -> None:
    bad = tmp_path / "wav2lip_gan.pth.zip"
    bad.write_bytes(b"not it")
    with pytest.raises(ModelError, match="was not installed"):
        models.install_file(tmp_path / "m", "wav2lip_gan", bad)
    assert bad.read_bytes() == b"not it"
    assert not (tmp_path / "m" / "wav2lip_gan.pth").exists()


# --- CLI --------------------------------------------------------------------------------------

@pytest.mark.usefixtures("registry")
def test_cli_list_json_and_models_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "wav2lip_gan.pth").write_bytes(PAYLOAD)
    monkeypatch.delenv("LIPSYNCD_MODELS_DIR", raising=False)

    def listed(args: list[str], obj: dict[str, str] | None = None, env: dict[str, str] | None = None) -> dict:
        result = runner.invoke(models_group, ["list", "--json", *args], obj=obj, env=env)
        assert result.exit_code == 0, result.output
        return {entry["name"]: entry for entry in json.loads(result.output)}

    assert listed(["--models-dir", str(tmp_path / "a")])["wav2lip_gan"]["checksum"] == "ok"
    assert listed([], env={"LIPSYNCD_MODELS_DIR": str(tmp_path / "a")})["wav2lip_gan"]["ok"]
    from_config = listed([], obj={"models_dir": str(tmp_path / "a")})
    assert from_config["wav2lip_gan"]["path"] == str(tmp_path / "a" / "wav2lip_gan.pth")
    monkeypatch.chdir(tmp_path)
    assert listed([])["wav2lip"]["path"] == "var/models/wav2lip.pth"


@pytest.mark.usefixtures("registry")
def test_cli_fetch_verify_install(tmp_path: Path, server: Server) -> None:
    runner = CliRunner()
    folder = ["--models-dir", str(tmp_path)]
    result = runner.invoke(models_group, ["fetch", "wav2lip_gan", "--url", server.url, *folder])
    assert result.exit_code == 0 and "ready at" in result.output, result.output
    assert runner.invoke(models_group, ["verify", "wav2lip_gan", *folder]).exit_code == 0

    (tmp_path / "wav2lip.pth").write_bytes(b"junk")
    result = runner.invoke(models_group, ["verify", "--json", *folder])
    assert result.exit_code == 1
    assert {e["name"]: e["ok"] for e in json.loads(result.output)} == {"wav2lip_gan": True, "wav2lip": False}

    checkpoint = write_layout_checkpoint(tmp_path / "elsewhere.pth")
    result = runner.invoke(models_group, ["install", "wav2lip", str(checkpoint), *folder])
    assert result.exit_code == 0, result.output
    assert runner.invoke(models_group, ["verify", *folder]).exit_code == 0


@pytest.mark.usefixtures("registry")
def test_cli_errors_are_plain_messages(tmp_path: Path, server: Server) -> None:
    server.status = 404
    result = CliRunner().invoke(models_group, ["fetch", "wav2lip_gan", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Could not download wav2lip_gan.pth") and "Traceback" not in result.output
    result = CliRunner().invoke(models_group, ["verify", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1 and "No model file is present" in result.output
