"""Benchmark MuseTalk's stages on one device: seconds per frame, and what fp16 autocast costs in accuracy.

Prints a table and writes JSON. Uses the conformance rule weights (speed does not depend on the
weight values) and the conformance fixture's two face crops and 2 s of speech, so it needs no
download:

    python benchmarks/musetalk_stages.py --device cpu --batch 1 --json benchmarks/results/musetalk_cpu.json
    python benchmarks/musetalk_stages.py --device cuda --batch 8 32 --json "$OUT/musetalk_gpu.json"

Per batch size and precision (fp32; on CUDA also fp16 autocast) it times the whisper encoder
(one 30 s window), the VAE encode of the masked and whole crops, the UNet step and the VAE decode,
after one warm-up pass. For fp16 it reports the largest deviation from fp32 of the UNet output
and of the decoded uint8 faces (levels, and the share of values that differ), which is what
decides whether fp16 may be the GPU default (the conformance tolerance for the UNet is 1e-4 at
fp32; fp16 is judged by the decoded picture).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(device: torch.device, run):  # noqa: ANN001, ANN202 (a thunk and its result)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def measure(networks, speech, crops: np.ndarray, device: torch.device, half: bool) -> dict:  # noqa: ANN001
    from lipsyncd.engine.musetalk import audio, generate

    frames = [i * 12 % 50 for i in range(len(crops))]
    with torch.autocast(device.type, dtype=torch.float16, enabled=half):
        mel = audio.log_mel(networks.features, speech.wav[:audio.SEGMENT_SAMPLES]).to(device)
        for warm in (True, False):  # first pass warms kernels and allocators up
            _, whisper_s = timed(device, lambda: audio.stacked_hidden_states(networks.whisper, mel))
            prompts = speech.prompts(frames, 25).to(device)
            latents, encode_s = timed(device, lambda: generate.unet_input(networks.vae, crops))
            out, unet_s = timed(device, lambda: generate.unet_step(networks.unet, latents, prompts))
            images, decode_s = timed(device, lambda: generate.decode(networks.vae, out))
    n = len(crops)
    return {"batch": n, "fp16_autocast": half, "whisper_window_s": whisper_s,
            "vae_encode_s_per_frame": encode_s / n, "unet_s_per_frame": unet_s / n,
            "vae_decode_s_per_frame": decode_s / n,
            "total_s_per_frame": (encode_s + unet_s + decode_s) / n,
            "_unet_out": out.float().cpu(), "_faces": generate.to_bgr_uint8(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))  # the test utilities: rule weights, fixtures
    from musetalk_weights import FIXTURES, rule_networks

    from lipsyncd.engine.audio import decode_audio
    from lipsyncd.engine.musetalk.audio import SpeechPrompts

    device = torch.device(args.device)
    start = time.perf_counter()
    networks = rule_networks().to(device)
    load_s = time.perf_counter() - start
    speech = SpeechPrompts(decode_audio(FIXTURES / "input_speech_16k_2.03s.wav"), networks.whisper, networks.features)
    pair = np.load(FIXTURES / "face_crops_bgr_uint8.npy")
    rows = []
    for batch in args.batch:
        crops = np.resize(pair, (batch, *pair.shape[1:]))
        fp32 = measure(networks, speech, crops, device, half=False)
        rows.append(fp32)
        if device.type == "cuda":
            fp16 = measure(networks, speech, crops, device, half=True)
            levels = np.abs(fp16["_faces"].astype(int) - fp32["_faces"])
            fp16.update(unet_max_abs_diff_vs_fp32=float((fp16["_unet_out"] - fp32["_unet_out"]).abs().max()),
                        decoded_max_levels_vs_fp32=int(levels.max()),
                        decoded_share_differing_vs_fp32=float((levels > 0).mean()))
            rows.append(fp16)
    for row in rows:
        del row["_unet_out"], row["_faces"]
        print(json.dumps(row))
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_load_average_1_5_15_min": os.getloadavg(), "weights_generate_and_load_s": load_s, "rows": rows}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
