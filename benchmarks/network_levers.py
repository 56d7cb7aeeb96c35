"""The Wav2Lip generator alone on a CPU: speed and output difference of each speed lever.

What it measures: frames per CPU second (``resource.getrusage`` user + system of this whole
process and its children, so every thread, library pool and compiler run counts) and wall time
per frame of the generator, run exactly as the frame loop runs it (:class:`MouthGenerator`: uint8
crops in, uint8 faces out, batch ``CPU_BATCH``, one batch per core at once, each on one thread,
:class:`ThreadPlan`), with the network itself swapped for each lever:

- ``fp32``: fp32 eager, channels-last, whole faces: the baseline every ratio refers to;
- ``fp32 lower rows``: the same, drawn from :data:`LOWER_FACE_ROW` down, as a render draws the
  faces whose paste reads nothing above that row (exact there; the mouth compared lies below);
- ``compile``: ``torch.compile`` (inductor, weights frozen into the graph); its compile time is
  reported separately, with whether it pays back over a render of ``--render-frames`` frames;
- ``int8 pt2e``: torchao's PT2E static quantisation with ``X86InductorQuantizer``, calibrated
  on real crops, then compiled by inductor (the int8 kernels come from the compile);
- ``int8 fx``: the older FX graph-mode static quantisation (``x86`` qconfig, eager int8 ops);
- ``onnxruntime fp32`` / ``onnxruntime int8``: the exported ONNX graph, and its static QDQ
  quantisation (u8 activations, s8 per-channel weights) calibrated on the same crops;
- ``openvino fp32`` / ``openvino fp32 lower rows``: the engine's fp32 OpenVINO runtime
  (:mod:`lipsyncd.engine.openvino_cpu`), whole faces and from the render's row down;
- ``openvino int8``: the engine's own opt-in ``precision: int8`` (:mod:`lipsyncd.engine.int8`:
  NNCF int8, calibrated as in a render on the first batch of faces it is given, here the first
  calibration batch);
- ``bf16 autocast``: ``torch.autocast("cpu", bfloat16)``. On a CPU without native bf16 (no
  AVX512_BF16/AMX) oneDNN converts to and from bf16 around fp32 arithmetic: this measures that
  cost, not a bf16 speed-up.

Rounds are interleaved (every lever once per round), so drift in the load of a shared machine
hits all of them alike: the ratios to ``fp32`` are what counts, not the absolute figures.

Output difference: each lever's uint8 faces against fp32 torch's on held-out crops (not the
calibration crops), on the lower half of the 96² face (rows 48-95, the mouth the network
draws): max abs difference in levels, and PSNR (peak 255). The weights are the conformance rule's
(the official checkpoint layout, ``tests/weights.py``): trained weights cannot be downloaded here,
speed does not depend on the weight values, but the quantisation error does, so the difference
figures say how a lever behaves on this network's shapes, not what it does to real mouths.

Crops: with ``--video`` (and ``--audio``), 96² crops of that clip's faces found by the engine's own
face track, and the mel windows of those frames; without, the four real crops of the conformance
fixture (``tests/fixtures/wav2lip``) and their mirror images, with the fixture's speech.

With ``--render-audio``, also whole renders of ``--video`` to that speech in one engine (as the
service runs them), fp32 and ``precision: int8`` interleaved, face track cached: frames per CPU
second, the int8 render's calibration included, and the one-off model preparation apart.

Re-run (about 15 minutes on a busy 2-core box; ``--levers`` picks a subset)::

    S=/work/shared/media
    nice .venv/bin/python benchmarks/network_levers.py --video $S/frontal_524sq_woman_glasses_talking_5s.mp4 \\
        --audio $S/speech_en_librispeech_14s_16k_mono_vorbis.ogg --frames 64 --rounds 3 \\
        --render-audio $S/speech_20s_16k_mono_latentsync_demo2.wav --json benchmarks/results/network_levers_cpu.json

Needs the ``levers`` extra for everything but ``fp32``/``compile``/``int8 fx``/``bf16``
(``pip install 'lipsyncd[levers]'``: torchao, onnx, onnxruntime, openvino, nncf); a lever whose
package is missing is reported as skipped. ``compile`` needs a C++ compiler (``gcc``/``g++``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config as inductor_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the rule weights (tests/weights.py)

from weights import rule_state_dict  # noqa: E402

from lipsyncd.engine.infer import CPU_BATCH, LOWER_FACE_ROW, MouthGenerator  # noqa: E402
from lipsyncd.engine.threads import ThreadPlan, torch_threads  # noqa: E402
from lipsyncd.engine.wav2lip import Wav2Lip  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "wav2lip"
Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A lever: ``(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in 0..1, whole faces (the
generator's ``first_row`` is dropped: no first rows are passed here)."""


