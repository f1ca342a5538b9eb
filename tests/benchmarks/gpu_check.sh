#!/usr/bin/env bash
# The GPU check as ONE device command (tests/benchmarks/bench_gpu.py says what it measures).
# A session that is lent a GPU fetches the wheels the machine lacks here first (BENCHMARKS.md,
# "GPU check"), then calls the `run` tool with
#   command: bash tests/benchmarks/gpu_check.sh   carry: [".whl"]   timeout_s: 420
# It installs the wheels (the line device-wheels.sh prints in its header), runs the three checks
# under a 240 s budget and a hard 330 s stop, and leaves report.md, report.json, bench_gpu.log and
# nvidia-smi.txt in $OUT (they come back; report.* are rewritten after each check, so a stopped
# run still returns what it finished). Off the device machine $OUT defaults to build/gpu-check.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; OUT=${OUT:-build/gpu-check}; mkdir -p "$OUT"; nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; set -o pipefail; PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 timeout 330 python3 tests/benchmarks/bench_gpu.py --device cuda --out "$OUT" --time-budget 240 2>&1 | tee "$OUT/bench_gpu.log"
