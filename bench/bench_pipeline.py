"""Benchmark (issue 2, item 9): ingest + clean + export throughput and peak private memory, against a baseline
doing the same conversion with `datasets.load_dataset("json")` + `.map`, in the same run.

    .venv/bin/python bench/bench_pipeline.py                      # 10k, 100k, 1M pairs
    .venv/bin/python bench/bench_pipeline.py --sizes 10000,100000 --repeat 1

Input: synthetic flat zh/en JSONL pairs (half Chinese, half English; a system prompt on a third; an `id` column
that goes to meta), generated once per size under bench/out/pipeline/ (seeded, so identical every time).

Each measurement runs in its own subprocess, so imports, caches and allocator state don't leak between them; the
parent samples the child's /proc/PID/smaps_rollup every 50 ms and reports the peak of `Anonymous` (private
anonymous memory: what the process itself allocated, not the page cache or memory-mapped Arrow files it reads)
beside the peak RSS. Rows/s = input rows / wall seconds of the work (imports excluded, the same for both).

  ingest:   curate.ingest.ingest alone (optional, --modes ours,ingest,baseline)
  ours:     curate.runner.run_pipeline(BENCH_PIPELINE below: ingest → clean → export (hf + trl + llamafactory))
  baseline: load_dataset("json") → .map(to canonical pair: messages, NFC/strip, ids, meta) → .filter(empty /
            identical / too long) → train_test_split → save_to_disk + TRL Parquet + JSONL
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "pipeline"

_ZH = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定"
       "行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外"
       "天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最"
       "立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运"
       "农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共")
_EN = ("the of and to in is you that it he was for on are as with his they at be this from have or by one had not but what all "
       "were when we there can an your which their said if do will each about how up out them then she many some so these would "
       "other into has more her two like him see time could no make than first been its who now people my made over did down only "
       "way find use may water long little very after words called just where most know get through back much go good new write").split()


def _zh(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n // 12 + 1):
        out.append("".join(rng.choice(_ZH) for _ in range(rng.randint(8, 16))))
        out.append(rng.choice("，。；！？"))
    return "".join(out)


def _en(rng: random.Random, n: int) -> str:
    words = [rng.choice(_EN) for _ in range(max(3, n // 5))]
    return " ".join(words).capitalize() + "."


def make_input(n: int, path: Path, seed: int = 0) -> Path:
    """n synthetic flat pairs (~0.9 KB each), half zh, half en; reused if already there."""
    if path.exists() and path.with_suffix(".ok").exists():
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = _zh if i % 2 else _en
            row = {"id": i, "prompt": f"{text(rng, rng.randint(20, 120))} #{i}", "chosen": text(rng, rng.randint(80, 400)),
                   "rejected": text(rng, rng.randint(40, 300))}
            if i % 3 == 0:
                row["system"] = "你是一个乐于助人的助手。" if i % 2 else "You are a helpful assistant."
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    path.with_suffix(".ok").write_text("ok")
    return path


# ---------------------------------------------------------------- workers (run in a child process)

BENCH_PIPELINE = """\
[pipeline]
name = "bench"
seed = 42
stages = ["clean"]

[clean]
max_prompt_chars = 32000
max_response_chars = 32000
min_response_chars = 1

