"""The GPU benchmark's wrapper (bench/run_train_gpu.sh) carries wheels for what the device machine lacks; polars is
among the missing and is not carried, so nothing the benchmark or the trainer imports may need it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_trainer_and_benchmark_import_without_polars():
    code = ("import sys; sys.modules['polars'] = None; "  # `import polars` now raises ImportError
            "import curate.train.fused, curate.train.trainer, curate.train.guard, curate.train.evaluate; "
            "sys.path.insert(0, 'bench'); import bench_train_gpu; "
            "from curate.train.trainer import trainer_class; from curate.train import spec; "
            "print(trainer_class(spec.resolve('tiny-cpu', ['curate.loss=chunked'], 'm')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CurateChunkedORPOTrainer"


def test_wrapper_carries_what_the_device_lacks():
    text = (ROOT / "bench" / "run_train_gpu.sh").read_text()
    wheels = next(line for line in text.splitlines() if line.startswith("WHEELS=("))
    for package in ("trl==", "datasets==", "dill==", "multiprocess==", "liger-kernel==", "transformers=="):
        assert package in wheels, package
    assert "import trl, datasets, transformers, liger_kernel" in text  # the fail-fast import check