def cpu_seconds() -> float:
    """User + system seconds of this process and its finished children (the compiler that
    torch.compile runs)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


@dataclass
class Lever:
    """One way to run the network, ready to call, and what it took to make it ready."""

    name: str
    network: Network
    setup_wall_s: float = 0.0
    setup_cpu_s: float = 0.0
    note: str = ""


@dataclass
class Inputs:
    """Real crops and their mel windows: some to calibrate on, others to time and compare on."""

    source: str
    calibration: list[tuple[np.ndarray, np.ndarray]]
    held_out: list[tuple[np.ndarray, np.ndarray]]
    extras: dict = field(default_factory=dict)


@functools.cache
def rule_model() -> Wav2Lip:
    """The generator with the conformance rule's weights, as :func:`load_wav2lip` leaves it; one
    instance, shared (each lever works on its own copy)."""
    with torch.device("meta"):
        model = Wav2Lip()
    model.load_state_dict({k: v.clone() for k, v in rule_state_dict().items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def network_inputs(crops: np.ndarray, mels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors :class:`MouthGenerator` hands the network for these crops (calibration data)."""
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    def capture(mel: torch.Tensor, face: torch.Tensor, first_row: int) -> torch.Tensor:
        captured.append((mel.clone(), face.clone()))
        return torch.zeros(face.shape[0], 3, *face.shape[2:])

    MouthGenerator(rule_model(), torch.device("cpu"), CPU_BATCH, capture)(crops, mels)
    return captured[0]


# ---- crops -------------------------------------------------------------------------------------

def clip_inputs(video: Path, audio: Path, frames: int) -> Inputs:
    """96² crops of ``video``'s faces (the engine's face track and crop), with the mel windows of
    ``audio`` for the same frame numbers; the first half calibrates, the second is held out."""
    import cv2

    from lipsyncd.engine import LipSyncEngine, RenderOptions, media
    from lipsyncd.engine.audio import load_speech
    from lipsyncd.engine.blend import MODEL_SIZE, crop_rect

    options = RenderOptions()
    with tempfile.TemporaryDirectory() as models:
        engine = LipSyncEngine(Path(models), device="cpu")
        info = media.probe(video)
        track = engine._analyse(video, info, info.frame_count, options, None, None, None)
    wanted = [i for i in range(min(info.frame_count, frames * 3)) if track.has_face[i]][:frames]
    crops = []
    for index, frame in zip(wanted, media.read_frames(video, info, wanted), strict=True):
        x0, y0, x1, y1 = crop_rect(track.boxes[index], options.pads, info.width, info.height)
        crops.append(cv2.resize(frame[y0:y1, x0:x1], (MODEL_SIZE, MODEL_SIZE)))
    windows = load_speech(audio).windows(info.fps)
    mels = windows[[i % len(windows) for i in wanted]]
    return _split(f"{video.name} (engine face track), {audio.name}", np.stack(crops), mels)


def fixture_inputs() -> Inputs:
    """The conformance fixture's four real crops, mirrored to eight, and its speech's windows."""
    from lipsyncd.engine.audio import load_speech

    faces = np.load(FIXTURES / "faces_bgr_uint8.npy")
    crops = np.concatenate([faces, faces[:, :, ::-1]] * 2)
    windows = load_speech(FIXTURES / "speech_16k_6s.wav").windows(25.0)
    mels = windows[list(range(0, 16 * 9, 9))]
    return _split("tests/fixtures/wav2lip faces (4, mirrored), speech_16k_6s.wav", crops, mels)


def _split(source: str, crops: np.ndarray, mels: np.ndarray) -> Inputs:
    batches = [(crops[i:i + CPU_BATCH], mels[i:i + CPU_BATCH]) for i in range(0, len(crops), CPU_BATCH)]
    batches = [b for b in batches if len(b[0]) == CPU_BATCH]
    if len(batches) < 2:
        raise SystemExit(f"need at least {2 * CPU_BATCH} crops with a face; got {len(crops)}")
    half = len(batches) // 2
    return Inputs(source, batches[:half], batches[half:], {"crops": len(crops)})


