#!/usr/bin/env bash
# The benchmark on the lent GPU box (device tool), which has Python 3.12, torch, numpy and OpenCV
# but neither network nor PyAV/librosa. From this repo's root, here, once per session:
#
#   bash benchmarks/gpu_box.sh prepare      # the clip and speech into .device/, wheels into .whl/
#
# then on the box, with carry [".whl", ".device"]:   bash benchmarks/gpu_box.sh
# (~45 MB of wheels, ~60 MB with the tree and the clip: under the 64 MiB a call carries; .whl/ and
# .device/ are git-ignored. diffusers is MuseTalk's, for the models side by side; the box's own
# transformers serves its Whisper encoder.) Figures land in $OUT/gpu_1080x1920.json, written
# also when a step fails (with the error), so a short loan never comes back empty-handed.
set -euo pipefail
if [ "${1:-}" = prepare ]; then
    media=../shared/media
    rm -rf .whl && mkdir -p .whl .device  # one version of each wheel, or the install on the box stops
    cp "$media/frontal_1080x1920_man_talking_20s_hevc.mp4" .device/clip.mp4
    cp "$media/speech_20s_16k_mono_latentsync_demo2.wav" .device/speech.wav
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_27_x86_64 -d .whl av==18.1.0 librosa==0.11.0 soundfile soxr audioread \
        pooch platformdirs decorator cffi pycparser diffusers==0.42.1 importlib_metadata
    du -sh .whl .device
    exit
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 benchmarks/render_bench.py --video .device/clip.mp4 --audio .device/speech.wav \
    --frames 600 --batch-size "${BATCH:-256}" --psnr-clips .device/clip.mp4 \
    --json "${OUT:-benchmarks/results}/gpu_1080x1920.json"
