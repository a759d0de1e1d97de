#!/usr/bin/env bash
# GPU benchmark of `curate train` (bench/bench_train_gpu.py) on the device machine, with the wheels it lacks.
#
#   bash bench/run_train_gpu.sh fetch     # HERE, once: download the wheels into .whl/ (git-ignored via .git/info/exclude)
#   bash bench/run_train_gpu.sh           # THERE (device run, carry [".whl"], timeout_s 600): install, run, copy results to $OUT
#
# The device image has torch 2.11 (CUDA), triton, accelerate, peft, tokenizers, safetensors, pandas, pyarrow,
# xxhash, fsspec, huggingface-hub 1.33, psutil; it lacks trl, datasets (+ dill, multiprocess), liger-kernel and
# polars, and has an older transformers (5.17). The benchmark's imports need no polars (curate.train.fused and TRL
# only; tests/train/test_bench_imports.py keeps it so), so polars is not carried.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5 transformers==5.24.0)

if [[ "${1:-}" == "fetch" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
  du -sh .whl
  exit 0
fi

OUT="${OUT:-/tmp/bench-train-out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import importlib.metadata as md
for p in ("torch", "triton", "transformers", "trl", "datasets", "accelerate", "peft", "liger-kernel", "pyarrow",
          "fsspec", "huggingface-hub", "tokenizers"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "MISSING")
PY
# fail in seconds, with the missing module named, before any child process starts
python3 -c "import trl, datasets, transformers, liger_kernel; from trl.experimental.orpo import ORPOTrainer; \
import curate.train.fused, curate.train.trainer; print('imports ok: trl', trl.__version__, 'transformers', \
transformers.__version__, 'datasets', datasets.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "run_train_gpu.sh: a carried wheel is missing or broken (see above)" >&2; exit 2; }
set +e
python3 bench/bench_train_gpu.py --out /tmp/bench-train "$@" 2>&1 | tee "$OUT/bench.log"
code=${PIPESTATUS[0]}
cp /tmp/bench-train/results.json /tmp/bench-train/results.md "$OUT/" 2>/dev/null
exit "$code"
