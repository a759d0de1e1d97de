"""Benchmark (issue 13): the same pipeline on the local engine and on Ray Data with 1 and 2 worker processes.

    .venv/bin/python bench/bench_ray.py                                  # 1M pairs, local / ray-1 / ray-2
    .venv/bin/python bench/bench_ray.py --sizes 100000 --check           # + byte-identity of the run folders
    .venv/bin/python bench/bench_ray.py --sizes 100000 --stages clean,language,dedup,balance --check \
        --set 'dedup.methods=["exact", "near"]' --modes local,ray-2

Input: synthetic zh/en pairs with planted exact / near / semantic duplicates (tests/engines/planted.py), written
once per size under bench/out/ray/ as 10 JSON Lines files (seeded, so identical every time).

Each run is its own subprocess (imports and caches don't leak between runs); the modes are interleaved
(local, ray-1, ray-2, local, …) so machine load hits them alike. A Ray run starts its own local cluster with
`ray.init(num_cpus=W)`, W = 1 or 2 worker processes. The parent samples, every 100 ms, the private anonymous
memory (/proc/PID/smaps_rollup `Anonymous`) of the driver and of each Ray worker process (descendants whose
command line names a Ray worker), and their CPU seconds. Reported per run: rows/s (input rows / wall seconds of
run_pipeline, cluster start excluded and given apart), CPU seconds (driver + workers), peak private memory of the
driver and of the largest worker, and seconds per step (from the runner's progress messages).

--check compares every file of each Ray run folder with the local run's (reports and stats compared without
timings and paths), as tests/engines/ do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "ray"
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, time
t0 = time.time()
mode, workers, pipeline_file, inp, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
extra = json.loads(sys.argv[6])
from curate.config import load
from curate.runner import run_pipeline
steps = []
def say(msg):
    steps.append((time.time(), msg))
start = 0.0
if mode == "ray":
    import ray
    ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print("READY", flush=True)
start = time.time()
t = time.time()
cfg = load(pipeline_file)
sets = (["dedup.semantic.progress=false"] if "dedup" in [n for n, _ in cfg.stages] else []) + extra
rep = run_pipeline(load(pipeline_file, sets), [inp], out, progress=say, engine=mode)
wall = time.time() - t
marks = steps + [(time.time(), "end")]
per_step = {}
for (ta, ma), (tb, _) in zip(marks, marks[1:]):
    per_step[ma.split(":")[0]] = round(tb - ta, 2)
print("RESULT " + json.dumps({"wall": wall, "steps": per_step, "rows": rep["input_rows"], "kept": rep["kept_rows"],
                              "startup": start - t0}), flush=True)
if mode == "ray":
    print("DONE-WAIT", flush=True)
    sys.stdin.readline()  # the parent reads the workers' CPU time before the cluster goes
"""


def _anon_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _workers(proc) -> list:
    import psutil

    out = []
    for p in proc.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "default_worker.py" in cmd or cmd.startswith("ray::"):
            out.append(p)
    return out


def run_one(mode: str, workers: int, pipeline: Path, inp: Path, out: Path, sets: list[str]) -> dict:
    import psutil

    if out.exists():
        import shutil

        shutil.rmtree(out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(workers), str(pipeline), str(inp), str(out),
                              json.dumps(sets)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(OUT / f"{out.name}.stderr").open("w"), text=True,
                             cwd=ROOT, env=env)
    proc = psutil.Process(child.pid)
    peak = {"driver": 0, "worker": 0}
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["driver"] = max(peak["driver"], _anon_kb(child.pid))
            for w in _workers(proc):
                peak["worker"] = max(peak["worker"], _anon_kb(w.pid))
                try:
                    t = w.cpu_times()
                    cpu[w.pid] = t.user + t.system
                except psutil.Error:
                    pass
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    result: dict = {}
    assert child.stdout is not None and child.stdin is not None
    for line in child.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        if line.startswith("DONE-WAIT"):
            time.sleep(0.3)
            break
    driver_cpu = sum(proc.cpu_times()[:2])
    stop.set()
    th.join()
    if mode == "ray" and child.poll() is None:
        child.stdin.write("\n")
        child.stdin.flush()
    child.wait(timeout=300)
    if not result:
        raise SystemExit(f"{mode}-{workers}: no result (exit {child.returncode})")
    result.update(mode=mode if mode == "local" else f"ray-{workers}", driver_cpu=round(driver_cpu, 1),
                  worker_cpu=round(sum(cpu.values()), 1), peak_driver_mb=round(peak["driver"] / 1024),
                  peak_worker_mb=round(peak["worker"] / 1024), rows_per_s=round(result["rows"] / result["wall"]))
    return result


