"""MuseTalk as a face generator: mesh -> crop, crop + frame number -> face (the reference's whole
chain, rule weights), and the paste back through our own lower-face mask."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from lipsyncd.engine.audio import decode_audio
from lipsyncd.engine.blend import mouth_mask, paste
from lipsyncd.engine.faces.track import KEPT, NOSE
from lipsyncd.engine.musetalk.audio import SpeechPrompts
from lipsyncd.engine.musetalk.generator import MuseTalkGenerator, face_crop
from musetalk_weights import FIXTURES, rule_networks


def frame_and_mesh(row: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame 13 or 80 of the fixture video and its 468-point mesh in pixels."""
    entry = json.loads((FIXTURES / "face_mesh_frames_13_80.json").read_text())[row]
    frame = cv2.imread(str(FIXTURES / ("input_frame_000013.png", "input_frame_000080.png")[row]))
    return frame, np.asarray(entry["mesh_468"], dtype=np.float64)[:, :2] * np.array(entry["size_wh"])


def test_face_crop_from_the_mesh_is_the_reference_crop() -> None:
    crops = np.load(FIXTURES / "face_crops_bgr_uint8.npy")
    for row in (0, 1):
        crop, box = face_crop(*frame_and_mesh(row))
        assert np.array_equal(crop, crops[row]) and box[3] - box[1] in (310, 306)


def test_generator_runs_the_reference_chain() -> None:
    """Crop of frame 13 + video frame 0's speech -> the reference's decoded face (row 0), through
    audio, VAE encode (mean), UNet and decode in one call. The stages' errors add up (README of
    the fixture: test stages from stored inputs; chained runs accumulate), so a few more values
    sit on the other side of a rounding step than in the stage test: at most 1 level on 1 %."""
    networks = rule_networks()
    speech = SpeechPrompts(decode_audio(FIXTURES / "input_speech_16k_2.03s.wav"), networks.whisper, networks.features)
    generator = MuseTalkGenerator(networks, speech, fps=25, device=torch.device("cpu"), batch_size=1)
    crops = np.load(FIXTURES / "face_crops_bgr_uint8.npy")[:1]
    faces = generator(crops, np.array([0]))
    want = np.load(FIXTURES / "vae_decoded_bgr_uint8.npy")[:1]
    assert faces.dtype == np.uint8 and faces.shape == want.shape
    assert np.abs(faces.astype(int) - want).max() <= 1
    assert (faces != want).mean() <= 0.01


def test_paste_changes_only_the_lower_face() -> None:
    from lipsyncd.engine.yuv import I420, YuvMatrix

    frame, mesh = frame_and_mesh(0)
    _, box = face_crop(frame, mesh)
    face = np.load(FIXTURES / "vae_decoded_bgr_uint8.npy")[0]
    points = mesh[KEPT].astype(np.float32)  # what the face track keeps of the mesh
    even = frame[:frame.shape[0] // 2 * 2, :frame.shape[1] // 2 * 2]
    original = I420(cv2.cvtColor(even, cv2.COLOR_BGR2YUV_I420))
    out = I420(original.data.copy())
    mask = mouth_mask(points, box, out.width, out.height)
    assert mask is not None
    paste(out, face, mask, 1.0, YuvMatrix.of(5, 1))
    changed = out.y != original.y
    x1, y1, x2, y2 = box
    outside = np.ones_like(changed)
    outside[y1:y2, x1:x2] = False
    assert not changed[outside].any()
    eyes = int(mesh[[33, 133, 362, 263], 1].max())  # eye corners: the eyes stay the original's
    assert not changed[:eyes].any()
    mouth = points[NOSE, 1].max(), mesh[152, 1]  # nose base to chin
    lower = changed[int(mouth[0]):int(mouth[1]), x1:x2]
    assert lower.mean() > 0.3
