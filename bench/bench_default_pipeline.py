"""Benchmark (issue 16): the whole default pipeline exactly as a user runs it, against a baseline checkout.

    .venv/bin/python bench/bench_default_pipeline.py --sizes 10000,100000 --baseline main
    .venv/bin/python bench/bench_default_pipeline.py --sizes 1000000 --baseline-max 100000      # ours alone at 1M
    .venv/bin/python bench/bench_default_pipeline.py --sizes 100000 --set 'dedup.methods=["exact","near"]'

What runs: `curate run pipelines/default.toml --input IN/ --out RUN/` with the `curate` script of each checkout's
own `.venv`, started from that checkout's root: the command a user types, the pipeline file as committed. Each
run has a fresh $HOME, so the embedding cache (~/.cache/curate/embeddings) is cold, as on a user's first run
(`--warm-cache` keeps one $HOME per checkout and size instead). `--set` is passed to every run (ours and baseline),
e.g. to profile without the embedding.

Baseline (`--baseline`): a path to a checkout that has `.venv/bin/curate`, or a git revision (default `main`):
then a detached `git worktree` of that commit is made under bench/out/default/baseline-SHA and set up with its
own `scripts/setup.sh` (once; ~3 min). Ours is this checkout. Runs are interleaved per size — baseline, ours,
baseline, ours … (`--repeat`) — so both see the same machine load; `--baseline-max` skips the baseline above a
size (today's main needs ~5 h and ~20 GB at 1M).

Input (generated once per size under bench/out/default/, seeded; never committed): two JSONL files (two sources),
rows alternating Chinese / English (50/50); prompt, chosen, rejected from random characters / common English words
(the texts of bench/bench_pipeline.py, made with NumPy so 1M rows take about a minute); a system prompt on a third
of the rows; plus
  10% exact duplicates   a copy of an earlier row's prompt with differences the dedup key folds (case, spaces,
                         full-width or CJK punctuation), with its own replies,
  10% near duplicates    an earlier row's prompt with a few characters (zh) or a word (en) replaced, or a clause
                         appended, with its own replies,
  planted paraphrases    hand-written zh / en paraphrase pairs (PARAPHRASES), each planted once.

Measured per run (the parent reads the child's /proc files; the child is not instrumented):
  wall and CPU seconds per step, split at the progress lines `curate run` prints (· ingest, · clean: …, · export),
      CPU from /proc/PID/stat (user + system of all threads) read when each line arrives; totals from wait4;
  peak RSS per step, exact: VmHWM from /proc/PID/status at each step boundary, then reset through
      /proc/PID/clear_refs ("5"), so each step's high-water mark is its own; the run's peak is the largest;
  peak anonymous memory (RssAnon) per step, sampled every --sample-s seconds (0.5 s: reading /proc/PID/status is
      ~20 µs, so the sampler costs nothing measurable; /proc/PID/smaps_rollup, which the older benches read every
      50 ms, walks every mapping and cost the process it measured);
  load average (1 min) at the start and end of each run, and its mean over the run's samples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_pipeline import (  # the same texts as the ingest + clean + export bench
    _EN,
    _ZH,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "default"
CLK = os.sysconf("SC_CLK_TCK")

_ZH_PUNCT = "，。；！？"

# Paraphrase pairs a semantic method should find and a lexical one should not (different words, same request).
PARAPHRASES = [
    ("How can I improve the quality of my sleep?", "What are some ways to sleep better at night?"),
    ("What is the best way to learn a new programming language quickly?",
     "How do I pick up a new programming language fast?"),
    ("Can you explain why the sky looks blue during the day?", "Why does the sky appear blue in daytime?"),
    ("Give me some tips for saving money on groceries.", "How can I spend less when buying food at the supermarket?"),
    ("What should I pack for a week-long hiking trip?", "Which items do I need to bring on a seven-day hike?"),
    ("How do I politely decline a meeting invitation?", "What is a courteous way to turn down an invite to a meeting?"),
    ("Summarise the main causes of the First World War.", "What were the key reasons the First World War started?"),
    ("How do vaccines train the immune system?", "In what way does a vaccine teach the body's immune defences?"),
    ("如何提高睡眠质量？", "怎样才能睡得更好？"),
    ("学习一门新的编程语言最快的方法是什么？", "怎么才能快速掌握一种新的编程语言？"),
    ("为什么白天的天空是蓝色的？", "天空在白天看起来发蓝是什么原因？"),
    ("有哪些在超市买菜省钱的技巧？", "买菜的时候怎样才能少花钱？"),
    ("一周的徒步旅行需要带哪些东西？", "去远足七天应该准备什么装备？"),
    ("怎样礼貌地拒绝别人的会议邀请？", "如何委婉地推掉一个会议？"),
    ("请概括第一次世界大战爆发的主要原因。", "第一次世界大战是由哪些原因引起的？"),
    ("疫苗是如何训练免疫系统的？", "疫苗通过什么方式让身体的免疫系统学会防御？"),
]


# ---------------------------------------------------------------- input generation


class _Texts:
    """Random zh / en texts, drawn in bulk with NumPy (a per-character Python loop takes ~10 min at 1M pairs)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        zh = np.array([ord(c) for c in _ZH + _ZH_PUNCT], dtype=np.uint32)
        # ~1 punctuation mark per 12 characters, as in bench/bench_pipeline.py.
        p = np.full(len(zh), (1 - 1 / 12) / len(_ZH))
        p[len(_ZH):] = (1 / 12) / len(_ZH_PUNCT)
        self.zh, self.zh_p = zh, p / p.sum()
        self.en = np.array(_EN, dtype=object)

    def zh_text(self, n: int) -> str:
        return self.rng.choice(self.zh, size=max(4, n), p=self.zh_p).tobytes().decode("utf-32-le") + "。"

    def en_text(self, n: int) -> str:
        words = self.en[self.rng.integers(0, len(self.en), size=max(3, n // 5))].tolist()
        return " ".join(words).capitalize() + "."

    def text(self, zh: bool, n: int) -> str:
        return self.zh_text(n) if zh else self.en_text(n)


def _exact_variant(prompt: str, zh: bool, k: int) -> str:
    """A copy the dedup key folds to the same key (NFKC, CJK punctuation, case, whitespace, punctuation)."""
    if zh:
        return [prompt.replace("，", ", ") + "  ", " " + prompt.replace("。", "．"), prompt + "！"][k % 3]
    return [prompt.upper(), "  " + prompt.replace(" ", "  "), prompt.rstrip(".") + "?!", prompt.lower()][k % 4]


def _near_variant(prompt: str, zh: bool, t: _Texts) -> str:
    """A few characters (zh) or one word (en) replaced, or a short clause appended."""
    rng = t.rng
    if rng.random() < 0.3:
        return prompt + (t.zh_text(4) if zh else " " + t.en_text(10))
    if zh:
        chars = list(prompt)
        for pos in rng.integers(0, max(1, len(chars) - 6), size=1 + int(len(chars) > 60)):
            chars[pos] = _ZH[rng.integers(0, len(_ZH))]
        return "".join(chars)
    words = prompt.split(" ")
    pos = int(rng.integers(0, max(1, len(words) - 1)))  # keep the trailing " #id" token
    words[pos] = _EN[rng.integers(0, len(_EN))]
    return " ".join(words)


def make_input(n: int, folder: Path, seed: int = 0) -> Path:
    """Folder with two JSONL sources, n rows in all; reused when complete (FOLDER.json written last)."""
    meta = folder.with_suffix(".json")
    if meta.exists() and json.loads(meta.read_text()).get("rows") == n:
        return folder
    meta.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = _Texts(rng)
    n_para = min(len(PARAPHRASES), n // 500)  # each pair planted once: two rows
    kinds = rng.choice(3, size=n, p=[0.8, 0.1, 0.1])  # 0 original, 1 exact copy, 2 near copy
    kinds[: max(2, n // 100)] = 0  # copies always have earlier originals to copy
    para_rows = rng.choice(np.arange(n // 2, n), size=2 * n_para, replace=False).tolist()
    para_at = {int(r): k for k, r in enumerate(para_rows)}
    originals: dict[bool, list[str]] = {True: [], False: []}
    counts = {"rows": n, "original": 0, "exact_copy": 0, "near_copy": 0, "paraphrase": 0, "seed": seed}
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(folder / f"source_{s}.jsonl", "w", encoding="utf-8")) for s in ("a", "b")]
        for i in range(n):
            zh = bool(i % 2)
            kind = int(kinds[i])
            if i in para_at:
                prompt = PARAPHRASES[para_at[i] // 2][para_at[i] % 2]
                zh = not prompt.isascii()
                counts["paraphrase"] += 1
            elif kind == 0 or not originals[zh]:
                prompt = f"{t.text(zh, int(rng.integers(20, 121)))} #{i}"
                originals[zh].append(prompt)
                counts["original"] += 1
            else:
                base = originals[zh][int(rng.integers(0, len(originals[zh])))]
                if kind == 1:
                    prompt = _exact_variant(base, zh, i)
                    counts["exact_copy"] += 1
                else:
                    prompt = _near_variant(base, zh, t)
                    counts["near_copy"] += 1
            row = {"id": i, "prompt": prompt, "chosen": t.text(zh, int(rng.integers(80, 401))),
                   "rejected": t.text(zh, int(rng.integers(40, 301)))}
            if i % 3 == 0:
                row["system"] = "你是一个乐于助人的助手。" if zh else "You are a helpful assistant."
            files[int(rng.integers(0, 2))].write(json.dumps(row, ensure_ascii=False) + "\n")
    counts["bytes"] = sum(f.stat().st_size for f in folder.iterdir())
    meta.write_text(json.dumps(counts, indent=1) + "\n")
    return folder


# ---------------------------------------------------------------- checkouts


def baseline_checkout(spec: str, out: Path) -> Path:
    """A checkout with .venv/bin/curate: `spec` itself if it is one, else a detached worktree of revision `spec`."""
    p = Path(spec).expanduser()
    if (p / ".venv" / "bin" / "curate").exists():
        return p.resolve()
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{spec}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    wt = out / f"baseline-{sha[:10]}"
    if not (wt / ".git").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), sha], check=True)
    if not (wt / ".venv" / "bin" / "curate").exists():
        print(f"setting up the baseline checkout {wt} (scripts/setup.sh, a few minutes)", file=sys.stderr, flush=True)
        subprocess.run(["bash", "scripts/setup.sh"], cwd=wt, check=True)
    return wt


def commit_of(checkout: Path) -> str:
    res = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True,
                         check=False)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return res.stdout.strip() + ("+dirty" if dirty else "")


# ---------------------------------------------------------------- one measured run


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k = line.split(":", 1)[0]
            if k in keys:
                out[k] = int(line.split()[1])
    return out


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (fields 14, 15 of stat(5))


class Run:
    """`curate run` in a child process, with per-step wall/CPU/peak memory read from /proc."""

    def __init__(self, checkout: Path, inp: Path, run_dir: Path, home: Path, sets: list[str], sample_s: float):
        self.cmd = [str(checkout / ".venv" / "bin" / "curate"), "run", "pipelines/default.toml",
                    "--input", str(inp), "--out", str(run_dir)]
        for s in sets:
            self.cmd += ["--set", s]
        self.checkout, self.run_dir, self.home, self.sample_s = checkout, run_dir, home, sample_s
        self.steps: list[dict] = []  # name, t0, cpu0, then wall_s, cpu_s, peak_rss_mb, peak_anon_mb
        self.lock = threading.Lock()
        self.loads: list[float] = []
        self.log: list[str] = []

    def _boundary(self, pid: int, name: str | None, now: float) -> None:
        """Close the current step (its VmHWM since the last reset is its peak) and open `name`."""
        try:
            cpu = _cpu_s(pid)
            kb = _status_kb(pid, ("VmHWM", "RssAnon"))
            hwm, anon = kb.get("VmHWM", 0), kb.get("RssAnon", 0)
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # reset the high-water mark to the current RSS: the next step's peak is its own
        except OSError:
            return
        with self.lock:
            if self.steps:
                cur = self.steps[-1]
                cur["wall_s"] = now - cur["t0"]
                cur["cpu_s"] = cpu - cur["cpu0"]
                cur["peak_rss_kb"] = max(cur["peak_rss_kb"], hwm)
                cur["peak_anon_kb"] = max(cur["peak_anon_kb"], anon)
            if name is not None:
                self.steps.append({"step": name, "t0": now, "cpu0": cpu, "peak_rss_kb": 0, "peak_anon_kb": anon})

    def _sample(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            try:
                kb = _status_kb(proc.pid, ("RssAnon", "VmHWM"))
            except (OSError, ValueError):
                break
            self.loads.append(os.getloadavg()[0])
            with self.lock:
                if self.steps:
                    cur = self.steps[-1]
                    cur["peak_anon_kb"] = max(cur["peak_anon_kb"], kb.get("RssAnon", 0))
                    cur["peak_rss_kb"] = max(cur["peak_rss_kb"], kb.get("VmHWM", 0))
            time.sleep(self.sample_s)

    def go(self) -> dict:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(self.home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.cmd, cwd=self.checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8", errors="replace", bufsize=1)
        self.steps.append({"step": "start", "t0": t0, "cpu0": 0.0, "peak_rss_kb": 0, "peak_anon_kb": 0})
        sampler = threading.Thread(target=self._sample, args=(proc,), daemon=True)
        sampler.start()
        stdout: list[str] = []
        out_reader = threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True)
        out_reader.start()
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.perf_counter()
            for part in line.replace("\r", "\n").splitlines():
                part = part.strip()
                if part.startswith("· "):
                    self._boundary(proc.pid, part[2:].split(":")[0].strip(), now)
                elif part:
                    self.log.append(part)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_reader.join(timeout=5)
        sampler.join(timeout=5)
        load1 = os.getloadavg()[0]
        cpu = usage.ru_utime + usage.ru_stime
        with self.lock:
            last = self.steps[-1]
            last["wall_s"] = wall - (last["t0"] - t0)
            last["cpu_s"] = cpu - last["cpu0"]
            last["peak_rss_kb"] = max(last["peak_rss_kb"], usage.ru_maxrss)  # ru_maxrss: peak since the last reset
        if proc.returncode != 0:
            tail = "\n".join((self.log + stdout)[-15:])
            raise RuntimeError(f"{' '.join(self.cmd)} exited {proc.returncode}:\n{tail}")
        steps = {s["step"]: {"wall_s": round(s["wall_s"], 2), "cpu_s": round(s["cpu_s"], 2),
                             "peak_rss_mb": round(s["peak_rss_kb"] / 1024), "peak_anon_mb": round(s["peak_anon_kb"] / 1024)}
                 for s in self.steps}
        report = json.loads((self.run_dir / "report.json").read_text())
        return {
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in steps.values()),
            "peak_anon_mb": max(v["peak_anon_mb"] for v in steps.values()),
            "load_start": round(load0, 2), "load_end": round(load1, 2),
            "load_mean": round(sum(self.loads) / len(self.loads), 2) if self.loads else round(load1, 2),
            "steps": steps,
            "kept": report["kept_rows"],
            "rejects_by_reason": report["rejects_by_reason"],
            "funnel": report["funnel"],
            "stdout": "".join(stdout)[-2000:],
        }


# ---------------------------------------------------------------- main


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), "?")
    mem = next((int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.0f} GiB RAM, Python {platform.python_version()}"


def _step_cell(s: dict) -> str:
    return f"{s['wall_s']:.1f} / {s['cpu_s']:.1f} / {s['peak_rss_mb']:,}"


def table(rows: list[dict]) -> str:
    steps: list[str] = []
    for r in rows:
        for k in r["steps"]:
            if k not in steps:
                steps.append(k)
    head = ["pairs", "checkout", "wall s", "CPU s", "peak RSS / anon MB", "load (mean)", "kept", *steps]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [f"{r['n']:,}", f"{r['mode']} `{r['commit']}`", f"{r['wall_s']:,.1f}", f"{r['cpu_s']:,.1f}",
                 f"{r['peak_rss_mb']:,} / {r['peak_anon_mb']:,}", f"{r['load_mean']}", f"{r['kept']:,}"]
        cells += [_step_cell(r["steps"][k]) if k in r["steps"] else "-" for k in steps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(step cells: wall s / CPU s / peak RSS MB)"


def ratios(rows: list[dict]) -> str:
    out = []
    for n in sorted({r["n"] for r in rows}):
        ours = [r for r in rows if r["n"] == n and r["mode"] == "ours"]
        base = [r for r in rows if r["n"] == n and r["mode"] == "baseline"]
        if ours and base:
            bw, bc = min(r["wall_s"] for r in base), min(r["cpu_s"] for r in base)
            ow, oc = min(r["wall_s"] for r in ours), min(r["cpu_s"] for r in ours)
            out.append(f"{n:,} pairs: baseline / ours = {bw / ow:.2f}x wall, {bc / oc:.2f}x CPU "
                       f"(best of {len(base)} / {len(ours)}); peak RSS {max(r['peak_rss_mb'] for r in base):,} → "
                       f"{max(r['peak_rss_mb'] for r in ours):,} MB")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--baseline", default="main", help="checkout path (with .venv) or git revision; 'none': ours only")
    ap.add_argument("--modes", default="baseline,ours", help="which checkouts run: baseline, ours or both")
    ap.add_argument("--baseline-max", type=int, default=100_000, help="no baseline run above this many pairs")
    ap.add_argument("--repeat", type=int, default=1, help="runs per checkout and size, interleaved")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="passed to every `curate run --set`")
    ap.add_argument("--warm-cache", action="store_true", help="one $HOME per checkout and size (embedding cache kept)")
    ap.add_argument("--sample-s", type=float, default=0.5, help="RssAnon sampling interval")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.modes.split(","))
    checkouts = {"ours": ROOT} if "ours" in wanted else {}
    if args.baseline != "none" and "baseline" in wanted:
        checkouts["baseline"] = baseline_checkout(args.baseline, out)
    commits = {m: commit_of(c) for m, c in checkouts.items()}
    print(f"# machine: {machine()}; checkouts: " + ", ".join(f"{m} {c} ({commits[m]})" for m, c in checkouts.items()),
          flush=True)
    results = out / "results.jsonl"
    rows: list[dict] = []
    for n in [int(s) for s in args.sizes.split(",")]:
        inp = make_input(n, out / f"in-{n}")
        planted = json.loads(inp.with_suffix(".json").read_text())
        modes = [m for m in checkouts if m != "baseline" or n <= args.baseline_max]
        for rep in range(args.repeat):
            for mode in sorted(modes):  # baseline first, then ours: A B A B
                home = out / (f"home-{mode}-{n}" if args.warm_cache else f"home-{mode}-{n}-{rep}")
                if not args.warm_cache:
                    shutil.rmtree(home, ignore_errors=True)
                run = Run(checkouts[mode], inp, out / f"run-{mode}-{n}", home, args.sets, args.sample_s)
                res = run.go()
                row = {"n": n, "mode": mode, "commit": commits[mode], "rep": rep, "sets": args.sets,
                       "planted": planted, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **res}
                rows.append(row)
                with open(results, "a") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                print(json.dumps({k: v for k, v in row.items() if k not in ("funnel", "stdout", "planted")},
                                 ensure_ascii=False), flush=True)
                if not args.keep:
                    shutil.rmtree(out / f"run-{mode}-{n}", ignore_errors=True)
                if not args.warm_cache:
                    shutil.rmtree(home, ignore_errors=True)
    print(f"\nmachine: {machine()}\n")
    print(table(rows))
    print()
    print(ratios(rows))


if __name__ == "__main__":
    main()
