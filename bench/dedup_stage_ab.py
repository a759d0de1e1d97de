"""The dedup stage alone on one stage file, two checkouts interleaved (A B A B), and whether they decide the same.

    .venv/bin/python bench/dedup_stage_ab.py RUN/03-language/kept.parquet --a ../wt-perf/bench/out/default/baseline-1e52a76
        [--b .] [--rounds 2] [--set 'methods=["exact","near"]'] [--head N]
    .venv/bin/python bench/dedup_stage_ab.py RUN/02-quality/kept.parquet --stage language --a /work/main

`--stage language`: the language stage instead, its kept rows and rejects streamed to Parquet as `curate run`
does (runner.sink_result, the stage's defaults plus --set); reported the same way, then whether the two checkouts'
kept.parquet and rejects.parquet are byte-identical (SHA-256) and, if not, whether their contents are equal.

Each run is a child process of its checkout's own .venv/bin/python with that checkout first on sys.path: it reads
the file, runs `curate.stages.dedup.run` with the stage's defaults (plus --set), collects kept and rejects, and
writes (row_id, reason, dup_of, dup_similarity) of every row. Reported per run: CPU seconds and peak RSS of the
child (wait4), wall seconds, the 1-minute load average before and after; then the rows whose decision differs
between A and B (reason, survivor, similarity), with their prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import polars as pl
from curate.config import build, parse_override
from curate.stages import dedup
table = {"semantic": {"progress": False, "cache_dir": ""}}
for item in json.loads(sys.argv[4]):
    _, key, value = parse_override("dedup." + item)
    t = table
    parts = key.split(".")
    for p in parts[:-1]:
        t = t.setdefault(p, {})
    t[parts[-1]] = value
cfg = build(dedup.Config, table, "[dedup]")
lf = pl.scan_parquet(sys.argv[2])
head = int(sys.argv[5])
if head:
    lf = lf.head(head)
t0 = time.process_time()
res = dedup.run(lf, cfg).collect()
cpu = time.process_time() - t0
kept = res.kept.select("row_id", pl.lit(None, dtype=pl.String).alias("reason"), pl.lit(None, dtype=pl.String).alias("dup_of"),
                       pl.lit(None, dtype=pl.Float64).alias("dup_similarity"))
rej = res.rejects.select("row_id", "reason", "dup_of", "dup_similarity")
pl.concat([kept, rej]).sort("row_id").write_parquet(sys.argv[3])
print(json.dumps({"stage_cpu_s": round(cpu, 2), "kept": res.kept.height, "rejects": res.rejects.height,
                  "near": res.stats.get("near"), "removed": res.stats.get("removed")}))
"""

LANGUAGE_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import polars as pl
from curate.config import build, parse_override
from curate.runner import sink_result
from curate.stages import language
table = {}
for item in json.loads(sys.argv[4]):
    _, key, value = parse_override("language." + item)
    table[key] = value
cfg = build(language.Config, table, "[language]")
lf = pl.scan_parquet(sys.argv[2])
head = int(sys.argv[5])
if head:
    lf = lf.head(head)
t0 = time.process_time()
res = language.run(lf, cfg)
kept, rejects = sink_result(res.kept, res.rejects, Path(sys.argv[3]))
cpu = time.process_time() - t0
print(json.dumps({"stage_cpu_s": round(cpu, 2), "kept": pl.scan_parquet(kept).select(pl.len()).collect().item(),
                  "rejects": pl.scan_parquet(rejects).select(pl.len()).collect().item(),
                  "pairs": res.stats.get("pairs")}))
"""


def run_one(checkout: Path, stage_file: Path, out: Path, sets: list[str], head: int, stage: str = "dedup") -> dict:
    py = checkout / ".venv" / "bin" / "python"
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    child = LANGUAGE_CHILD if stage == "language" else CHILD
    proc = subprocess.Popen([str(py), "-c", child, str(checkout), str(stage_file), str(out), json.dumps(sets),
                             str(head)], stdout=subprocess.PIPE, text=True, cwd=checkout)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    stdout = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"{checkout}: child failed ({status})")
    info = json.loads(stdout.strip().splitlines()[-1])
    info.update({"checkout": str(checkout), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "wall_s": round(wall, 1),
                 "peak_rss_mb": round(ru.ru_maxrss / 1024), "load": [round(load0, 1), round(os.getloadavg()[0], 1)]})
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage_file", type=Path)
    ap.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    ap.add_argument("--b", type=Path, default=ROOT, help="checkout B (default: this one)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="dedup option, e.g. 'methods=[\"exact\",\"near\"]'")
    ap.add_argument("--head", type=int, default=0, help="only the first N rows of the file")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "dedup_ab")
    ap.add_argument("--reuse-a", action="store_true", help="keep A's decisions from an earlier run in --out")
    ap.add_argument("--stage", choices=("dedup", "language"), default="dedup")
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "language":
        return compare_language(args)
    files = {}
    for r in range(args.rounds):
        for name, co in (("a", args.a), ("b", args.b)):
            f = args.out / f"{name}-{r}.parquet"
            if name == "a" and args.reuse_a and f.exists():
                files[name] = f
                continue
            info = run_one(co.resolve(), args.stage_file.resolve(), f, args.set, args.head)
            files[name] = f
            print(json.dumps({"round": r, "side": name, **info}), flush=True)
    a = pl.read_parquet(files["a"])
    b = pl.read_parquet(files["b"])
    j = a.join(b, on="row_id", suffix="_b")
    diff = j.filter((pl.col("reason").eq_missing(pl.col("reason_b")).not_())
                    | (pl.col("dup_of").eq_missing(pl.col("dup_of_b")).not_())
                    | ((pl.col("dup_similarity") - pl.col("dup_similarity_b")).abs() > 1e-9))
    by = diff.group_by("reason", "reason_b").len().sort("len", descending=True)
    print(f"rows {a.height:,}; decisions differ for {diff.height:,}")
    for row in by.iter_rows():
        print(f"  A {row[0]} -> B {row[1]}: {row[2]:,}")
    diff.write_parquet(args.out / "diff.parquet")


def compare_language(args: argparse.Namespace) -> None:
    import hashlib

    dirs = {}
    for r in range(args.rounds):
        for name, co in (("a", args.a), ("b", args.b)):
            d = args.out / f"language-{name}-{r}"
            info = run_one(co.resolve(), args.stage_file.resolve(), d, args.set, args.head, stage="language")
            dirs[name] = d
            print(json.dumps({"round": r, "side": name, **info}), flush=True)
    for f in ("kept.parquet", "rejects.parquet"):
        a, b = dirs["a"] / f, dirs["b"] / f
        same = hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
        equal = same or pl.read_parquet(a).equals(pl.read_parquet(b))
        print(f"{f}: {'byte-identical' if same else 'bytes differ'}; contents {'equal' if equal else 'DIFFER'}")


if __name__ == "__main__":
    sys.exit(main())
