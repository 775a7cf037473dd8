#!/bin/bash
# The GPU measurements still open for production-size Whisper models, as one run on a lent
# device (about 6 minutes on an H100). Prepare on the development machine first:
#
#   .venv/bin/pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl \
#       transformers==5.24.0 tokenizers==0.23.3 peft==0.21.2 soundfile cffi pycparser orjson \
#       whisper-normalizer more-itertools
#   .venv/bin/python benchmarks/bench_trainer.py prepare --out build/device && rm -r build/device/{train,eval}
#
# then run `bash benchmarks/device_run.sh` there with `.whl` and `build/device` carried along; the
# device's own torch (a CUDA build) is used. Results land in $OUT (JSON and a log).
set -u
OUT=${OUT:-build/device/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"
quiet() { grep -v "Writing model\|Loading weights\|FutureWarning\|warnings.warn"; }

# 1. Generation (validation, regression suites, serving): whisper-small shape, batch 16, 64
#    utterances of 5-25 s; fp32 against bf16, the static key/value cache, a compiled decoder.
timeout 240 python3 benchmarks/bench_transcribe.py whisper --device cuda --shape small --batch 16 \
    --utterances 64 --variant fp32 --variant bf16 --variant bf16-static --variant bf16-static-compile \
    --json "$OUT/generation.json" 2>&1 | quiet | tee "$OUT/generation.log"

# 2. Training throughput toward 30 % MFU: compiled at batch 64 (measured so far: 20.9 % compiled at
#    batch 32, 17.9 % eager at batch 64), the eager batch-64 row again as the same run's baseline.
timeout 240 python3 benchmarks/bench_trainer.py whisper --data build/device/data.npz --shape small \
    --warmup 8 --variant full-bf16:64:24 --variant full-bf16-compile:64:40 \
    --json "$OUT/training.json" 2>&1 | quiet | tee "$OUT/training.log"
