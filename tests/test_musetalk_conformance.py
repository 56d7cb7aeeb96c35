"""MuseTalk 1.5 conformance: every stage against the reference's golden numbers.

The goldens (``tests/fixtures/musetalk``, see PROVENANCE.md) were computed by the reference
implementation with the rule weights of ``musetalk_weights.py`` loaded from files in the
official layout. Each stage is fed the stored input of that stage and compared under the
fixture README's tolerances. The whisper and VAE weights go through real files in the official
layout (legacy VAE attention names, ``model.``-prefixed Whisper keys); the 3.4 GB UNet is
loaded from memory through the same strict check.

Cost on CPU (one row per heavy stage; batch effects are within the tolerances): about a minute
to generate and load the weights, then seconds to tens of seconds per stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lipsyncd.engine.audio import decode_audio
from lipsyncd.engine.musetalk import audio, face, generate
from lipsyncd.engine.musetalk.layout import VAE_CONFIG, VAE_WEIGHTS, WHISPER_CONFIG, WHISPER_PREPROCESSOR, WHISPER_WEIGHTS
from lipsyncd.engine.musetalk.configs import read_config
from lipsyncd.engine.musetalk.networks import build_vae, build_whisper_encoder, feature_extractor
from lipsyncd.engine.musetalk.weights import read_weights
from musetalk_weights import FIXTURES, checksums, rule_networks, rule_state_dict

CONFIGS = FIXTURES / "models"
FRAMES = ["input_frame_000013.png", "input_frame_000080.png"]
FPS = 25


def golden(name: str, key: str | None = None) -> np.ndarray:
    data = np.load(FIXTURES / name)
    return data[key] if key else data


def max_diff(got: torch.Tensor | np.ndarray, want: np.ndarray) -> float:
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the whisper and VAE files written as the official downloads are."""
    root = tmp_path_factory.mktemp("musetalk_models")
    for relative, network in ((WHISPER_WEIGHTS, "whisper"), (VAE_WEIGHTS, "vae")):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.save(rule_state_dict(network), root / relative)
    for relative in (WHISPER_CONFIG, WHISPER_PREPROCESSOR, VAE_CONFIG):
        (root / relative).write_bytes((CONFIGS / relative).read_bytes())
    return root


@pytest.fixture(scope="module")
def whisper(official_files: Path) -> torch.nn.Module:
    return build_whisper_encoder(read_config(official_files / WHISPER_CONFIG),
                                 read_weights(official_files / WHISPER_WEIGHTS))


@pytest.fixture(scope="module")
def features(official_files: Path) -> object:
    return feature_extractor(read_config(official_files / WHISPER_PREPROCESSOR))


@pytest.fixture(scope="module")
def vae(official_files: Path) -> torch.nn.Module:
    return build_vae(read_config(official_files / VAE_CONFIG), read_weights(official_files / VAE_WEIGHTS))


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return rule_networks().unet  # 3.4 GB: from memory, shared with the other MuseTalk tests


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio(FIXTURES / "input_speech_16k_2.03s.wav")


def test_rule_weights_are_the_fixtures() -> None:
    """The in-memory generator makes the very tensors the goldens were computed with."""
    reference = json.loads((FIXTURES / "weights_checksums.json").read_text())
    for network in ("whisper", "vae", "unet"):
        ours = checksums(rule_state_dict(network))
        assert list(ours) == list(reference[network]), network
        worst = max(abs(a - b) / max(1.0, abs(b))
                    for key, sums in ours.items() for a, b in zip(sums, reference[network][key]))
        assert worst < 1e-9, network


def test_log_mel_input_features(features: object, speech: np.ndarray) -> None:
    assert len(speech) == 32480
    mel = audio.log_mel(features, speech)
    assert max_diff(mel, golden("audio_mel_input_features.npz", "input_features")) < 1e-4


def test_whisper_stacked_hidden_states(whisper: torch.nn.Module) -> None:
    mel = torch.from_numpy(golden("audio_mel_input_features.npz", "input_features"))
    states = audio.stacked_hidden_states(whisper, mel)
    assert states.shape == (1, 1500, 5, 384)
    assert audio.whisper_frame_count(32480) == 101
    assert max_diff(states[:, :101], golden("audio_whisper_hidden_states.npy")) < 1e-4


def test_prompt_windows_follow_the_reference_index_map() -> None:
    index = json.loads((FIXTURES / "audio_prompt_index.json").read_text())
    length = index["actual_length"]
    assert index["num_frames"] == np.floor(32480 / 16000 * FPS) == 50
    for frame, sources in enumerate(index["src"]):
        assert [s if 0 <= s < length else -1 for s in audio.prompt_sources(frame, FPS)] == sources


def test_prompts_gathered_exactly_from_hidden_states() -> None:
    states = torch.from_numpy(golden("audio_whisper_hidden_states.npy"))[0]
    prompts = audio.gather_prompts(states, 0, 101, [0, 12, 25, 49], FPS)
    assert max_diff(prompts, golden("audio_prompts_selected.npy")) == 0.0


