"""Benchmark (issue 11): quality-stage throughput at 100k pairs, wall and CPU seconds, against the clean stage on the
same pairs in the same process (interleaved A B A B), plus the cost of each check alone and of the tokenizer check.

    .venv/bin/python bench/bench_quality.py                      # 100k pairs, 2 repeats, per-check split
    .venv/bin/python bench/bench_quality.py --pairs 20000 --repeat 3 --no-split
    .venv/bin/python bench/bench_quality.py --tokenizer-pairs 2000   # also the over_max_tokens check

Pairs: the 600 pairs of ../shared/data/llamafactory_dpo_demo (zh + en, multi-turn, code, markdown), each copy
made distinct (a copy number in the prompt and the reply) and, at fixed rates, given the defects the stage looks
for: a leaked "Human:" / "用户：" turn (1%), a template token (0.5%), tied scores (5%), inverted scores (3%), an
e-mail address or a mainland mobile number (1%), a reply cut at 1,000 characters (1%), a near-identical rejected
reply (1%); all pairs carry scores. Each timed run is what the runner does: `stage.run(scan_parquet)` and both
sinks (kept, rejects) to Parquet in one streaming pass; the "(collect)" runs collect kept and rejects in memory
instead, which is how bench_language.py measured the language stage. POLARS_MAX_THREADS=2 (the target's 2 cores).
CPU seconds are the process's user + system time (all threads), so they hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data" / "llamafactory_dpo_demo").resolve()

import polars as pl

from curate.runner import sink_result
from curate.schema import conform, row_ids, with_ids
from curate.stages import clean, quality


def demo_pairs() -> list[dict]:
    pairs = []
    for lang in ("zh", "en"):
        path = SHARED / f"dpo_{lang}_demo.json"
        for r in json.loads(path.read_text(encoding="utf-8")):
            pairs.append({
                "system": next((m["value"] for m in r["conversations"] if m["from"] == "system"), None),
                "prompt": [{"role": {"human": "user", "gpt": "assistant"}[m["from"]], "content": m["value"]}
                           for m in r["conversations"] if m["from"] != "system"],
                "chosen": r["chosen"]["value"], "rejected": r["rejected"]["value"],
            })
    return pairs


def make_pairs(n: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    base = demo_pairs()
    rows = []
    for i in range(n):
        p = base[i % len(base)]
        zh = any("\u4e00" <= c <= "\u9fff" for c in p["chosen"][:50])
        prompt = [dict(t) for t in p["prompt"]]
        prompt[-1]["content"] = f"{prompt[-1]['content']} (#{i})"
        chosen, rejected = f"{p['chosen']}\n\n({i})", p["rejected"]
        cs, rs = round(rng.uniform(5, 9), 1), round(rng.uniform(1, 5), 1)
        u = rng.random()
        if u < 0.01:
            chosen += "\n\n用户：那明天呢？" if zh else "\n\nHuman: And tomorrow?"
        elif u < 0.015:
            chosen += "<|im_end|>"
        elif u < 0.065:
            rs = cs
        elif u < 0.095:
            cs, rs = rs, cs
        elif u < 0.105:
            chosen += f" 联系电话1{rng.randint(3, 9)}{rng.randint(100000000, 999999999)}。" if zh \
                else f" Mail me at user{i}@gmail.com."
        elif u < 0.115:
            chosen = (chosen * (1000 // max(1, len(chosen)) + 1))[:1000].rstrip("。.!？?！") + "x"
        elif u < 0.125:
            rejected = chosen.replace("(", "[", 1) if "(" in chosen else chosen + "!"
        rows.append({"source": f"demo-{i % 4}.json", "source_row": i, "system": p["system"], "prompt": prompt,
                     "chosen": chosen, "rejected": rejected, "chosen_score": cs, "rejected_score": rs, "meta": "{}"})
    df = pl.DataFrame(rows)
    df = df.with_columns(pl.Series("row_id", [row_ids(s, [r])[0] for s, r in zip(df["source"], df["source_row"])]))
    return conform(with_ids(df)).collect()


def timed(module, cfg, src: Path, out: Path, sink: bool = True) -> tuple[float, float, int, int]:
    """One run: the stage on a Parquet scan, then both sinks to Parquet (as the runner does) or, with sink=False,
    collecting kept and rejects in memory (as bench_language.py measures a stage)."""
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = module.run(pl.scan_parquet(src), cfg)
    if sink:
        sink_result(result.kept, result.rejects, out)
        kept = pl.scan_parquet(out / "kept.parquet").select(pl.len()).collect().item()
        rej = pl.scan_parquet(out / "rejects.parquet").select(pl.len()).collect().item()
    else:
        got = result.collect()
        kept, rej = got.kept.height, got.rejects.height
    return time.perf_counter() - t0, time.process_time() - c0, kept, rej


def only(check: str) -> quality.Config:
    off = {c: "off" for c in ("inverted_scores", "tied_scores", "score_margin_below", "near_identical_responses",
                              "pii", "truncated_reply")}
    roles = {"chosen": "off", "rejected": "off", "prompt": "off"}
    if check == "role_marker_in_text":
        return quality.Config(**off)
    if check == "scores":
        return quality.Config(role_marker_in_text=roles, **{**off, "inverted_scores": "flag", "tied_scores": "flag"})
    return quality.Config(role_marker_in_text=roles, **{**off, check: "flag"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-split", action="store_true", help="skip the per-check runs")
    ap.add_argument("--tokenizer-pairs", type=int, default=0, help="also time over_max_tokens on this many pairs")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        t0 = time.perf_counter()
        df = make_pairs(args.pairs)
        src = work / "pairs.parquet"
        df.write_parquet(src)
        chars = int(df.select(pl.col("chosen").str.len_chars().sum() + pl.col("rejected").str.len_chars().sum()).item())
        print(f"{args.pairs:,} pairs ({chars / args.pairs:,.0f} reply chars/pair) built in {time.perf_counter() - t0:.1f} s")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, POLARS_MAX_THREADS="
              f"{os.environ['POLARS_MAX_THREADS']}, polars {pl.__version__}, Python {platform.python_version()}")
        timed(quality, quality.Config(), src, work / "warm")  # imports, regex compilation
        plans = [("clean", clean, clean.Config(), True), ("quality", quality, quality.Config(), True),
                 ("clean (collect)", clean, clean.Config(), False), ("quality (collect)", quality, quality.Config(), False)]
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in plans}
        for r in range(args.repeat):
            for name, module, cfg, sink in plans:
                load = os.getloadavg()[0]
                wall, cpu, kept, rej = timed(module, cfg, src, work / "out", sink)
                runs[name].append((wall, cpu))
                print(f"  run {r + 1} {name:18s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {args.pairs / wall:9,.0f} pairs/s  "
                      f"{args.pairs / cpu:9,.0f} pairs/cpu-s  kept {kept:,} rejected {rej:,}  load {load:.1f}")
        best = {name: (min(v[0] for v in vals), min(v[1] for v in vals)) for name, vals in runs.items()}
        for name, (wall, cpu) in best.items():
            print(f"{name:18s} best: {args.pairs / wall:9,.0f} pairs/s wall, {args.pairs / cpu:9,.0f} pairs per CPU-second")
        for suffix in ("", " (collect)"):
            qw, qc = best["quality" + suffix]
            cw, cc = best["clean" + suffix]
            print(f"quality / clean{suffix}: {qw / cw:.2f}x wall, {qc / cc:.2f}x CPU")
        stats = quality.run(pl.scan_parquet(src), quality.Config()).stats
        print("fired per check:", {k: v["fired"] for k, v in stats["checks"].items()})
        if not args.no_split:
            print("each check alone (flag), run + collect, one run each (the rest of the stage included):")
            for check in ("role_marker_in_text", "scores", "near_identical_responses", "pii", "truncated_reply"):
                load = os.getloadavg()[0]
                wall, cpu, _, _ = timed(quality, only(check), src, work / "one", sink=False)
                print(f"  {check:26s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {args.pairs / wall:9,.0f} pairs/s  load {load:.1f}")
        if args.tokenizer_pairs:
            from curate.train.tiny import build_tokenizer

            sub = df.head(args.tokenizer_pairs)
            sub_src = work / "sub.parquet"
            sub.write_parquet(sub_src)
            texts = sub["chosen"].to_list()[:500] + sub["rejected"].to_list()[:500]
            tok_dir = work / "tok"
            build_tokenizer(texts, vocab_size=2000).save_pretrained(tok_dir)
            cfg = quality.Config(tokenizer=str(tok_dir), max_tokens=8192)
            load = os.getloadavg()[0]
            wall, cpu, _, rej = timed(quality, cfg, sub_src, work / "tok-run")
            print(f"with over_max_tokens (chat template + tokenizer, {args.tokenizer_pairs:,} pairs): wall {wall:.2f} s, "
                  f"cpu {cpu:.2f} s, {args.tokenizer_pairs / wall:,.0f} pairs/s, {rej} rejected, load {load:.1f}")
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
