"""Where the dedup stage's memory goes (issue 16): peak anonymous memory (RssAnon) per phase of one stage run.

    .venv/bin/curate run pipelines/default.toml --input IN/ --skip dedup --skip balance --no-export --out PRE/
    .venv/bin/python bench/dedup_memory.py PRE/03-language/kept.parquet OUT/            # stand-in embedder
    .venv/bin/python bench/dedup_memory.py PRE/03-language/kept.parquet OUT/ --real     # the real model (slow)

Runs the default pipeline's dedup stage (pipelines/default.toml, the cache under OUT/cache) through the local
engine on a step's input, as `curate run` does, and prints the peak RssAnon of each phase: the stage's own
functions (`_normalise`, `_exact`, `_near`, `_coverage`, `_semantic`, `_decisions`, `_summary`), the embedder's
(`Embedder.embed`, `Embedder.encode`, the cache's `read`), the search (`self_pairs`, `nearest_similarity`) and the
runner's `sink_result`. A sampler thread reads /proc/self/status every 0.1 s; the phase is the innermost one
running (a function wrapped for the label only; what it does is unchanged).

Without `--real` the vectors come from a stand-in fed through `curate.embed.spread_over` (the Ray engine's hook):
seeded pseudo-random unit vectors per text, 512-d like use-multilingual-v3, so a 1M-pair profile takes minutes, not
the ~50 CPU-minutes of the model. Every structure the stage keeps is its own; what differs from a real run: the
model's activations while it encodes (before the vectors are read back), and the semantic pairs found (random
vectors have none), so the decisions match a real run's exact and near removals only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Phases:
    """The innermost running phase, and the peak RssAnon seen during each."""

    def __init__(self) -> None:
        self.stack = ["start"]
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        while not self.stop.is_set():
            name, kb = self.stack[-1], _anon_kb()
            self.peak[name] = max(self.peak.get(name, 0), kb)
            time.sleep(0.1)

    def wrap(self, owner: Any, attr: str, label: str | None = None) -> None:
        fn = getattr(owner, attr)
        name = label or attr

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            self.stack.append(name)
            try:
                return fn(*a, **k)
            finally:
                self.stack.pop()

        setattr(owner, attr, timed)


def _anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def stand_in(spec: Any, chunks: list[list[str]], batch_size: int):
    """`curate.embed.ChunkMapper`: a seeded pseudo-random 512-d vector per text (the embedder normalises them)."""
    for chunk in chunks:
        out = np.empty((len(chunk), 512), dtype=np.float32)
        for k, text in enumerate(chunk):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[k] = np.random.default_rng(seed).standard_normal(512, dtype=np.float32)
        yield out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="the dedup step's input (a step's kept.parquet)")
    ap.add_argument("out", type=Path, help="folder for the step's files and the embedding cache")
    ap.add_argument("--real", action="store_true", help="embed with the pipeline's model, not the stand-in")
    args = ap.parse_args()

    from curate import config, embed, runner
    from curate.dedup import search
    from curate.engines.local import Engine
    from curate.stages import dedup

    pipe = config.load(ROOT / "pipelines" / "default.toml",
                       overrides=[f"dedup.semantic.cache_dir={args.out / 'cache'}"])
    cfg = pipe.stage_config("dedup")
    ph = Phases()
    for attr in ("_normalise", "survivor_rank", "_exact", "_near", "_coverage", "_semantic", "_decisions", "_summary"):
        ph.wrap(dedup, attr)
    ph.wrap(search, "self_pairs")
    ph.wrap(search, "nearest_similarity")
    ph.wrap(embed.Embedder, "embed", "Embedder.embed")
    ph.wrap(embed.Embedder, "encode", "Embedder.encode")
    ph.wrap(embed._Cache, "read", "cache.read")
    ph.wrap(runner, "sink_result")
    threading.Thread(target=ph.sample, daemon=True).start()
    t0, c0 = time.perf_counter(), time.process_time()
    step = args.out / "step"
    if args.real:
        stats = Engine().run_stage("dedup", cfg, args.input, step)
    else:
        with embed.spread_over(stand_in):
            stats = Engine().run_stage("dedup", cfg, args.input, step)
    ph.stop.set()
    time.sleep(0.2)
    print(json.dumps({"input": str(args.input), "embedder": "real" if args.real else "stand-in",
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                      "rows_in": stats.get("rows_in"), "removed": stats.get("removed"),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
    for name, kb in ph.peak.items():
        print(f"{name:22s} {kb / 1024:8,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
