"""Running the network: the reference's input layout, one input shape, recovery from GPU out-of-memory."""

import numpy as np
import pytest
import torch

from lipsyncd.engine.infer import CPU_BATCH, HIGHEST_ROW, LOWER_FACE_ROW, LOWEST_ROW, MouthGenerator, rows_from
from lipsyncd.engine.wav2lip import Wav2Lip


class Recorder(torch.nn.Module):
    """Stands in for Wav2Lip: records inputs, returns the unmasked face; fails on big batches."""

    def __init__(self, max_batch: int = 10**6) -> None:
        super().__init__()
        self.max_batch, self.calls = max_batch, []

    def forward(self, mel, face, first_row=0):
        if len(face) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.calls.append((mel.shape, face.shape))
        self.rows = [*getattr(self, "rows", []), first_row]
        self.last_face = face
        return 1 - face[:, 3:, first_row:]  # the rows asked for, visibly new


def test_input_layout_is_the_references():
    model = Recorder()
    crops = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), np.uint8)
    out = MouthGenerator(model, torch.device("cpu"), batch_size=3)(crops, np.zeros((3, 80, 16), np.float32))
    face = model.last_face
    assert model.calls == [((3, 1, 80, 16), (3, 6, 96, 96))]
    assert torch.all(face[:, :3, 48:] == 0)                                   # masked lower half first
    assert torch.equal(face[:, :3, :48], face[:, 3:, :48])
    assert torch.allclose(face[:, 3:], torch.from_numpy(crops).permute(0, 3, 1, 2) / 255.0)  # BGR, 0..1
    assert np.array_equal(out, 255 - crops)                                    # back to uint8 BGR HWC


def test_every_call_has_the_same_shape_and_a_cpu_batch_is_small():
    """oneDNN keeps kernels per input shape: short batches are padded, never passed as they are."""
    model = Recorder()
    generator = MouthGenerator(model, torch.device("cpu"), batch_size=128)
    assert generator.batch_size == CPU_BATCH
    crops = np.random.default_rng(3).integers(0, 256, (CPU_BATCH * 2 + 3, 96, 96, 3), np.uint8)
    out = generator(crops, np.zeros((len(crops), 80, 16), np.float32))
    assert np.array_equal(out, 255 - crops)
    assert model.calls == [((CPU_BATCH, 1, 80, 16), (CPU_BATCH, 6, 96, 96))] * 3
    assert torch.all(model.last_face[3:] == 0)  # the padding


def test_out_of_memory_halves_the_batch_and_loses_no_frame():
    model = Recorder(max_batch=3)
    generator = MouthGenerator(model, torch.device("cpu"), batch_size=8)
    crops = np.random.default_rng(1).integers(0, 256, (40, 96, 96, 3), np.uint8)
    out = generator(crops, np.zeros((40, 80, 16), np.float32))
    assert generator.batch_size == 2
    assert np.array_equal(out, 255 - crops)
    assert len(model.calls) == 20
def test_a_batch_read_from_the_lower_face_only_is_drawn_from_there():
    """Faces read from LOWER_FACE_ROW down get only those rows drawn (above: the input's rows, never
    shown); one face read from higher up in a batch gets that batch whole faces. Two shapes only."""
    model = Recorder()
    generator = MouthGenerator(model, torch.device("cpu"), batch_size=4)
    crops = np.random.default_rng(5).integers(0, 256, (12, 96, 96, 3), np.uint8)
    rows = np.array([LOWER_FACE_ROW + 3] * 4 + [LOWER_FACE_ROW + 9, 50, LOWER_FACE_ROW - 1, 60] + [LOWER_FACE_ROW] * 4)
    out = generator(crops, np.zeros((12, 80, 16), np.float32), rows)
    assert model.rows == [LOWER_FACE_ROW, 0, LOWER_FACE_ROW]
    lower = np.r_[0:4, 8:12]
    assert np.array_equal(out[lower, LOWER_FACE_ROW:], 255 - crops[lower, LOWER_FACE_ROW:])
    assert np.array_equal(out[lower, :LOWER_FACE_ROW], crops[lower, :LOWER_FACE_ROW])
    assert np.array_equal(out[4:8], 255 - crops[4:8])


