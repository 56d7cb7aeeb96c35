"""Wav2Lip in fp32 through OpenVINO on a CPU (``runtime: auto``/``openvino``): the reference's
numbers, the converted network kept per checkpoint and first row, and which runtime a render gets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from media_tools import write_wav
from weights import golden_inputs, write_checkpoint

from lipsyncd.engine import LipSyncEngine, RenderOptions, media, openvino_cpu
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.infer import LOWER_FACE_ROW, LOWEST_ROW, MouthGenerator
from lipsyncd.engine.models import file_sha256
from lipsyncd.engine.openvino_cpu import OpenVinoWav2Lip
from lipsyncd.engine.wav2lip import load_wav2lip

FIXTURES = Path(__file__).parent / "fixtures" / "wav2lip"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth")


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino")


@pytest.mark.parametrize("first_row", [0, LOWER_FACE_ROW])
def test_openvino_fp32_reproduces_the_reference_output(checkpoint, converted_cache, first_row):
    network = OpenVinoWav2Lip(load_wav2lip(checkpoint), streams=1, cache_dir=converted_cache, model_key="rule")
    mel, face = golden_inputs()
    out = network(mel, face, first_row).numpy()
    assert out.shape == (4, 3, 96 - first_row, 96)
    assert np.abs(out - np.load(FIXTURES / "model_output.npy")[:, :, first_row:]).max() < 2e-5


def test_the_converted_network_is_read_back_not_converted_again(checkpoint, converted_cache, monkeypatch):
    """Each first row's network was kept by the test above; a new process (a new instance here)
    reads it back instead of converting (~3 CPU s), and gives the same numbers."""
    import openvino as ov

    names = {p.name for p in converted_cache.glob("*.xml")}
    assert names == {f"wav2lip-rule-rows{row}-v{openvino_cpu.CACHE_VERSION}.xml" for row in (0, LOWER_FACE_ROW)}
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    network = OpenVinoWav2Lip(load_wav2lip(checkpoint), streams=1, cache_dir=converted_cache, model_key="rule")
    mel, face = golden_inputs()
    assert np.abs(network(mel, face, 0).numpy() - np.load(FIXTURES / "model_output.npy")).max() < 2e-5


@pytest.mark.parametrize(("streams", "threads"), [(2, 1), (1, 2)])
def test_streams_and_threads_are_the_plans(checkpoint, converted_cache, streams, threads):
    """One stream per network worker, each with the worker's threads (a CPU's plan: one thread each)."""
    from lipsyncd.engine.openvino_cpu import Compiled, ConvertedWav2Lip

    compiled = Compiled(ConvertedWav2Lip(load_wav2lip(checkpoint), converted_cache, "rule")(0), streams, threads)
    assert compiled._compiled.get_property("NUM_STREAMS") == streams
    assert compiled._compiled.get_property("INFERENCE_NUM_THREADS") == streams * threads


def test_a_new_row_replaces_the_last_ones_compiled_network(checkpoint, converted_cache):
    """A render asks for one row besides whole faces; the next video may ask for another, and the
    network compiled for the row before (~0.4 GB) is let go."""
    network = OpenVinoWav2Lip(load_wav2lip(checkpoint), streams=1, cache_dir=converted_cache, model_key="rule")
    mel, face = golden_inputs()
    for row in (0, LOWER_FACE_ROW, LOWER_FACE_ROW + 4):
        out = network(mel, face, row).numpy()
        assert np.abs(out - np.load(FIXTURES / "model_output.npy")[:, :, row:]).max() < 2e-5
    assert set(network._compiled) == {0, LOWER_FACE_ROW + 4}


def test_a_damaged_entry_is_converted_again(checkpoint, tmp_path):
    network = OpenVinoWav2Lip(load_wav2lip(checkpoint), streams=1, cache_dir=tmp_path, model_key="rule")
    entry = tmp_path / f"wav2lip-rule-rows0-v{openvino_cpu.CACHE_VERSION}.xml"
    entry.write_text("<net half written")
    mel, face = golden_inputs()
    assert np.abs(network(mel, face, 0).numpy() - np.load(FIXTURES / "model_output.npy")).max() < 2e-5
    assert entry.read_text().startswith("<?xml")  # replaced by a whole one


def test_several_workers_call_it_at_once(checkpoint):
    """The frame loop's network workers share one instance: one request per thread."""
    from concurrent.futures import ThreadPoolExecutor

    network = OpenVinoWav2Lip(load_wav2lip(checkpoint), streams=2)
    generator = MouthGenerator(load_wav2lip(checkpoint), torch.device("cpu"), 8, network)
    crops = np.load(FIXTURES / "faces_bgr_uint8.npy")
    mels = np.load(FIXTURES / "model_input_mel.npy")[:, 0]
    with ThreadPoolExecutor(2) as pool:
        faces = list(pool.map(lambda _: generator(crops, mels), range(4)))
    assert all(np.array_equal(f, faces[0]) for f in faces)
    with torch.inference_mode():
        torch_faces = MouthGenerator(load_wav2lip(checkpoint), torch.device("cpu"), 8)(crops, mels)
    assert np.abs(faces[0].astype(int) - torch_faces.astype(int)).max() <= 1  # float rounding at .5


