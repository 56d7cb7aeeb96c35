"""Speech audio: decode any file to 16 kHz mono, and the mel spectrogram Wav2Lip was trained on.

Decoding is in-process with PyAV (FFmpeg's libraries inside the wheel), frame by frame, so any
container FFmpeg reads works — .wav .mp3 .m4a .aac .flac .ogg or the sound track of a video —
with no ffmpeg binary and no temporary file.

The mel spectrogram and the per-frame window indexing reproduce the reference's ``audio.py``,
``hparams.py`` and inference loop number for number: the network only gives good mouths for
features computed exactly the way it saw them in training. A one-column shift is visible.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np

from .complete import cut_short, declares_length, has_zero_tail, missing_seconds
from .errors import AudioError, IncompleteInputError
from .formats import empty_file_message

SAMPLE_RATE = 16_000
# The reference's hparams (Wav2Lip hparams.py), the ones melspectrogram() depends on.
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0

MEL_BLOCK_COLUMNS = 4096
"""Mel columns computed per STFT pass (51 s of audio): bounds memory for long speech."""
MEL_STEP = 16
"""Columns per mel window: 16 columns x 200 samples = 0.2 s of audio for each video frame."""
MEL_COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80
MIN_DURATION_S = 0.2
"""Shortest usable audio: one mel window needs 16 columns, i.e. at least 0.19 s of samples."""
SILENCE_DBFS = -60.0
"""Audio whose loudest sample is below this is treated as silent (a muted or wrong track)."""


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any media file to float32 mono in [-1, 1].

    Channels are averaged (as ``librosa.load(mono=True)`` does in the reference) rather than
    left to FFmpeg's downmix, which sums stereo at -3 dB each and would make the audio 3 dB
    louder than the reference hears it, shifting the whole mel spectrogram.
    Raises :class:`AudioError` when the file cannot be opened or has no audio stream, and
    :class:`IncompleteInputError` when fewer samples decode than its container declares, or it
    fails and ends in zeros (a preallocated copy not yet filled in).
    """
    name = Path(path).name
    if empty := empty_file_message(Path(path), "audio file"):
        raise AudioError(empty)
    detail = cut_short(path)
    if detail:
        raise IncompleteInputError(name, detail)
    chunks: list[np.ndarray] = []
    declared_s: float | None = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"The file {name} has no audio track.")
            stream = container.streams.audio[0]
            declared_s = _declared_seconds(container, stream)
            # layout=None keeps the source channels; only rate and sample format change here.
            resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    except FileNotFoundError as error:
        raise AudioError(f"The audio file {name} does not exist.") from error
    except (av.FFmpegError, ValueError) as error:
        _check_complete(path, declared_s, sum(map(len, chunks)) / sample_rate, failed=True)
        reason = getattr(error, "strerror", None) or str(error)
        raise AudioError(f"The file {name} cannot be read as audio ({reason}). Use a common "
                         "audio format such as WAV, MP3, M4A/AAC, FLAC or OGG.") from error
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    _check_complete(path, declared_s, samples.size / sample_rate, failed=False)
    # Float sources (float WAV, some decoders) can carry NaN or overshoot; keep the promise.
    return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def _check_complete(path: str | Path, declared_s: float | None, decoded_s: float, failed: bool) -> None:
    """Raise :class:`IncompleteInputError` when less sound decoded than the container declares,
    or, where it declares no length (or could not be read at all), when the file ends in zeros."""
    name = Path(path).name
    if declared_s is not None and missing_seconds(declared_s, decoded_s):
        raise IncompleteInputError(name, f"it says it lasts {declared_s:.1f} s but only {decoded_s:.1f} s "
                                         "of sound can be decoded")
    if (failed or declared_s is None) and has_zero_tail(path):
        raise IncompleteInputError(name, "its end is still empty (zero bytes)")


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The audio's length as its container states it; None where FFmpeg only estimates it."""
    if not declares_length(container.format.name):
        return None
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _preemphasis(x: np.ndarray) -> np.ndarray:
    """``y[n] = x[n] - 0.97 x[n-1]``: the reference's ``lfilter([1, -0.97], [1], x)``, bit for bit."""
    y = x.copy()
    y[1:] -= PREEMPHASIS * x[:-1]
    return y