[export]
test_size = 0.1
name = "bench"
"""

def work_ours(inp: Path, out: Path) -> dict:
    from curate.config import load
    from curate.runner import run_pipeline

    # Issue 2 item 9 measures ingest + clean + export, so the pipeline is pinned here rather than taken from
    # pipelines/default.toml (which grows stages: language, dedup, balance).
    toml = out.parent / f"{out.name}.toml"
    toml.write_text(BENCH_PIPELINE, encoding="utf-8")
    pipeline = load(toml)
    steps: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    report = run_pipeline(pipeline, [str(inp)], out, progress=lambda m: steps.append((time.perf_counter() - t0, m)))
    wall = time.perf_counter() - t0
    marks = [(t, m.split(":")[0]) for t, m in steps] + [(wall, "end")]
    per_step = {m: round(marks[i + 1][0] - t, 2) for i, (t, m) in enumerate(marks[:-1])}
    return {"wall_s": wall, "kept": report["kept_rows"], "steps_s": per_step}


def work_ingest(inp: Path, out: Path) -> dict:
    """Ingest alone (to see its share of time and memory)."""
    from curate.ingest import ingest

    t0 = time.perf_counter()
    report = ingest([str(inp)], out)
    return {"wall_s": time.perf_counter() - t0, "kept": report["kept_rows"], "steps_s": {}}


def work_baseline(inp: Path, out: Path) -> dict:
    import hashlib
    import re
    import unicodedata

    import datasets

    datasets.disable_progress_bars()
    ws = re.compile(r"\s+")

    def norm(t: str | None) -> str:
        return ws.sub(" ", unicodedata.normalize("NFC", t or "")).strip()

    def tidy(t: str | None) -> str:
        return unicodedata.normalize("NFC", t or "").replace("\r\n", "\n").strip()

    def sha(s: str) -> str:
        return hashlib.sha256(s.encode("utf-8")).hexdigest()[:16]

    def convert(row: dict, idx: int) -> dict:
        system = tidy(row.get("system")) or None
        prompt = [{"role": "user", "content": tidy(row["prompt"])}]
        chosen, rejected = tidy(row["chosen"]), tidy(row["rejected"])
        pkey = "\x1f".join([norm(system), "user\x1d" + norm(prompt[0]["content"])])
        meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected", "system")}
        return {"pair_id": sha("\x1f".join([pkey, norm(chosen), norm(rejected)])), "prompt_id": sha(pkey),
                "source": str(inp), "source_row": idx, "system": system, "prompt_msgs": prompt, "chosen_t": chosen,
                "rejected_t": rejected, "meta": json.dumps(meta, ensure_ascii=False)}

    def keep(row: dict) -> bool:
        c, r = row["chosen_t"], row["rejected_t"]
        return bool(c) and bool(r) and norm(c) != norm(r) and len(c) <= 32000 and len(r) <= 32000

    def to_trl(row: dict) -> dict:
        sys_msg = [{"role": "system", "content": row["system"]}] if row["system"] else []
        return {"prompt": sys_msg + row["prompt_msgs"], "chosen": [{"role": "assistant", "content": row["chosen_t"]}],
                "rejected": [{"role": "assistant", "content": row["rejected_t"]}]}

    cache = out / "hf-cache"
    t0 = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(inp), split="train", cache_dir=str(cache))
    cols = ds.column_names
    ds = ds.map(convert, with_indices=True, remove_columns=cols)
    ds = ds.filter(keep)
    ds = ds.map(to_trl, remove_columns=["prompt_msgs", "chosen_t", "rejected_t", "system", "meta", "source_row"])
    dd = ds.train_test_split(test_size=0.1, seed=42)
    dd.save_to_disk(str(out / "hf"))
    for split, part in dd.items():
        part.to_parquet(str(out / "trl" / f"{split}.parquet"))
        part.to_json(str(out / "trl" / f"{split}.jsonl"), force_ascii=False)
    wall = time.perf_counter() - t0
    cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {"wall_s": wall, "kept": len(ds), "hf_cache_bytes": cache_bytes}


# ---------------------------------------------------------------- parent: run and sample a child

def _anon_rss_kb(pid: int) -> tuple[int, int]:
    anon = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return anon, rss


def measure(mode: str, inp: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "trl").mkdir()
    result_file = out / "result.json"
    proc = subprocess.Popen([sys.executable, __file__, "--worker", mode, str(inp), str(out), str(result_file)],
                            cwd=ROOT, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    peak = {"anon": 0, "rss": 0}

    def sample() -> None:
        while proc.returncode is None:
            try:
                a, r = _anon_rss_kb(proc.pid)
            except (OSError, ValueError):
                break
            peak["anon"], peak["rss"] = max(peak["anon"], a), max(peak["rss"], r)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(proc.pid, 0)  # wait4 gives the child's CPU time as well
    proc.returncode = os.waitstatus_to_exitcode(status)
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} worker failed with exit code {proc.returncode}")
    res = json.loads(result_file.read_text())
    res.update(peak_anon_mb=round(peak["anon"] / 1024), peak_rss_mb=round(peak["rss"] / 1024),
               cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
    return res


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--modes", default="ours,baseline", help="any of ours, baseline, ingest (ingest alone)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true", help="keep the run folders (they are big at 1M)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per mode, interleaved (ours, baseline, ours, ...); the fastest counts (shared machines)")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        inp = make_input(n, out / f"pairs-{n}.jsonl")
        size_mb = inp.stat().st_size / 1e6
        res: dict[str, dict] = {}
        for _ in range(args.repeat):
            for mode in args.modes.split(","):
                r = measure(mode, inp, out / f"{mode}-{n}")
                r["rows_per_s"] = round(n / r["wall_s"])
                r["rows_per_cpu_s"] = round(n / r["cpu_s"])
                print(json.dumps({"n": n, "mode": mode, "load1": os.getloadavg()[0], **r}), flush=True)
                best = res.get(mode)
                if best is None or r["wall_s"] < best["wall_s"]:
                    r["peak_anon_mb"] = max(r["peak_anon_mb"], best["peak_anon_mb"] if best else 0)
                    res[mode] = r
                else:
                    best["peak_anon_mb"] = max(best["peak_anon_mb"], r["peak_anon_mb"])
                if not args.keep:
                    shutil.rmtree(out / f"{mode}-{n}", ignore_errors=True)
        rows.append({"n": n, "input_mb": round(size_mb, 1), **res})
    (out / "results.json").write_text(json.dumps({"machine": machine(), "results": rows}, indent=2) + "\n")
    print(f"\nmachine: {machine()}\n")
    print("| pairs | input | mode | rows/s (wall) | rows per CPU-s | peak anon / RSS | vs baseline (wall, CPU) | steps (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        b = r.get("baseline")
        for mode in ("ours", "ingest", "baseline"):
            x = r.get(mode)
            if not x:
                continue
            ratio = (f"{x['rows_per_s'] / b['rows_per_s']:.2f}x, {x['rows_per_cpu_s'] / b['rows_per_cpu_s']:.2f}x"
                     if b and mode != "baseline" else "-")
            steps = ", ".join(f"{k} {v}" for k, v in x.get("steps_s", {}).items()) or "-"
            print(f"| {r['n']:,} | {r['input_mb']} MB | {mode} | {x['rows_per_s']:,} | {x['rows_per_cpu_s']:,} | "
                  f"{x['peak_anon_mb']:,} / {x['peak_rss_mb']:,} MB | {ratio} | {steps} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mode, inp, out, result = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
        res = {"ours": work_ours, "ingest": work_ingest, "baseline": work_baseline}[mode](inp, out)
        result.write_text(json.dumps(res))
    else:
        main()
