#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (no Ray, no pydantic there): the engine
# benchmark and the fractional-replica measurement, results under $OUT.
# Before the device call, here:  echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl imageio-ffmpeg==0.8.1
# Device call:  bash bench/gpu_run.sh   (with carry: [".whl"])
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 300 python3 -m bench engine --device cuda 2>&1 | tee "$OUT/engine.log"
timeout 200 python3 -m bench.fractional --device cuda --processes 1,2,4,8 --seconds 15 2>&1 | tee "$OUT/fractional.log"
cp bench/results/*-cuda-*.json "$OUT/" 2>/dev/null
