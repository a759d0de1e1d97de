"""Benchmark (issue 2, item 9): ingest + clean + export throughput and peak private memory, against a baseline
doing the same conversion with `datasets.load_dataset("json")` + `.map`, in the same run.

    .venv/bin/python bench/bench_pipeline.py                      # 10k, 100k, 1M pairs
    .venv/bin/python bench/bench_pipeline.py --sizes 10000,100000 --repeat 1

Input: synthetic flat zh/en JSONL pairs (half Chinese, half English; a system prompt on a third; an `id` column
that goes to meta), generated once per size under bench/out/pipeline/ (seeded, so identical every time).

Each measurement runs in its own subprocess, so imports, caches and allocator state don't leak between them; the
parent samples the child's RssAnon (/proc/PID/status) every 0.5 s and reports its peak (private anonymous memory:
what the process itself allocated, not the page cache or memory-mapped Arrow files it reads) beside the exact peak
RSS (the kernel's high-water mark, from wait4). An earlier version read /proc/PID/smaps_rollup every 50 ms, which
walks every mapping of the measured process: it cost a share of one of the two cores it was measuring.
Rows/s = input rows / wall seconds of the work (imports excluded, the same for both).

    .venv/bin/python bench/bench_pipeline.py --codecs RUN/02-language/kept.parquet   # stage-file codecs

--codecs FILE: write FILE's rows with each Parquet codec the runner could use for stage files (zstd at Polars'
default level 3, zstd level 1, lz4, snappy, none) the way the runner sinks them (lazy streaming sink, 20k-row
groups, 2k-row morsels) and read each back whole, in a child process per codec, interleaved over --repeat rounds;
CPU seconds (all threads), wall seconds and file size.

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

def _anon_kb(pid: int) -> int:
    """RssAnon from /proc/PID/status: cheap to read (smaps_rollup walks every mapping and cost the process it
    measured a noticeable share of a core when read every 50 ms)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


SAMPLE_S = 0.5


def measure(mode: str, inp: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "trl").mkdir()
    result_file = out / "result.json"
    proc = subprocess.Popen([sys.executable, __file__, "--worker", mode, str(inp), str(out), str(result_file)],
                            cwd=ROOT, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    peak = {"anon": 0}

    def sample() -> None:
        while proc.returncode is None:
            try:
                peak["anon"] = max(peak["anon"], _anon_kb(proc.pid))
            except (OSError, ValueError):
                break
            time.sleep(SAMPLE_S)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(proc.pid, 0)  # wait4 gives the child's CPU time as well
    proc.returncode = os.waitstatus_to_exitcode(status)
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} worker failed with exit code {proc.returncode}")
    res = json.loads(result_file.read_text())
    # Peak RSS is exact (the kernel's high-water mark, from wait4); peak anonymous memory is sampled.
    res.update(peak_anon_mb=round(peak["anon"] / 1024), peak_rss_mb=round(usage.ru_maxrss / 1024),
               cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
    return res


CODECS = {"zstd-3": ("zstd", None), "zstd-1": ("zstd", 1), "lz4": ("lz4", None), "snappy": ("snappy", None),
          "none": ("uncompressed", None)}


def work_codec(src: Path, out: Path, codec: str) -> dict:
    """Write `src`'s rows with one codec as the runner's sinks do, then read the file back whole."""
    import polars as pl

    from curate.io import ROW_GROUP, STREAM_CHUNK

    name, level = CODECS[codec]
    df = pl.read_parquet(src)  # in memory first: only the encode + compress + write is timed
    target = out / f"{codec}.parquet"
    t, c = time.perf_counter(), time.process_time()
    with pl.Config(streaming_chunk_size=STREAM_CHUNK):
        df.lazy().sink_parquet(target, compression=name, compression_level=level, row_group_size=ROW_GROUP,
                               engine="streaming")
    write = (time.perf_counter() - t, time.process_time() - c)
    del df
    t, c = time.perf_counter(), time.process_time()
    back = pl.read_parquet(target)
    read = (time.perf_counter() - t, time.process_time() - c)
    return {"codec": codec, "rows": back.height, "mb": round(target.stat().st_size / 1e6, 1),
            "write_wall_s": round(write[0], 3), "write_cpu_s": round(write[1], 3),
            "read_wall_s": round(read[0], 3), "read_cpu_s": round(read[1], 3)}


def codecs(src: Path, repeat: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {c: [] for c in CODECS}
    for _ in range(repeat):
        for codec in CODECS:
            res = subprocess.run([sys.executable, __file__, "--worker", "codec", str(src), str(out), codec],
                                 cwd=ROOT, check=True, capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["load1"] = round(os.getloadavg()[0], 1)
            runs[codec].append(r)
            print(json.dumps(r), flush=True)
    print(f"\nmachine: {machine()}; {src} ({runs['zstd-3'][0]['rows']:,} rows); median of {repeat} interleaved runs\n")
    print("| codec | file MB | write CPU s | read CPU s | write + read CPU s | vs zstd-3 | write / read wall s | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    ref = med([r["write_cpu_s"] + r["read_cpu_s"] for r in runs["zstd-3"]])
    for codec, rs in runs.items():
        w, r_ = med([x["write_cpu_s"] for x in rs]), med([x["read_cpu_s"] for x in rs])
        print(f"| {codec} | {rs[0]['mb']} | {w:.2f} | {r_:.2f} | {w + r_:.2f} | {(w + r_) / ref:.2f} | "
              f"{med([x['write_wall_s'] for x in rs]):.2f} / {med([x['read_wall_s'] for x in rs]):.2f} | "
              f"{min(x['load1'] for x in rs)}–{max(x['load1'] for x in rs)} |")


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), "?")
    mem = next((int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--modes", default="ours,baseline", help="any of ours, baseline, ingest (ingest alone)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true", help="keep the run folders (they are big at 1M)")
    ap.add_argument("--codecs", metavar="FILE", help="compare Parquet codecs on this stage file instead")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per mode, interleaved (ours, baseline, ours, ...); the fastest counts (shared machines)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.codecs:
        codecs(Path(args.codecs), max(args.repeat, 1), out / "codecs")
        return
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
        if sys.argv[2] == "codec":
            print(json.dumps(work_codec(Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])))
            sys.exit(0)
        mode, inp, out, result = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
        res = {"ours": work_ours, "ingest": work_ingest, "baseline": work_baseline}[mode](inp, out)
        result.write_text(json.dumps(res))
    else:
        main()
