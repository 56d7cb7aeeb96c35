"""The Wav2Lip network against the reference's golden numbers, and its strict loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.wav2lip import Wav2Lip, decoder_starts, load_wav2lip, read_state_dict
from weights import golden_inputs, layout_state_dict, rule_state_dict, write_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "wav2lip"


@pytest.fixture(scope="module")
def rule_weights() -> dict[str, torch.Tensor]:
    return rule_state_dict()


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth")


def test_state_dict_layout_equals_reference() -> None:
    expected = json.loads((FIXTURES / "state_dict_layout.json").read_text())
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in Wav2Lip().state_dict().items()]
    assert ours == expected  # keys, shapes, dtypes, and order


def test_rule_weights_match_published_checksums(rule_weights: dict[str, torch.Tensor]) -> None:
    checksums = json.loads((FIXTURES / "weights_checksums.json").read_text())
    assert list(rule_weights) == list(checksums)
    for key, (total, total_abs) in checksums.items():
        values = rule_weights[key].double()
        assert values.sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), key
        assert values.abs().sum().item() == pytest.approx(total_abs, rel=1e-9, abs=1e-9), key


def test_official_checkpoint_reproduces_reference_output(official_checkpoint: Path) -> None:
    model = load_wav2lip(official_checkpoint)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    mel, face = golden_inputs()
    with torch.inference_mode():
        out = model(mel, face)
    assert out.shape == (4, 3, 96, 96) and out.dtype == torch.float32
    assert np.abs(out.numpy() - np.load(FIXTURES / "model_output.npy")).max() < 2e-5


def test_channels_last_gives_the_same_output(official_checkpoint: Path) -> None:
    model = load_wav2lip(official_checkpoint).to(memory_format=torch.channels_last)
    mel, face = (t.contiguous(memory_format=torch.channels_last) for t in golden_inputs())
    with torch.inference_mode():
        out = model(mel, face)
    assert np.abs(out.numpy() - np.load(FIXTURES / "model_output.npy")).max() < 2e-5


@pytest.mark.parametrize("first_row", [1, 8, 32, 48, 95])
def test_lower_rows_alone_are_the_reference_output(official_checkpoint: Path, first_row: int) -> None:
    """Drawing the faces from a row down (what the paste reads) gives the reference's numbers
    there: the decoder's skipped rows never feed the rows kept."""
    model = load_wav2lip(official_checkpoint).to(memory_format=torch.channels_last)
    mel, face = golden_inputs()
    with torch.inference_mode():
        out = model(mel, face.contiguous(memory_format=torch.channels_last), first_row)
    assert out.shape == (4, 3, 96 - first_row, 96)
    assert np.abs(out.numpy() - np.load(FIXTURES / "model_output.npy")[:, :, first_row:]).max() < 2e-5


def test_lower_rows_skip_most_of_the_last_stages(official_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From row 32 down, the three biggest decoder stages start a sixth to a third of the way down
    (their input rows: 2 of 12, 6 of 24, 14 of 48), and each start is the latest that stays
    exact: one row later moves the output far beyond the reference's tolerance."""
    assert decoder_starts(0) == [0] * 7
    starts = decoder_starts(32)
    assert starts == [0, 0, 0, 0, 2, 6, 14]
    model = load_wav2lip(official_checkpoint)
    mel, face = golden_inputs()
    expected = np.load(FIXTURES / "model_output.npy")[:, :, 32:]
    for stage in (4, 5, 6):
        later = [start + (i == stage) for i, start in enumerate(starts)]
        monkeypatch.setattr("lipsyncd.engine.wav2lip.decoder_starts", lambda row, later=later: later)
        with torch.inference_mode():
            assert np.abs(model(mel, face, 32).numpy() - expected).max() > 1e-3, stage


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 convolutions need a GPU (CPU fp16 takes minutes)")
def test_half_precision_on_gpu_stays_close(official_checkpoint: Path) -> None:
    model = load_wav2lip(official_checkpoint, device="cuda", half=True).to(memory_format=torch.channels_last)
    mel, face = (t.cuda().half() for t in golden_inputs())
    with torch.inference_mode():
        out = model(mel, face.contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.float16
    assert np.abs(out.float().cpu().numpy() - np.load(FIXTURES / "model_output.npy")).max() < 5e-3


def test_loader_accepts_a_bare_state_dict_without_prefix(tmp_path: Path) -> None:
    state = layout_state_dict()
    torch.save(state, tmp_path / "bare.pth")
    loaded = read_state_dict(tmp_path / "bare.pth")
    assert list(loaded) == list(state)


def test_loader_strips_the_module_prefix(official_checkpoint: Path, rule_weights: dict[str, torch.Tensor]) -> None:
    raw = torch.load(official_checkpoint, weights_only=True)
    assert all(k.startswith("module.") for k in raw["state_dict"])  # the official format
    loaded = read_state_dict(official_checkpoint)
    assert list(loaded) == list(rule_weights)
    assert torch.equal(loaded["output_block.1.weight"], rule_weights["output_block.1.weight"])


def _save(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "global_step": 1}, path)
    return path


def _rejection(path: Path) -> str:
    with pytest.raises(ModelError) as caught:
        load_wav2lip(path)
    message = str(caught.value)
    assert str(path) in message
    assert "wav2lip_gan.pth or wav2lip.pth" in message  # says what the file should be
    return message


def test_loader_names_a_missing_key(tmp_path: Path) -> None:
    state = layout_state_dict()
    del state["audio_encoder.3.conv_block.1.running_var"]
    assert "'audio_encoder.3.conv_block.1.running_var' is missing" in _rejection(_save(tmp_path, state))


def test_loader_names_an_unexpected_key(tmp_path: Path) -> None:
    state = layout_state_dict()
    state["face_encoder_blocks.7.0.conv_block.0.weight"] = torch.zeros(3)
    assert "unexpected entry 'face_encoder_blocks.7.0.conv_block.0.weight'" in _rejection(_save(tmp_path, state))


def test_loader_names_a_misshaped_key(tmp_path: Path) -> None:
    state = layout_state_dict()
    state["output_block.1.weight"] = torch.zeros(3, 32, 3, 3)
    message = _rejection(_save(tmp_path, state))
    assert "'output_block.1.weight' has shape (3, 32, 3, 3), expected (3, 32, 1, 1)" in message


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>", b"PK\x03\x04 truncated zip"])
def test_loader_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(content)
    assert "not a readable PyTorch checkpoint" in _rejection(path)


def test_loader_rejects_a_checkpoint_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"global_step": 3}, path)
    assert "holds no model weights" in _rejection(path)


def test_loader_rejects_a_truncated_checkpoint(official_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    with official_checkpoint.open("rb") as data:
        path.write_bytes(data.read(5_000_000))
    assert "not a readable PyTorch checkpoint" in _rejection(path)


def test_loader_reports_a_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _rejection(tmp_path / "nowhere.pth")