def pipeline_text(stages: list[str]) -> str:
    """pipelines/default.toml with only `stages` (and their tables) kept."""
    import re

    text = (ROOT / "pipelines" / "default.toml").read_text()
    parts = re.split(r"(?m)^(?=\[)", text)
    keep = []
    for part in parts:
        head = re.match(r"\[([\w.]+)\]", part)
        table = head.group(1).split(".")[0] if head else None
        if table is None or table in ("pipeline", "export") or table in stages:
            keep.append(part)
    out = "".join(keep)
    return re.sub(r"(?m)^stages = \[.*?\]", f"stages = {json.dumps(stages)}", out, count=1)


def same_run(a: Path, b: Path) -> list[str]:
    """Files that differ between two run folders (reports/stats compared without timings and paths)."""
    from tests.engines.test_engine_ray import _done, _report

    bad = []
    for f in sorted(p for p in a.rglob("*") if p.is_file()):
        rel = f.relative_to(a)
        g = b / rel
        if not g.exists():
            bad.append(f"{rel} (missing)")
        elif rel.name == "DONE":
            if _done(f) != _done(g):
                bad.append(str(rel))
        elif rel.name in ("report.json", "stats.json", "manifest.json"):
            if _report(f, a) != _report(g, b):
                bad.append(str(rel))
        elif rel.name != "report.html" and f.read_bytes() != g.read_bytes():
            bad.append(str(rel))
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--modes", default="local,ray-1,ray-2")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--stages", default="clean,language", help="Pipeline stages (export always runs).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="STAGE.KEY=VALUE override (repeatable).")
    ap.add_argument("--check", action="store_true", help="Compare each Ray run folder with the local one.")
    args = ap.parse_args()
    from tests.engines import planted

    stages = [s for s in args.stages.split(",") if s]
    print(f"# {platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · stages {stages} "
          f"· sets {args.sets}")
    for n in (int(s) for s in args.sizes.split(",")):
        inp = OUT / f"in-{n}"
        if not (inp / "part-09.jsonl").exists():
            t = time.time()
            planted.write(inp, n, seed=13, files=10)
            print(f"# wrote {n:,} pairs in {time.time() - t:.0f} s")
        pipe = OUT / f"pipeline-{'-'.join(stages)}.toml"
        pipe.write_text(pipeline_text(stages))
        for rep in range(args.repeat):
            for mode in args.modes.split(","):
                engine, _, w = mode.partition("-")
                load0 = os.getloadavg()[0]
                r = run_one(engine, int(w or 0), pipe, inp, OUT / f"run-{n}-{mode}", args.sets)
                r.update(size=n, repeat=rep, load_before=round(load0, 1), load_after=round(os.getloadavg()[0], 1))
                print(json.dumps(r), flush=True)
            if args.check:
                for mode in args.modes.split(","):
                    if mode != "local":
                        bad = same_run(OUT / f"run-{n}-local", OUT / f"run-{n}-{mode}")
                        print(json.dumps({"size": n, "check": mode, "same": not bad, "differ": bad[:10]}), flush=True)


if __name__ == "__main__":
    main()
