"""The opt-in int8 Wav2Lip (``precision: int8``, OpenVINO): how far its picture may stray from
fp32, and that the option reaches the network.

The bound is measured on the conformance rule's weights (no trained weights can be downloaded
here) and on the fixture's real face crops; ``benchmarks/network_levers.py`` measured ~50-54 dB
mouth PSNR there, so 40 dB leaves room for other CPUs' rounding but catches a broken
quantisation (uncalibrated ranges, swapped inputs or channels: 10-25 dB).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from media_tools import write_wav
from weights import rule_state_dict

from lipsyncd.engine import LipSyncEngine, RenderOptions
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.infer import CPU_BATCH, MouthGenerator
from lipsyncd.engine.int8 import Int8Wav2Lip
from lipsyncd.engine.models import file_sha256
from lipsyncd.engine.wav2lip import Wav2Lip

FIXTURES = Path(__file__).parent / "fixtures" / "wav2lip"
MOUTH_PSNR_DB = 40.0
MOUTH_MAX_LEVELS = 16


def rule_model() -> Wav2Lip:
    with torch.device("meta"):
        model = Wav2Lip()
    model.load_state_dict({k: v.clone() for k, v in rule_state_dict().items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def real_batch() -> tuple[np.ndarray, np.ndarray]:
    """The fixture's four real crops and their mirror images, with the fixture's mel windows."""
    faces = np.load(FIXTURES / "faces_bgr_uint8.npy")
    mels = np.load(FIXTURES / "model_input_mel.npy")[:, 0]
    return np.concatenate([faces, faces[:, :, ::-1]]), np.concatenate([mels, mels[::-1]])


def mouth_psnr(a: np.ndarray, b: np.ndarray) -> float:
    lower = slice(a.shape[1] // 2, None)
    mse = np.mean((a[:, lower].astype(np.float64) - b[:, lower].astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse)) if mse else float("inf")


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def calibrated(int8_cache: Path) -> tuple[Int8Wav2Lip, MouthGenerator, np.ndarray]:
    """An int8 network calibrated on the real batch (~15 CPU s: conversion, then calibration) as
    the video "clip", kept in ``int8_cache``; its generator, and the faces it drew for that batch
    (the tests may calibrate it again)."""
    crops, mels = real_batch()
    network = Int8Wav2Lip(rule_model(), streams=1, cache_dir=int8_cache, model_key="rule")
    network.calibrate_next("clip")
    generator = MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH, network)
    with torch.inference_mode():
        return network, generator, generator(crops, mels)


def test_a_video_seen_before_reads_its_int8_network_from_the_cache(calibrated, int8_cache, monkeypatch):
    """A repeat avatar skips calibration (a new process: nothing in memory) and draws the same faces."""
    import os

    import nncf

    assert [p.name for p in sorted(int8_cache.iterdir())] == [  # the video's int8 network, the converted one
        "wav2lip-rule-clip-int8-v2.bin", "wav2lip-rule-clip-int8-v2.xml", "wav2lip-rule-rows0-v2.bin",
        "wav2lip-rule-rows0-v2.xml"]
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: pytest.fail("calibrated again"))
    network = Int8Wav2Lip(rule_model(), streams=1, cache_dir=int8_cache, model_key="rule")
    network.calibrate_next("clip")
    crops, mels = real_batch()
    entry = int8_cache / "wav2lip-rule-clip-int8-v2.xml"
    os.utime(entry, (1e9, 1e9))
    with torch.inference_mode():
        again = MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH, network)(crops, mels)
    assert np.array_equal(again, calibrated[2])
    assert entry.stat().st_mtime > 1e9  # marked as used: the least recently used go first
    network.calibrate_next("another clip")  # a new video: calibrated, on the converted network kept
    monkeypatch.setattr("openvino.convert_model", lambda *a, **k: pytest.fail("converted again"))
    with pytest.raises(pytest.fail.Exception, match="calibrated again"), torch.inference_mode():
        MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH, network)(crops, mels)


def test_the_cache_keeps_the_int8_networks_of_the_most_recent_videos(tmp_path):
    """36 MB a video: the least recently used go, the converted networks stay."""
    import os

    from lipsyncd.engine.int8 import drop_least_recent

    for age, name in enumerate(["wav2lip-k-rows0-v2", "wav2lip-k-new-int8-v2", "wav2lip-k-mid-int8-v2",
                                "wav2lip-k-old-int8-v2"]):
        for suffix in (".xml", ".bin"):
            (tmp_path / f"{name}{suffix}").write_text("x")
            os.utime(tmp_path / f"{name}{suffix}", (1e9 - age * 10, 1e9 - age * 10))
    drop_least_recent(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "wav2lip-k-mid-int8-v2.bin", "wav2lip-k-mid-int8-v2.xml", "wav2lip-k-new-int8-v2.bin",
        "wav2lip-k-new-int8-v2.xml", "wav2lip-k-rows0-v2.bin", "wav2lip-k-rows0-v2.xml"]


def test_calibration_takes_mel_windows_spread_over_the_speech(monkeypatch):
    """The audio ranges come from windows across the whole speech when given (a quiet first
    second must not set them), the face ranges from the call's faces."""
    import nncf

    seen = []

    def quantize(model, dataset, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(dataset.get_inference_data())
        assert kwargs["advanced_parameters"].disable_bias_correction  # 1.5x the time, no better mouths
        raise RuntimeError("stop here")

    monkeypatch.setattr(nncf, "quantize", quantize)
    network = Int8Wav2Lip(rule_model(), streams=1)
    spread = np.stack([np.full((80, 16), float(k), np.float32) for k in range(8)])
    network.calibrate_next(None, spread)
    faces = torch.rand(8, 6, 96, 96)
    with pytest.raises(RuntimeError, match="stop here"):
        network(torch.zeros(8, 1, 80, 16), faces)
    (feed,) = seen
    assert np.array_equal(feed["mel"][:, 0], spread)
    assert np.array_equal(feed["face"], faces.numpy())


def test_int8_mouth_stays_close_to_fp32(calibrated):
    crops, mels = real_batch()
    with torch.inference_mode():
        fp32 = MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH)(crops, mels)
    int8 = calibrated[2]
    assert not np.array_equal(int8, fp32), "int8 gave fp32's exact faces: the int8 model did not run"
    assert mouth_psnr(int8, fp32) >= MOUTH_PSNR_DB
    assert np.abs(int8.astype(int) - fp32.astype(int))[:, 48:].max() <= MOUTH_MAX_LEVELS


