"""The opt-in int8 Wav2Lip (``precision: int8``, OpenVINO): how far its picture may stray from
fp32, and that the option reaches the network.

The bound is measured on the conformance rule's weights (no trained weights can be downloaded
here) and on the fixture's real face crops; ``benchmarks/network_levers.py`` measured ~50-54 dB
mouth PSNR there, so 40 dB leaves room for other CPUs' rounding but catches a broken
quantisation (uncalibrated ranges, swapped inputs or channels: 10-25 dB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncd.engine import LipSyncEngine, RenderOptions
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.infer import CPU_BATCH, MouthGenerator
from lipsyncd.engine.int8 import Int8Wav2Lip
from lipsyncd.engine.wav2lip import Wav2Lip
from media_tools import write_wav
from weights import rule_state_dict

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


def test_int8_mouth_stays_close_to_fp32():
    crops, mels = real_batch()
    model = rule_model()
    with torch.inference_mode():
        fp32 = MouthGenerator(model, torch.device("cpu"), CPU_BATCH)(crops, mels)
        network = Int8Wav2Lip(model, CPU_BATCH, streams=1)
        int8 = MouthGenerator(model, torch.device("cpu"), CPU_BATCH, network)(crops, mels)
    assert not np.array_equal(int8, fp32), "int8 gave fp32's exact faces: the int8 model did not run"
    assert mouth_psnr(int8, fp32) >= MOUTH_PSNR_DB
    assert np.abs(int8.astype(int) - fp32.astype(int))[:, 48:].max() <= MOUTH_MAX_LEVELS


def test_each_video_is_calibrated_on_its_own_faces():
    """Ranges from one video's faces are not kept for the next: same faces, same picture."""
    crops, mels = real_batch()
    network = Int8Wav2Lip(rule_model(), CPU_BATCH, streams=1)
    generator = MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH, network)
    with torch.inference_mode():
        first = generator(crops, mels)
        generator(np.full_like(crops, 255), mels)  # still calibrated on the first faces
        network.calibrate_next()
        generator(np.full_like(crops, 255), mels)  # a white "video" calibrates the ranges
        skewed = generator(crops, mels)
        network.calibrate_next()
        again = generator(crops, mels)
    assert np.array_equal(again, first)
    assert not np.array_equal(skewed, first)


@pytest.mark.slow
def test_precision_int8_reaches_the_network(models_dir, face_clip, speech_file, tmp_path, monkeypatch):
    calls = []
    run = Int8Wav2Lip.__call__
    monkeypatch.setattr(Int8Wav2Lip, "__call__", lambda self, mel, face: calls.append(len(face)) or run(self, mel, face))
    engine = LipSyncEngine(models_dir, device="cpu")
    audio = engine.load_audio(write_wav(tmp_path / "speech.wav", decode_audio(speech_file)[: int(0.6 * SAMPLE_RATE)]))
    result = engine.render(audio, face_clip, tmp_path / "int8.mp4", RenderOptions(precision="int8"))
    assert result.frames_with_face > 0
    assert sum(calls) >= result.frames_with_face and set(calls) == {CPU_BATCH}
    assert isinstance(engine._generator(RenderOptions(precision="int8")).network, Int8Wav2Lip)
    assert not isinstance(engine._generator(RenderOptions()).network, Int8Wav2Lip)  # fp32 stays the default


def test_precision_is_validated():
    assert RenderOptions.from_mapping({"precision": "int8"}).precision == "int8"
    with pytest.raises(ValueError, match="engine.precision: must be one of fp32, int8; got 'int4'"):
        RenderOptions.from_mapping({"precision": "int4"})