@functools.cache
def _mel_basis() -> np.ndarray:
    """The reference's mel filter bank, ``librosa.filters.mel(sr=16000, n_fft=800, n_mels=80,
    fmin=55, fmax=7600)`` (Slaney's mel scale, each triangle scaled to unit area), float32
    ``(80, 401)``, computed as librosa computes it (the tests compare the two). Here rather than
    through librosa, whose import (scipy.signal, numba) cost ~1.7 CPU seconds per process."""
    mel_edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    ramps = np.subtract.outer(mel_edges, np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE))
    widths = np.diff(mel_edges)
    weights = np.zeros((N_MELS, 1 + N_FFT // 2), np.float32)
    for i in range(N_MELS):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    return weights


_SLANEY_STEP_HZ = 200.0 / 3
"""Slaney's mel scale: linear, one mel per 66.7 Hz, up to 1 kHz (15 mels), logarithmic above."""
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    mel = hz / _SLANEY_STEP_HZ
    return 15.0 + math.log(hz / 1000.0) / _SLANEY_LOG_STEP if mel >= 15.0 else mel


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _SLANEY_STEP_HZ * mels
    high = mels >= 15.0
    hz[high] = 1000.0 * np.exp(_SLANEY_LOG_STEP * (mels[high] - 15.0))
    return hz


@functools.cache
def _hann() -> np.ndarray:
    """The periodic Hann window of ``librosa.stft`` (scipy's ``get_window('hann', 800)``), value for value."""
    return 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, WIN + 1)[:-1])