def test_int8_takes_smaller_batches(calibrated):
    """``batch_size`` below the CPU's 8 makes smaller calls, and the int8 model takes them."""
    crops, mels = real_batch()
    smaller = MouthGenerator(rule_model(), torch.device("cpu"), batch_size=3, network=calibrated[0])
    with torch.inference_mode():
        faces = smaller(crops, mels)
    assert mouth_psnr(faces, calibrated[2]) >= MOUTH_PSNR_DB


def test_ranges_are_measured_again_only_for_a_new_video(calibrated, capsys):
    network, generator, first = calibrated
    crops, mels = real_batch()
    white = np.full_like(crops, 255)
    with torch.inference_mode():
        generator(white, mels)  # the same video goes on: its ranges stay
        assert np.array_equal(generator(crops, mels), first)
        network.calibrate_next()  # a new video, all white, sets other ranges
        generator(white, mels)
        assert not np.array_equal(generator(crops, mels), first)
    assert capsys.readouterr().out == ""  # no progress bars: stdout may be `lipsyncd render --json`'s


class Spy:
    """Stands in for :class:`Int8Wav2Lip` in the engine (no OpenVINO work): counts calibrations
    and batches, and runs the fp32 model."""

    made: list[Spy] = []

    def __init__(self, load: Callable[[], Wav2Lip], streams: int, cache_dir: Path | None, model_key: str,
                 threads: int) -> None:
        self.model, self.streams, self.cache_dir, self.model_key = load(), streams, cache_dir, model_key
        self.threads = threads
        self.calibrations: list[tuple[str | None, tuple[int, ...]]] = []
        self.batches: list[int] = []
        Spy.made.append(self)

    def calibrate_next(self, video_key: str | None = None, mels: np.ndarray | None = None) -> None:
        assert mels is not None
        self.calibrations.append((video_key, mels.shape))

    def __call__(self, mel: torch.Tensor, face: torch.Tensor, first_row: int) -> torch.Tensor:
        self.batches.append(len(face))
        return self.model(mel, face)  # whole faces, as Int8Wav2Lip draws them