def test_prompts_from_speech_end_to_end(whisper: torch.nn.Module, features: object, speech: np.ndarray) -> None:
    speech_prompts = audio.SpeechPrompts(speech, whisper, features)
    assert speech_prompts.frame_count(FPS) == 50
    assert max_diff(speech_prompts.prompts([0, 12, 25, 49], FPS), golden("audio_prompts_selected.npy")) < 1e-4


def test_positional_encoding_gives_the_unet_context() -> None:
    prompts = torch.from_numpy(golden("audio_prompts_selected.npy"))
    assert max_diff(audio.with_positions(prompts), golden("unet_encoder_hidden_states.npy")) < 1e-5


def test_face_box_from_mesh_landmarks_and_crops() -> None:
    """468-point mesh -> 68 points -> the reference's box rule -> v1.5 margin -> LANCZOS4 crop."""
    meshes = json.loads((FIXTURES / "face_mesh_frames_13_80.json").read_text())
    geometry = json.loads((FIXTURES / "paste_geometry.json").read_text())
    crops = golden("face_crops_bgr_uint8.npy")
    for row, (frame_name, mesh) in enumerate(zip(FRAMES, meshes)):
        frame = cv2.imread(str(FIXTURES / frame_name))
        points = np.asarray(mesh["mesh_468"], dtype=np.float64)[:, :2] * np.array(mesh["size_wh"])
        box = face.box_from_landmarks(face.mesh_to_68(points))
        assert box == tuple(geometry[row]["bbox_from_detector"])
        box = face.with_margin(box, frame.shape[0])
        assert box == tuple(geometry[row]["face_box_v15"])
        crop = face.crop_face(frame, box)
        assert crop.dtype == np.uint8 and np.array_equal(crop, crops[row])


def test_vae_inputs() -> None:
    crops = golden("face_crops_bgr_uint8.npy")
    assert max_diff(face.vae_input(crops, masked=True), golden("vae_inputs.npz", "masked")) < 1e-6
    assert max_diff(face.vae_input(crops, masked=False), golden("vae_inputs.npz", "ref")) < 1e-6


@pytest.mark.parametrize("kind", ["masked", "ref"])
def test_vae_posterior(vae: torch.nn.Module, kind: str) -> None:
    mean, std = generate.posterior(vae, torch.from_numpy(golden("vae_inputs.npz", kind)))
    assert max_diff(mean, golden("vae_posterior.npz", f"mean_{kind}")) < 1e-4
    assert max_diff(std, golden("vae_posterior.npz", f"std_{kind}")) < 1e-4


def test_unet_input_is_scaled_means_masked_first(vae: torch.nn.Module) -> None:
    latents = generate.unet_input(vae, golden("face_crops_bgr_uint8.npy")[:1])
    # Chained from the crops through both encoder passes (the fixture README: chained stages add
    # up): 1.9e-4 measured with torch on one thread, 2e-5 on two.
    assert max_diff(latents, golden("unet_input_latents.npy")[:1]) < 2e-4


def test_unet_output_at_timestep_zero(unet: torch.nn.Module) -> None:
    """Rows 0 and 1: two faces, two audio windows (frame 0 with left zero padding, frame 12)."""
    latents = torch.from_numpy(golden("unet_input_latents.npy")[:2])
    prompts = torch.from_numpy(golden("audio_prompts_selected.npy")[:2])
    assert max_diff(generate.unet_step(unet, latents, prompts), golden("unet_output.npy")[:2]) < 1e-4


def test_decoded_face(vae: torch.nn.Module) -> None:
    images = generate.decode(vae, torch.from_numpy(golden("unet_output.npy")[:1]))
    assert max_diff(images, golden("vae_decoded_float_sample0.npy")) < 2e-4
    faces = generate.to_bgr_uint8(images)
    want = golden("vae_decoded_bgr_uint8.npy")[:1]
    assert faces.dtype == np.uint8 and faces.shape == want.shape
    differ = faces != want
    assert np.abs(faces.astype(int) - want).max() <= 1
    assert differ.mean() <= 0.001


def test_paste_geometry() -> None:
    for row in json.loads((FIXTURES / "paste_geometry.json").read_text()):
        height, _ = row["frame_hw"]
        box = face.with_margin(tuple(row["bbox_from_detector"]), height)
        where = face.paste_geometry(box)
        assert list(where.box) == row["face_box_v15"]
        assert list(where.face_size) == row["resized_face_wh"]
        assert where.s == row["s"] and list(where.crop_box) == row["crop_box"]
        assert list(where.offset) == row["face_offset_in_crop_box"]
        assert where.mask_top == row["mask_top_boundary"] and where.blur_kernel == row["blur_kernel"]
        resized = face.resize_to_box(np.zeros((256, 256, 3), np.uint8), box)
        assert resized.shape[1::-1] == tuple(row["resized_face_wh"])