def test_the_runtime_a_cpu_render_gets(models_dir, tmp_path, monkeypatch):
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path)
    assert isinstance(engine._generator(RenderOptions()).network, OpenVinoWav2Lip)  # auto, installed, a cache
    torch_only = engine._generator(RenderOptions(runtime="torch"))
    assert torch_only.network is torch_only.model
    uncached = LipSyncEngine(models_dir, device="cpu")  # auto: a conversion every run would not pay
    assert uncached._generator(RenderOptions()).network is uncached._generator(RenderOptions()).model
    assert isinstance(uncached._generator(RenderOptions(runtime="openvino")).network, OpenVinoWav2Lip)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the openvino extra were not installed
    bare = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path)
    assert bare._generator(RenderOptions()).network is bare._generator(RenderOptions()).model  # auto: torch
    with pytest.raises(ModelError, match=r"runtime openvino needs OpenVINO.*lipsyncd\[openvino\].*auto or torch"):
        bare.check_ready(RenderOptions(runtime="openvino"))


def test_a_filled_cache_spares_reading_the_checkpoint(models_dir, tmp_path, monkeypatch):
    """The converted network is all OpenVINO needs: with it in the cache, a new engine (a new
    process, a worker) does not read the checkpoint (nor keep its ~140 MB)."""
    from lipsyncd.engine import engine as engine_module

    mel, face = golden_inputs()
    first = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path)._generator(RenderOptions())
    converted = first.network(mel, face, LOWER_FACE_ROW).numpy()  # converts and keeps rows from 32
    assert first.model is None  # the torch network served the conversion only
    monkeypatch.setattr(engine_module, "load_wav2lip", lambda *a, **k: pytest.fail("the checkpoint was read"))
    again = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path)._generator(RenderOptions())
    assert np.array_equal(again.network(mel, face, LOWER_FACE_ROW).numpy(), converted)
    golden = np.load(FIXTURES / "model_output.npy")[:, :, LOWER_FACE_ROW:]
    assert np.abs(converted - golden).max() < 2e-5


def test_runtime_is_validated():
    assert RenderOptions.from_mapping({"runtime": "torch"}).runtime == "torch"
    with pytest.raises(ValueError, match="engine.runtime: must be one of auto, torch, openvino; got 'onnx'"):
        RenderOptions.from_mapping({"runtime": "onnx"})


@pytest.mark.slow
def test_a_render_through_openvino_is_torchs_within_rounding(models_dir, face_clip, speech_file, tmp_path):
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "cache")
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: int(0.6 * SAMPLE_RATE)]))
    for runtime in ("torch", "openvino"):
        engine.render(audio, face_clip, tmp_path / f"{runtime}.mp4", RenderOptions(runtime=runtime))
    key = file_sha256(models_dir / "wav2lip_gan.pth")[:16]  # one row, planned from this clip's faces
    kept = [p.name for p in (tmp_path / "cache" / "openvino").glob("wav2lip-*.xml")]
    assert len(kept) == 1 and kept[0].startswith(f"wav2lip-{key}-rows")
    assert int(kept[0].split("-rows")[1].split("-")[0]) >= LOWEST_ROW
    frames = {r: list(media.read_frames(tmp_path / f"{r}.mp4", media.probe(tmp_path / f"{r}.mp4"), range(15)))
              for r in ("torch", "openvino")}
    source = list(media.read_frames(face_clip, media.probe(face_clip), range(15)))
    changed = [np.abs(s.astype(int) - t.astype(int)).mean() for s, t in zip(source, frames["torch"], strict=True)]
    apart = [np.abs(o.astype(int) - t.astype(int)).mean() for o, t in zip(frames["openvino"], frames["torch"],
                                                                          strict=True)]
    assert min(changed) > 10 * max(apart)  # the mouths are re-drawn, and the same through both runtimes