@pytest.mark.slow
def test_precision_int8_reaches_the_network(models_dir, face_clip, speech_file, tmp_path, monkeypatch):
    import lipsyncd.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "Int8Wav2Lip", Spy)
    Spy.made.clear()
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "cache")
    audio = engine.load_audio(write_wav(tmp_path / "speech.wav", decode_audio(speech_file)[: int(0.6 * SAMPLE_RATE)]))
    int8 = RenderOptions(precision="int8")
    first = engine.render(audio, face_clip, tmp_path / "a.mp4", int8)
    engine.render(audio, face_clip, tmp_path / "b.mp4", int8)
    engine.render(audio, face_clip, tmp_path / "c.mp4", RenderOptions())  # fp32 stays the default

    assert len(Spy.made) == 1  # made once, kept for the next videos
    spy = Spy.made[0]
    digest = file_sha256(face_clip)
    assert spy.calibrations == [(digest, (CPU_BATCH, 80, 16))] * 2  # once per video, kept under its digest
    assert spy.cache_dir == tmp_path / "cache" / "openvino"
    assert spy.model_key == file_sha256(models_dir / "wav2lip_gan.pth")[:16]
    assert (spy.streams, spy.threads) == (engine.threads.network_workers, engine.threads.network)
    assert set(spy.batches) == {CPU_BATCH} and sum(spy.batches) >= 2 * first.frames_with_face > 0
    assert engine._generator(RenderOptions()).network is not engine._generator(int8).network


def test_without_openvino_int8_is_refused_before_any_work(models_dir, monkeypatch):
    import sys

    from lipsyncd.engine.errors import ModelError

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the int8 extra were not installed
    engine = LipSyncEngine(models_dir, device="cpu")
    with pytest.raises(ModelError, match=r"needs OpenVINO and NNCF.*lipsyncd\[int8\].*precision to fp32"):
        engine.check_ready(RenderOptions(precision="int8"))
    engine.check_ready(RenderOptions())  # fp32 needs neither


def test_precision_is_validated():
    assert RenderOptions.from_mapping({"precision": "int8"}).precision == "int8"
    with pytest.raises(ValueError, match="engine.precision: must be one of fp32, int8; got 'int4'"):
        RenderOptions.from_mapping({"precision": "int4"})


def test_openvino_and_int8_send_no_telemetry(tmp_path: Path) -> None:
    """OpenVINO's converter (fp32 and int8 alike) and NNCF report usage to Google Analytics unless stopped (and keep a
    client id in ``~/intel/``); NNCF also stops by itself under pytest, so the check runs in a
    fresh interpreter, with its own home folder, in a terminal (``script``)."""
    import subprocess
    import sys

    script = tmp_path / "int8_run.py"
    script.write_text(
        "import torch\n"
        "from lipsyncd.engine.int8 import Int8Wav2Lip\n"
        "from lipsyncd.engine.openvino_cpu import OpenVinoWav2Lip\n"
        "from lipsyncd.engine.wav2lip import Wav2Lip\n"
        "OpenVinoWav2Lip(Wav2Lip().eval(), 1)(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96), 32)\n"
        "net = Int8Wav2Lip(Wav2Lip().eval(), 1)\n"
        "net(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96))\n"
        "import nncf.telemetry.wrapper as w\n"
        "print('reports' if isinstance(w.telemetry, w.NNCFTelemetry) else 'silent')\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["script", "-qec", f"{sys.executable} {script}", "/dev/null"], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[-1] == "silent"
    assert not (tmp_path / "intel").exists()