# ---- levers ------------------------------------------------------------------------------------

def fp32(model: Wav2Lip, inputs: Inputs) -> Network:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def from_row(network: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> Network:
    """``network`` drawing from :data:`LOWER_FACE_ROW` down, as a render draws a batch whose faces
    the paste reads only from there; rows above are left black (the mouth compared lies below)."""

    def run(mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        lower = network(mel, face, LOWER_FACE_ROW)
        return torch.cat([lower.new_zeros(len(lower), 3, LOWER_FACE_ROW, lower.shape[3]), lower], dim=2)

    return run


def compiled(model: Wav2Lip, inputs: Inputs) -> Network:
    net = copy.deepcopy(model).to(memory_format=torch.channels_last)
    mel, face = network_inputs(*inputs.calibration[0])
    with inductor_config.patch(freezing=True), torch.no_grad():
        fast = torch.compile(net, dynamic=False)
        fast(mel, face)  # compile now, on the one thread each worker runs it with
    return fast


def int8_pt2e(model: Wav2Lip, inputs: Inputs) -> Network:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = network_inputs(*inputs.calibration[0])
    graph = torch.export.export(copy.deepcopy(model), example).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    for batch in inputs.calibration:
        prepared(*network_inputs(*batch))
    quantized = convert_pt2e(prepared)
    with inductor_config.patch(freezing=True), torch.no_grad():
        fast = torch.compile(quantized, dynamic=False)
        fast(*example)
    return fast


def int8_fx(model: Wav2Lip, inputs: Inputs) -> Network:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = network_inputs(*inputs.calibration[0])
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    for batch in inputs.calibration:
        prepared(*network_inputs(*batch))
    return convert_fx(prepared)


def bf16_autocast(model: Wav2Lip, inputs: Inputs) -> Network:
    net = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(mel, face).float()

    return run


def _onnx_file(model: Wav2Lip, inputs: Inputs, folder: Path) -> Path:
    path = folder / "wav2lip.onnx"
    mel, face = network_inputs(*inputs.calibration[0])
    torch.onnx.export(copy.deepcopy(model), (mel, face.contiguous()), path, input_names=["mel", "face"],
                      output_names=["out"], dynamo=False, opset_version=17)
    return path


def _calibration_feeds(inputs: Inputs) -> list[dict[str, np.ndarray]]:
    return [{"mel": mel.numpy(), "face": face.contiguous().numpy()}
            for mel, face in (network_inputs(*batch) for batch in inputs.calibration)]


def _ort_network(path: Path) -> Network:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # each worker's call runs on that worker's thread, as torch's do
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {"mel": mel.numpy(), "face": np.ascontiguousarray(face.numpy())})[0]
        return torch.from_numpy(out)

    return run


def onnxruntime_fp32(model: Wav2Lip, inputs: Inputs, folder: Path) -> Network:
    return _ort_network(_onnx_file(model, inputs, folder))


def onnxruntime_int8(model: Wav2Lip, inputs: Inputs, folder: Path) -> Network:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = _onnx_file(model, inputs, folder)
    prepared, target = folder / "wav2lip.pre.onnx", folder / "wav2lip.int8.onnx"
    quant_pre_process(str(source), str(prepared))
    feeds = iter(_calibration_feeds(inputs))

    class Feeds(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return _ort_network(target)


def openvino_fp32(model: Wav2Lip, inputs: Inputs, workers: int, first_row: int) -> Network:
    """The engine's fp32 OpenVINO runtime (:class:`OpenVinoWav2Lip`), converted and compiled here
    (by a first call) for ``first_row``; whole faces from row 0."""
    from lipsyncd.engine.openvino_cpu import OpenVinoWav2Lip

    network = OpenVinoWav2Lip(copy.deepcopy(model), workers)
    with torch.inference_mode():
        network(*network_inputs(*inputs.calibration[0]), first_row)
    return from_row(network) if first_row else lambda mel, face: network(mel, face, 0)


def openvino_int8(model: Wav2Lip, inputs: Inputs, workers: int) -> Network:
    """The engine's own ``precision: int8`` network, calibrated as in a render: on the first
    batch of faces it is given (here the first calibration batch)."""
    from lipsyncd.engine.int8 import Int8Wav2Lip

    network = Int8Wav2Lip(copy.deepcopy(model), workers)
    with torch.inference_mode():
        network(*network_inputs(*inputs.calibration[0]))
    return network


LEVERS: dict[str, str] = {
    "fp32": "fp32 eager, channels-last, whole faces (the baseline)",
    "fp32 lower rows": f"the render's fp32 path: fp32, drawn from row {LOWER_FACE_ROW} down (what the paste reads)",
    "compile": "torch.compile, inductor, frozen weights, fp32",
    "int8 pt2e": "torchao PT2E static int8 (X86InductorQuantizer), compiled by inductor",
    "int8 fx": "FX graph-mode static int8, x86 qconfig, eager quantized ops",
    "onnxruntime fp32": "ONNX Runtime CPU, fp32",
    "onnxruntime int8": "ONNX Runtime CPU, static QDQ int8 (u8 activations, s8 per-channel weights)",
    "openvino fp32": "OpenVINO CPU, fp32 (precision hint f32), whole faces",
    "openvino fp32 lower rows": f"the render's fp32 path where OpenVINO is installed: from row {LOWER_FACE_ROW} down",
    "openvino int8": "the engine's precision: int8 (OpenVINO, NNCF int8 calibrated on one batch of the video)",
    "bf16 autocast": "torch.autocast(cpu, bfloat16): emulated, no native bf16 on this CPU",
}


def build(name: str, model: Wav2Lip, inputs: Inputs, folder: Path, workers: int) -> Lever:
    """Make lever ``name`` ready on one thread (as each worker runs it), timing the making."""
    builders: dict[str, Callable[[], Network]] = {
        "fp32": lambda: fp32(model, inputs),
        "fp32 lower rows": lambda: from_row(fp32(model, inputs)),
        "compile": lambda: compiled(model, inputs),
        "int8 pt2e": lambda: int8_pt2e(model, inputs),
        "int8 fx": lambda: int8_fx(model, inputs),
        "onnxruntime fp32": lambda: onnxruntime_fp32(model, inputs, folder),
        "onnxruntime int8": lambda: onnxruntime_int8(model, inputs, folder),
        "openvino fp32": lambda: openvino_fp32(model, inputs, workers, 0),
        "openvino fp32 lower rows": lambda: openvino_fp32(model, inputs, workers, LOWER_FACE_ROW),
        "openvino int8": lambda: openvino_int8(model, inputs, workers),
        "bf16 autocast": lambda: bf16_autocast(model, inputs),
    }
    wall, cpu = time.perf_counter(), cpu_seconds()
    # inductor compiles in this process (not in a pool of workers), so its CPU time is counted;
    # its on-disk cache is the run's own (see main), so a compile is never an earlier run's
    with torch_threads(1), inductor_config.patch(compile_threads=1):
        network = builders[name]()
    return Lever(name, network, time.perf_counter() - wall, cpu_seconds() - cpu, LEVERS[name])


# ---- measuring ---------------------------------------------------------------------------------

def generator_for(lever: Lever, model: Wav2Lip) -> MouthGenerator:
    """The frame loop's generator (pre- and post-processing, batch, padding) around the lever."""
    network = lever.network
    return MouthGenerator(model, torch.device("cpu"), CPU_BATCH, lambda mel, face, first_row: network(mel, face))


def mouth_difference(faces: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs difference (levels) and PSNR (dB, peak 255) of the lower half of 96² faces."""
    lower = slice(faces.shape[1] // 2, None)
    a, b = faces[:, lower].astype(np.float64), reference[:, lower].astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    per_frame = np.mean((a - b) ** 2, axis=(1, 2, 3))
    worst = float(np.max(per_frame))
    return {"mouth_max_abs_levels": float(np.max(np.abs(a - b))),
            "mouth_psnr_db": 10 * np.log10(255 ** 2 / mse) if mse else float("inf"),
            "mouth_psnr_worst_frame_db": 10 * np.log10(255 ** 2 / worst) if worst else float("inf")}


def measure(levers: list[Lever], model: Wav2Lip, inputs: Inputs, plan: ThreadPlan,
            rounds: int) -> dict[str, dict[str, float]]:
    """Frames per CPU second and wall ms per frame, rounds interleaved; each call runs one held-out
    batch per network worker at once, on one thread each, as the frame loop does."""
    generators = {lever.name: generator_for(lever, model) for lever in levers}
    batches = inputs.held_out
    workers = ThreadPoolExecutor(plan.network_workers, initializer=torch.set_num_threads, initargs=(plan.network,))

    def call(generator: MouthGenerator, first: int) -> int:
        jobs = [batches[(first + w) % len(batches)] for w in range(plan.network_workers)]
        list(workers.map(lambda job: generator(*job), jobs))
        return CPU_BATCH * len(jobs)

    totals = {name: [0.0, 0.0, 0] for name in generators}
    with torch.inference_mode():
        for generator in generators.values():
            call(generator, 0)  # warm-up: kernels built for the batch shape, on the workers' threads
        for round_ in range(rounds):
            for name, generator in generators.items():
                wall, cpu = time.perf_counter(), cpu_seconds()
                frames = sum(call(generator, round_ + i) for i in range(2))
                totals[name][0] += cpu_seconds() - cpu
                totals[name][1] += time.perf_counter() - wall
                totals[name][2] += frames
            print(f"round {round_ + 1}/{rounds}: " + ", ".join(
                f"{n} {t[2] / t[0]:.2f}" for n, t in totals.items()) + " frames/CPU s", flush=True)
    workers.shutdown()
    return {name: {"frames": n, "frames_per_cpu_s": n / cpu, "ms_cpu_per_frame": 1000 * cpu / n,
                   "ms_wall_per_frame": 1000 * wall / n} for name, (cpu, wall, n) in totals.items()}


def differences(levers: list[Lever], model: Wav2Lip, inputs: Inputs) -> dict[str, dict[str, float]]:
    """Each lever's faces on the held-out crops against fp32 torch's."""
    outputs = {}
    with torch.inference_mode(), torch_threads(1):
        for lever in levers:
            generator = generator_for(lever, model)
            outputs[lever.name] = np.concatenate([generator(*batch) for batch in inputs.held_out])
    return {name: mouth_difference(faces, outputs["fp32"]) for name, faces in outputs.items()}


def run(args: argparse.Namespace) -> dict:
    inputs = clip_inputs(args.video, args.audio, args.frames) if args.video else fixture_inputs()
    plan = ThreadPlan.for_device("cpu")
    model = rule_model()
    report: dict = {
        "what": "Wav2Lip generator alone, frames per CPU second (getrusage user+sys) per lever, as the frame "
                "loop runs it; output difference vs fp32 torch on the lower half of the 96² faces",
        "weights": "conformance rule (official checkpoint layout); real weights are not available here: speed "
                   "does not depend on them, the quantisation error does",
        "crops": inputs.source, "calibration_frames": len(inputs.calibration) * CPU_BATCH,
        "held_out_frames": len(inputs.held_out) * CPU_BATCH,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "batch": CPU_BATCH, "thread_plan": plan.as_dict(), "rounds": args.rounds, "levers": {}, "skipped": {},
    }
    levers = []
    with tempfile.TemporaryDirectory(prefix="network-levers-") as folder:
        for name in ["fp32", *[n for n in args.levers if n != "fp32"]]:
            work = Path(folder) / name.replace(" ", "-")
            work.mkdir()
            try:
                lever = build(name, model, inputs, work, plan.network_workers)
            except Exception as error:  # a missing package or an unsupported layer: report it, go on
                report["skipped"][name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                print(f"{name}: skipped ({report['skipped'][name]})", flush=True)
                if args.verbose:
                    traceback.print_exc()
                continue
            print(f"{name}: ready in {lever.setup_wall_s:.1f} s ({lever.setup_cpu_s:.1f} CPU s)", flush=True)
            levers.append(lever)
        speed = measure(levers, model, inputs, plan, args.rounds)
        difference = differences(levers, model, inputs)
    base = speed["fp32"]["frames_per_cpu_s"]
    for lever in levers:
        rate = speed[lever.name]["frames_per_cpu_s"]
        figures = {"what": lever.note, **speed[lever.name], "vs_fp32_per_cpu_s": rate / base,
                   "setup_wall_s": lever.setup_wall_s, "setup_cpu_s": lever.setup_cpu_s, **difference[lever.name]}
        saved = args.render_frames * (1 / base - 1 / rate)
        figures[f"cpu_s_saved_over_{args.render_frames}_frames"] = saved
        figures[f"pays_over_{args.render_frames}_frames"] = saved > lever.setup_cpu_s
        report["levers"][lever.name] = figures
    return report


def renders(video: Path, audio: Path, rounds: int) -> dict:
    """Whole renders of ``video`` to ``audio`` per precision in one engine (a long-lived process,
    as the service's), rounds interleaved, face track cached first: CPU seconds per render (the
    int8 one includes calibrating on the video's faces), and the one-off model preparation."""
    from weights import write_checkpoint

    from lipsyncd.engine import LipSyncEngine, RenderOptions

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="network-levers-render-") as folder:
        work = Path(folder)
        write_checkpoint(work / "wav2lip_gan.pth")
        engine = LipSyncEngine(work, device="cpu", cache_dir=work / "cache")
        speech = engine.load_audio(audio)
        engine.render(speech, video, work / "track.mp4", RenderOptions())  # caches the face track
        for round_ in range(rounds):
            for precision in ("fp32", "int8"):
                options = RenderOptions(precision=precision)
                entry = figures.setdefault(precision, {"cpu_s": 0.0, "wall_s": 0.0, "frames": 0})
                cpu = cpu_seconds()
                engine.check_ready(options)
                if round_ == 0:
                    entry["prepare_cpu_s"] = cpu_seconds() - cpu  # once per process
                wall, cpu = time.perf_counter(), cpu_seconds()
                result = engine.render(speech, video, work / f"{precision}.mp4", options)
                entry["cpu_s"] += cpu_seconds() - cpu
                entry["wall_s"] += time.perf_counter() - wall
                entry["frames"] += result.frames
                print(f"render {precision}: {result.frames} frames, {cpu_seconds() - cpu:.1f} CPU s", flush=True)
    for entry in figures.values():
        entry["frames_per_cpu_s"] = entry["frames"] / entry["cpu_s"]
    ratio = figures["int8"]["frames_per_cpu_s"] / figures["fp32"]["frames_per_cpu_s"]
    return {**figures, "int8_vs_fp32_per_cpu_s": ratio}


def print_table(report: dict) -> None:
    plan = report["thread_plan"]
    print(f"\n{report['crops']}; weights: conformance rule; {report['rounds']} interleaved rounds; "
          f"batch {report['batch']}, threads {plan['network_workers']}×{plan['network']}")
    print(f"{'lever':18} {'fr/CPU s':>8} {'vs fp32':>7} {'ms CPU':>7} {'ms wall':>7} {'setup s':>7} "
          f"{'max abs':>7} {'PSNR dB':>7}")
    for name, r in report["levers"].items():
        print(f"{name:18} {r['frames_per_cpu_s']:8.2f} {r['vs_fp32_per_cpu_s']:7.2f} {r['ms_cpu_per_frame']:7.1f} "
              f"{r['ms_wall_per_frame']:7.1f} {r['setup_cpu_s']:7.1f} {r['mouth_max_abs_levels']:7.0f} "
              f"{r['mouth_psnr_db']:7.1f}")
    for name, why in report["skipped"].items():
        print(f"{name:18} skipped: {why}")
    for precision, r in report.get("renders", {}).items():
        if isinstance(r, dict):
            print(f"whole renders, {precision}: {r['frames_per_cpu_s']:.2f} frames/CPU s "
                  f"({r['frames']} frames, {r['cpu_s']:.1f} CPU s; preparing the model {r['prepare_cpu_s']:.1f} CPU s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, help="take crops from this clip's faces (with --audio)")
    parser.add_argument("--audio", type=Path, help="speech for the mel windows (with --video)")
    parser.add_argument("--frames", type=int, default=48, help="crops taken from --video (half calibrate)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--render-frames", type=int, default=1500, help="render length for the pay-back of setup")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="LEVER",
                        help=f"which levers (fp32 always runs): {', '.join(LEVERS)}")
    parser.add_argument("--render-audio", type=Path,
                        help="also render --video to this speech whole, fp32 and int8 interleaved (--render-rounds)")
    parser.add_argument("--render-rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a skipped lever")
    args = parser.parse_args()
    if bool(args.video) != bool(args.audio):
        parser.error("--video and --audio go together")
    if args.render_audio and not args.video:
        parser.error("--render-audio renders --video")
    with tempfile.TemporaryDirectory(prefix="network-levers-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # every compile is cold, as in a fresh install
        report = run(args)
    if args.render_audio:
        report["renders"] = renders(args.video, args.render_audio, args.render_rounds)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