def _stft_magnitude(segment: np.ndarray) -> np.ndarray:
    """``|librosa.stft(segment, n_fft=800, hop_length=200, win_length=800, center=False)|``:
    Hann-windowed 800-sample frames every 200 samples, one real FFT each, ``(401, frames)``."""
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * _hann(), axis=1)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The reference's mel spectrogram of 16 kHz mono samples: float32 ``(80, 1 + len // 200)``.

    Pre-emphasis, STFT (800/200/800, centred with zero padding, as librosa >= 0.10 does by
    default and as the golden numbers were made), 80-bin Slaney mel basis (55-7600 Hz),
    amplitude to dB minus ``ref_level_db``, then scaled symmetrically to [-4, 4] and clipped.

    Columns are computed in blocks: every STFT frame depends only on its own 800 padded
    samples, so blocks give the same numbers as one pass, while an hour of speech needs tens of
    MB of spectrum at a time instead of several GB.
    """
    emphasised = _preemphasis(np.asarray(wav, dtype=np.float64))
    padded = np.pad(emphasised, N_FFT // 2)  # the centring, done once for all blocks
    n_columns = 1 + len(emphasised) // HOP
    return np.concatenate([_mel_columns(padded, start, min(start + MEL_BLOCK_COLUMNS, n_columns))
                           for start in range(0, n_columns, MEL_BLOCK_COLUMNS)], axis=1)


def _mel_columns(padded: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Mel columns ``first`` to ``stop - 1`` of the zero-padded, pre-emphasised signal."""
    segment = padded[first * HOP:(stop - 1) * HOP + N_FFT]
    spectrum = _stft_magnitude(segment)
    min_level = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(min_level, _mel_basis() @ spectrum)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_window_starts(n_mel_columns: int, fps: float) -> list[int]:
    """Start column of the 16-column mel window for each video frame, as the reference computes.

    Frame ``i`` starts at ``int(i * 80 / fps)``; frames continue while a full window fits, and
    one last window is clamped to the end of the mel. The number of starts is therefore the
    number of video frames the audio covers.
    """
    if n_mel_columns < MEL_STEP:
        raise ValueError(f"need at least {MEL_STEP} mel columns, got {n_mel_columns}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    multiplier = MEL_COLUMNS_PER_SECOND / fps
    last = n_mel_columns - MEL_STEP
    # Upper bound on frames whose start fits, plus slack; the filter below is exact.
    candidates = (np.arange(int(last / multiplier) + 2) * multiplier).astype(np.int64)
    return [*candidates[candidates <= last].tolist(), last]


class MelWindows:
    """The per-frame mel windows of one audio at one frame rate, without copying them all.

    ``windows[i]`` is ``(80, 16)``; ``windows[a:b]`` or ``windows[index_array]`` is a
    ``(k, 80, 16)`` float32 batch. An hour of 30 fps video has 108 000 windows (550 MB if
    materialised), so only the batch asked for is copied out of the shared mel.
    """

    def __init__(self, mel: np.ndarray, starts: list[int]) -> None:
        # (T - 15, 80, 16) view: row s is the window starting at column s.
        self._view = np.lib.stride_tricks.sliding_window_view(mel, MEL_STEP, axis=1).transpose(1, 0, 2)
        self.starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        return np.ascontiguousarray(self._view[self.starts[index]])


@dataclass(frozen=True)
class SpeechAudio:
    """One job's speech, decoded and turned into features once, reused for every video."""

    path: str
    samples: np.ndarray = field(repr=False)
    """16 kHz mono float32 in [-1, 1]."""
    mel: np.ndarray = field(repr=False)
    """float32 (80, T) mel spectrogram, 80 columns per second."""
    prompts: Any = field(default=None, repr=False, compare=False)
    """MuseTalk's audio prompts of the whole speech (:class:`~.musetalk.audio.SpeechPrompts`),
    when the job uses MuseTalk: made once per job, like the mel, and shared by its videos."""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def frame_count(self, fps: float) -> int:
        """How many video frames at ``fps`` the output has: as many as cover the whole audio.

        The reference stops one mel window (0.2 s) short of the audio's end and lets the muxer
        leave the sound running over a frozen picture; we keep drawing frames to the end.
        """
        return max(1, round(self.duration_s * fps))

    def head(self, seconds: float) -> SpeechAudio:
        """The first ``seconds`` (all of it when shorter), for a short preview render. It keeps
        the whole audio's mel columns, plus one window's worth past the cut, so each of its
        frames gets the mel window of the same frame of the full render: the clip shows what
        the full render will."""
        if seconds >= self.duration_s:
            return self
        columns = min(self.mel.shape[1], math.ceil(seconds * MEL_COLUMNS_PER_SECOND) + MEL_STEP)
        return replace(self, samples=self.samples[: round(seconds * SAMPLE_RATE)], mel=self.mel[:, :columns])

    def windows(self, fps: float) -> MelWindows:
        """The mel window of every output frame at ``fps``, indexable by frame number.

        The first frames use the reference's windows exactly; the frames past the reference's
        last one (the final 0.2 s) reuse its last, clamped, window, as the reference's own
        last frame does.
        """
        starts = mel_window_starts(self.mel.shape[1], fps)
        starts += [starts[-1]] * (self.frame_count(fps) - len(starts))
        return MelWindows(self.mel, starts[: self.frame_count(fps)])


def load_speech(path: str | Path) -> SpeechAudio:
    """Decode a speech file and compute its mel, refusing audio that cannot drive a mouth.

    Raises :class:`AudioError` with a plain message for a file that is not audio or has no
    audio track, and for empty, too short (< 0.2 s) or silent (peak < -60 dBFS) audio.
    """
    name = Path(path).name
    samples = decode_audio(path)
    if samples.size == 0:
        raise AudioError(f"The audio file {name} is empty: it contains no sound.")
    duration = samples.size / SAMPLE_RATE
    if duration < MIN_DURATION_S:
        raise AudioError(f"The audio file {name} is too short ({duration:.2f} s); "
                         f"it must be at least {MIN_DURATION_S} s long.")
    peak = float(np.abs(samples).max())
    if peak < 10.0 ** (SILENCE_DBFS / 20.0):
        raise AudioError(f"The audio in {name} is silent (its loudest point is below "
                         f"{SILENCE_DBFS:.0f} dBFS). Check that the right file was sent and that "
                         "its sound is not muted.")
    return SpeechAudio(path=str(path), samples=samples, mel=melspectrogram(samples))