def test_a_render_draws_from_the_row_nearly_all_its_faces_are_read_from():
    """The row is the highest step of 4 that 98 % of the faces shown are read from: an odd face read
    from higher up (2 % or less) does not pull the render's row up with it; below LOWEST_ROW (or
    with no face), whole faces."""
    rng = np.random.default_rng(7)
    assert rows_from(rng.integers(41, 45, 500)) == 40
    assert rows_from(np.r_[rng.integers(41, 45, 490), [30] * 10]) == 40  # 2 %: kept out
    assert rows_from(np.r_[rng.integers(41, 45, 480), [30] * 20]) == 28  # 4 %: the row follows them
    assert rows_from(np.array([35, 36, 37])) == 32
    assert rows_from(np.array([57, 60, 61])) == HIGHEST_ROW == 48  # a handful of rows at most
    assert rows_from(np.array([LOWEST_ROW - 1] * 5)) == 0
    assert rows_from(np.array([], int)) == 0


def test_the_planned_row_decides_which_batches_are_drawn_from_it():
    model = Recorder()
    generator = MouthGenerator(model, torch.device("cpu"), batch_size=4)
    crops = np.random.default_rng(8).integers(0, 256, (8, 96, 96, 3), np.uint8)
    out = generator(crops, np.zeros((8, 80, 16), np.float32), np.array([41] * 4 + [39] * 4), lower_row=40)
    assert model.rows == [40, 0]
    assert np.array_equal(out[:4, :40], crops[:4, :40]) and np.array_equal(out[:4, 40:], 255 - crops[:4, 40:])
    assert np.array_equal(out[4:], 255 - crops[4:])
    generator(crops, np.zeros((8, 80, 16), np.float32), np.array([41] * 8), lower_row=0)  # a plan of whole faces
    assert model.rows[2:] == [0, 0]


def test_out_of_memory_at_batch_one_is_raised():
    with pytest.raises(torch.OutOfMemoryError):
        MouthGenerator(Recorder(max_batch=0), torch.device("cpu"), 4)(
            np.zeros((2, 96, 96, 3), np.uint8), np.zeros((2, 80, 16), np.float32))


def test_wav2lip_shapes():
    model = Wav2Lip().eval()
    with torch.inference_mode():
        out = model(torch.zeros(2, 1, 80, 16), torch.zeros(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)


MEMORY_PROBE = """
import ctypes
import numpy as np, torch
from lipsyncd.engine.infer import CPU_BATCH, MouthGenerator
from lipsyncd.engine.wav2lip import Wav2Lip
from media_tools import rss_mb

def live_mb():  # freed heap handed back first: the allocator's timing moved RSS by +-80 MB
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()

torch.manual_seed(0)
generator = MouthGenerator(Wav2Lip().eval(), torch.device("cpu"), batch_size=CPU_BATCH)
def run(n):
    generator(np.zeros((n, 96, 96, 3), np.uint8), np.zeros((n, 80, 16), np.float32))
run(CPU_BATCH); run(CPU_BATCH)
before = live_mb()
for n in range(1, CPU_BATCH):  # a group with fewer faces (a face leaving the picture, the last frames)
    run(n)
print(live_mb() - before)
"""


def test_memory_stays_flat_when_groups_hold_fewer_faces():
    """Long renders grew by GBs when every batch size compiled its own oneDNN kernels."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tests), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    growth_mb = float(done.stdout.split()[-1])
    # Measured: padded ~0 MB; unpadded (a shape per size) 21 MB here, GBs over a long render's sizes.
    assert growth_mb < 8, f"resident memory grew {growth_mb:.0f} MB over batches of 1..{CPU_BATCH - 1} faces"
