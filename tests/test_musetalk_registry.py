"""MuseTalk's files in the model registry: entries, layout checks, install, and the CLI's
``models list|fetch|verify|install`` (downloads from a local server only)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lipsyncd.engine import models
from lipsyncd.engine.cli_models import models_group
from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.musetalk import layout
from musetalk_weights import shapes_only, write_official_layout

MUSETALK = models.BUNDLES["musetalk"]


def test_every_official_file_has_a_registry_entry() -> None:
    entries = [models.model_spec(name) for name in MUSETALK]
    assert sorted(e.filename for e in entries) == sorted(layout.OFFICIAL_FILES)
    for entry in entries:
        assert entry.urls and all(u.startswith("https://huggingface.co/") for u in entry.urls)
        assert entry.urls[0].endswith("/" + Path(entry.filename).name)
        assert entry.approx_size and entry.about
    assert models.model_spec("musetalk_unet").approx_size > 3e9
    assert models.bundle_members("musetalk") == MUSETALK
    assert models.bundle_members("wav2lip") == ("wav2lip",)


def test_verify_checks_each_file_by_its_layout(tmp_path: Path) -> None:
    write_official_layout(tmp_path)
    statuses = [models.verify(tmp_path, name) for name in MUSETALK]
    assert [(s.present, s.checksum, s.problem) for s in statuses] == [(True, "unknown", None)] * 7
    state = shapes_only("unet")
    state["conv_in.weight"] = torch.empty(320, 4, 3, 3, device="meta")  # a 4-channel (plain SD) UNet
    torch.save(state, tmp_path / layout.UNET_WEIGHTS)
    (tmp_path / layout.VAE_CONFIG).write_text('{"latent_channels": 16}')
    unet, vae_config = models.verify(tmp_path, "musetalk_unet"), models.verify(tmp_path, "sd_vae_config")
    assert not unet.ok and "'conv_in.weight' has shape (320, 4, 3, 3), expected (320, 8, 3, 3)" in unet.problem
    assert not vae_config.ok and "lacks the field" in vae_config.problem


def test_install_puts_a_checked_file_into_its_sub_folder(tmp_path: Path) -> None:
    source = write_official_layout(tmp_path / "downloads")
    target = tmp_path / "models"
    path = models.install_file(target, "whisper_tiny", source / layout.WHISPER_WEIGHTS)
    assert path == target / layout.WHISPER_WEIGHTS and path.read_bytes() == (source / layout.WHISPER_WEIGHTS).read_bytes()
    with pytest.raises(ModelError, match="was not installed"):
        models.install_file(target, "sd_vae", source / layout.WHISPER_WEIGHTS)
    assert not (target / layout.VAE_WEIGHTS).exists()
    assert [p.name for p in (target / "whisper").iterdir()] == ["pytorch_model.bin"]  # no temporaries left


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local web server holding the official files; the registry's MuseTalk URLs point at it."""
    served = write_official_layout(tmp_path / "served")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    for name in MUSETALK:
        entry = models.REGISTRY[name]
        monkeypatch.setitem(models.REGISTRY, name, replace(entry, urls=(f"{base}/{entry.filename}",)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()


def test_cli_fetches_verifies_and_lists_all_of_musetalk(tmp_path: Path, mirror: Path) -> None:
    runner = CliRunner()
    folder = str(tmp_path / "models")
    result = runner.invoke(models_group, ["fetch", "musetalk", "--models-dir", folder])
    assert result.exit_code == 0, result.output
    for relative in layout.OFFICIAL_FILES:
        assert (tmp_path / "models" / relative).read_bytes() == (mirror / relative).read_bytes()
    assert layout.require_files(folder)
    result = runner.invoke(models_group, ["verify", "musetalk", "--models-dir", folder])
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok ") == 7
    (tmp_path / "models" / layout.WHISPER_CONFIG).write_text("{}")
    result = runner.invoke(models_group, ["verify", "musetalk", "--models-dir", folder])
    assert result.exit_code == 1 and "lacks the field 'd_model'" in result.output
    listing = runner.invoke(models_group, ["list", "--models-dir", folder]).output
    assert all(name in listing for name in MUSETALK)
    result = runner.invoke(models_group, ["fetch", "musetalk", "--url", "http://x/y", "--models-dir", folder])
    assert result.exit_code != 0 and "stands for 7 models" in result.output


def test_cli_installs_one_file(tmp_path: Path) -> None:
    source = write_official_layout(tmp_path / "downloads")
    folder = tmp_path / "models"
    result = CliRunner().invoke(models_group, ["install", "musetalk_unet_config",
                                               str(source / layout.UNET_CONFIG), "--models-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / layout.UNET_CONFIG).is_file()


def test_fetch_without_the_libraries_stops_before_downloading(tmp_path: Path, mirror: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_diffusers(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "diffusers":
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ModelError, match=r"pip install 'lipsyncd\[musetalk\]'"):
        models.fetch(tmp_path / "models", "musetalk_unet")
    assert not (tmp_path / "models").exists()
