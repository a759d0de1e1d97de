"""Benchmark (issue 3): language-identification accuracy per class and language-stage throughput, with
langdetect, lingua and the plain CJK-share rule measured on the same labelled set in the same run.

    .venv/bin/python bench/bench_language.py                     # accuracy + speed at 20k and 100k pairs
    .venv/bin/python bench/bench_language.py --pairs 20000 --repeat 3
    .venv/bin/python bench/bench_language.py --disagreements     # list texts where curate and the truth differ

The labelled set (built in memory, seeded; nothing downloaded):
  demo      every prompt (user turns joined), chosen and rejected text of ../shared/data/llamafactory_dpo_demo
            (300 zh + 300 en pairs), labelled by file (zh → zh-Hans, en → en), except the texts listed in
            bench/data/lang_relabels.json: texts whose file label is wrong on reading them (a Spanish reply in the
            "en" file, a Chinese instruction quoting a Swedish passage → mixed, a reply that is only a number →
            other, one reply in the zh file written in Traditional characters). Accuracy is also reported
            *without* these relabels (raw file labels), so the adjudication can be judged.
  hant      each zh demo text converted with OpenCC s2t / s2tw / s2hk / s2twp in turn → zh-Hant
  mixed     one Chinese sentence + one English sentence from the demo files, with each language between a quarter
            and three quarters of the words (Han characters counted as 1/1.5 word) → mixed
  short     2–8 Han characters (Simplified, or converted) / 1–3 English words cut from demo sentences
  code      a code snippet (fenced or bare; Python, JS, SQL, shell, C) that is most of the text, plus one
            Chinese or English sentence → that sentence's language
  fixture   tests/fixtures/lang/labelled.jsonl (hand-written: names in prose, terms, Japanese, Korean, ...)
A Chinese text whose Simplified and Traditional forms are identical (no script-specific character) counts as
correct with either script.

Methods: curate (the language stage's labeller), `cjk>=0.3` (share of Han among letters, the rule in
measured-facts.md), lingua restricted to zh+en, lingua with 8 languages, langdetect (seed 0; zh-cn/zh-tw map to
the two scripts). Statistical detectors have no `mixed` class.

Speed: the whole language stage (`curate.stages.language.run` + collecting kept and rejects) on N pairs drawn
from the demo pairs and their Traditional conversions (3 texts per pair), after one warm-up run; baselines:
langdetect and lingua labelling the same three texts per pair (on a subset, scaled), in the same process.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data" / "llamafactory_dpo_demo").resolve()
RELABELS = ROOT / "bench" / "data" / "lang_relabels.json"
FIXTURE = ROOT / "tests" / "fixtures" / "lang" / "labelled.jsonl"

import polars as pl  # noqa: E402

from curate import langid  # noqa: E402

CODE = [
    "```python\nimport json\nwith open('config.json') as f:\n    cfg = json.load(f)\nfor key, value in cfg.items():\n"
    "    print(f'{key}={value}')\n```",
    "```javascript\nconst express = require('express');\nconst app = express();\napp.get('/', (req, res) => {\n"
    "  res.send('ok');\n});\napp.listen(3000);\n```",
    "```sql\nSELECT user_id, COUNT(*) AS n\nFROM orders\nWHERE created_at >= '2024-01-01'\nGROUP BY user_id\n"
    "ORDER BY n DESC\nLIMIT 10;\n```",
    "```bash\nfor f in *.log; do\n  gzip -9 \"$f\"\ndone\ntar -czf logs.tar.gz *.gz && rm -f *.gz\n```",
    "#include <stdio.h>\nint main(void) {\n    for (int i = 0; i < 10; i++) {\n        printf(\"%d\\n\", i * i);\n"
    "    }\n    return 0;\n}",
    "import numpy as np\nimport pandas as pd\ndf = pd.DataFrame(np.random.rand(100, 3), columns=['a', 'b', 'c'])\n"
    "print(df.describe())\ndf.to_csv('out.csv', index=False)",
]
CONFIGS = ("s2t", "s2tw", "s2hk", "s2twp")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def demo_pairs() -> list[dict]:
    pairs = []
    for lang in ("zh", "en"):
        path = SHARED / f"dpo_{lang}_demo.json"
        for i, r in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            pairs.append(
                {
                    "file_lang": lang,
                    "source": path.name,
                    "source_row": i,
                    "system": next((m["value"] for m in r["conversations"] if m["from"] == "system"), None),
                    "prompt": [
                        {"role": {"human": "user", "gpt": "assistant"}[m["from"]], "content": m["value"]}
                        for m in r["conversations"] if m["from"] != "system"
                    ],
                    "chosen": r["chosen"]["value"],
                    "rejected": r["rejected"]["value"],
                }
            )
    return pairs


@functools.lru_cache(maxsize=None)
def _converter(name: str):
    import opencc

    return opencc.OpenCC(name)


def _script_free(text: str) -> bool:
    """True when the same string is valid Simplified (t2s keeps it) and valid Traditional in one of the
    standards (s2t, s2tw or s2hk keeps it): its script can't be told."""
    if _converter("t2s").convert(text) != text:
        return False
    return any(_converter(c).convert(text) == text for c in ("s2t", "s2tw", "s2hk"))


def _english_prose(sentences: list[str]) -> list[str]:
    """Keep sentences an independent detector (lingua, high accuracy, 8 languages) is ≥ 90% sure are English,
    so the mixed / short / code items are built from real English prose, not formulas or Italian."""
    from lingua import Language

    det = _lingua(["zh", "en", "ja", "ko", "fr", "de", "es", "it"], high_accuracy=True)
    conf = det.compute_language_confidence_in_parallel(sentences, Language.ENGLISH)
    return [s for s, c in zip(sentences, conf) if c >= 0.9]


def _han(s: str) -> int:
    return sum("\u4e00" <= c <= "\u9fff" for c in s)


def labelled_set(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    relabels = json.loads(RELABELS.read_text(encoding="utf-8")) if RELABELS.exists() else {}
    items: list[dict] = []

    def add(text: str, truth: str, kind: str, raw: str | None = None) -> None:
        free = truth in langid.ZH_LABELS and _script_free(text)
        items.append({"text": text, "truth": truth, "raw": raw or truth, "kind": kind, "script_free": free})

    zh_sentences, en_sentences = [], []
    for p in demo_pairs():
        user = "\n".join(m["content"] for m in p["prompt"] if m["role"] == "user")
        for text in (user, p["chosen"], p["rejected"]):
            raw = "zh-Hans" if p["file_lang"] == "zh" else "en"
            truth = relabels.get(sha(text), {}).get("label", raw)
            add(text, truth, "demo", raw)
            if p["file_lang"] == "zh" and truth == "zh-Hans":
                conf = CONFIGS[len(items) % len(CONFIGS)]
                add(_converter(conf).convert(text), "zh-Hant", f"hant-{conf}", "zh-Hant")
                zh_sentences += [s for s in re.split(r"[。！？\n]", text)
                                 if 20 <= _han(s) <= 60 and not re.search(r"[A-Za-z]{2}", s)]
            if p["file_lang"] == "en" and truth == "en":
                en_sentences += [s for s in re.split(r"(?<=[.!?])\s+|\n", text)
                                 if 12 <= len(s.split()) <= 40 and re.fullmatch(r"[\x20-\x7e]+", s)]
    zh_sentences = sorted(set(zh_sentences))
    en_sentences = _english_prose(sorted(set(s for s in en_sentences if not re.search(r"[`=<>|\\$]", s))))

    made = 0
    while made < 300:
        z, e = rng.choice(zh_sentences), rng.choice(en_sentences)
        zw, ew = _han(z) / 1.5, len(e.split())
        if not 0.25 <= zw / (zw + ew) <= 0.75:
            continue
        parts = [z + "。", e]
        rng.shuffle(parts)
        add(rng.choice([" ", "\n"]).join(parts), "mixed", "mixed")
        made += 1
    for i in range(150):
        z = rng.choice(zh_sentences)
        chars = [c for c in z if "\u4e00" <= c <= "\u9fff"]
        n = rng.randint(2, 8)
        start = rng.randint(0, max(0, len(chars) - n))
        short = "".join(chars[start:start + n])
        if i % 2:
            add(_converter(CONFIGS[i % 4]).convert(short), "zh-Hant", "short")
        else:
            add(short, "zh-Hans", "short")
        while True:
            words = rng.choice(en_sentences).split()
            k = rng.randint(1, 3)
            s0 = rng.randint(0, len(words) - k)
            cut = " ".join(words[s0:s0 + k])
            if re.search(r"[A-Za-z]{2}", cut):
                break
        add(cut, "en", "short")
    for i in range(150):
        code = CODE[i % len(CODE)]
        z = rng.choice(zh_sentences) + "。"
        if i % 3 == 0:
            z = _converter("s2tw").convert(z)
            add(f"{z}\n{code}", "zh-Hant", "code")
        else:
            add(f"{code}\n{z}" if i % 2 else f"{z}\n{code}", "zh-Hans", "code")
        e = rng.choice(en_sentences)
        add(f"{e}\n{code}" if i % 2 else f"{code}\n{e}", "en", "code")
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            add(row["text"], row["label"], "fixture")
    return items


# --- methods -------------------------------------------------------------------------------------------------


def m_curate(texts: list[str]) -> list[str]:
    return langid.detect(texts)


def m_cjk_share(texts: list[str]) -> list[str]:
    df = pl.DataFrame({"t": texts})
    han = pl.col("t").str.count_matches(r"\p{Han}")
    letters = pl.col("t").str.count_matches(r"\p{L}")
    return df.select(
        pl.when(letters == 0).then(pl.lit("other")).when(han / letters >= 0.3).then(pl.lit("zh"))
        .otherwise(pl.lit("en")).alias("x")
    )["x"].to_list()


def _lingua(codes: list[str], high_accuracy: bool = True):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*[IsoCode639_1.from_str(c) for c in codes])
    return (builder if high_accuracy else builder.with_low_accuracy_mode()).build()


def m_lingua(texts: list[str], codes: list[str]) -> list[str]:
    from lingua import Language

    det = _lingua(codes)
    out = []
    for lang in det.detect_languages_in_parallel_of(texts):
        out.append("zh" if lang == Language.CHINESE else "en" if lang == Language.ENGLISH else "other")
    return out


def m_langdetect(texts: list[str]) -> list[str]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    out = []
    for t in texts:
        try:
            code = detect(t)
        except LangDetectException:
            code = "unknown"
        out.append({"zh-cn": "zh-Hans", "zh-tw": "zh-Hant", "en": "en"}.get(code, "other"))
    return out


def family(label: str) -> str:
    return "zh" if label in ("zh", "zh-Hans", "zh-Hant") else label


def score(items: list[dict], preds: list[str], truth_key: str = "truth") -> dict:
    per_class: dict[str, list[int]] = {}
    fam_ok = fam_n = script_ok = script_n = exact = 0
    for it, p in zip(items, preds):
        t = it[truth_key]
        ok = p == t or (it["script_free"] and family(p) == "zh" and family(t) == "zh") or (
            p == "zh" and family(t) == "zh" and it["script_free"])
        per_class.setdefault(t, [0, 0])
        per_class[t][0] += ok
        per_class[t][1] += 1
        exact += ok
        if family(t) in ("zh", "en", "mixed"):
            fam_n += 1
            fam_ok += family(p) == family(t)
        if t in langid.ZH_LABELS and not it["script_free"] and p in langid.ZH_LABELS:
            script_n += 1
            script_ok += p == t
    return {
        "n": len(items),
        "exact": exact / len(items),
        "zh_en_mixed": fam_ok / fam_n if fam_n else None,
        "script": script_ok / script_n if script_n else None,
        "script_n": script_n,
        "per_class": {k: (v[0] / v[1], v[1]) for k, v in sorted(per_class.items())},
    }


# --- speed ---------------------------------------------------------------------------------------------------


def pairs_frame(n: int, seed: int = 0) -> pl.DataFrame:
    from curate.schema import conform, with_ids

    base = demo_pairs()
    conv = _converter("s2t")
    hant = [
        {**p, "source": "hant-" + p["source"],
         "prompt": [{"role": m["role"], "content": conv.convert(m["content"])} for m in p["prompt"]],
         "chosen": conv.convert(p["chosen"]), "rejected": conv.convert(p["rejected"])}
        for p in base if p["file_lang"] == "zh"
    ]
    pool = base + hant
    rng = random.Random(seed)
    rows = [pool[rng.randrange(len(pool))] for _ in range(n)]
    df = pl.DataFrame([{k: v for k, v in r.items() if k != "file_lang"} for r in rows])
    return with_ids(conform(df)).collect()


def time_stage(df: pl.DataFrame, repeat: int, cfg: object = None) -> tuple[float, float]:
    """Best wall seconds and the CPU seconds (all threads) of that run: on a shared, loaded machine the CPU time
    says what the stage costs; wall time on an idle 2-core machine is about CPU time / 2 when both cores work."""
    from curate.stages import language

    cfg = cfg or language.Config()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        res = language.run(df.lazy(), cfg)
        pl.collect_all([res.kept, res.rejects])
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu


def texts_of(df: pl.DataFrame) -> list[str]:
    from curate.stages.language import prompt_text_expr

    t = df.select(prompt_text_expr().alias("p"), "chosen", "rejected")
    return [x for row in t.iter_rows() for x in row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="20000,100000", help="comma-separated pair counts for the speed runs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--disagreements", action="store_true", help="print demo texts where curate != truth")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--balance-rows", type=int, default=0, help="also time the balance stage on N synthetic rows")
    ap.add_argument("--skip-langdetect", action="store_true", help="langdetect takes ~30 s on the set")
    ap.add_argument("--pair-rules", action="store_true",
                    help="only compare pair_rule = prompt / instruction (labels of the demo pairs, stage cost)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED}")

    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"polars {pl.__version__}, POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', 'default')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.pair_rules:
        return pair_rules(args)
    if args.balance_rows:
        balance_speed(args.balance_rows)
    if args.skip_accuracy:
        return speed(args) if not args.skip_speed else None
    items = labelled_set()
    texts = [it["text"] for it in items]
    kinds: dict[str, int] = {}
    for it in items:
        kinds[it["kind"].split("-")[0]] = kinds.get(it["kind"].split("-")[0], 0) + 1
    print(f"# labelled set: {len(items)} texts {kinds}; relabelled demo texts: "
          f"{sum(it['truth'] != it['raw'] for it in items)}")

    langid.detect(["warm up", "预热"])  # tables + regex compile, not part of the accuracy timing
    methods = {
        "curate": m_curate,
        "curate (lingua high accuracy)": lambda t: langid.detect(t, langid.Params(lingua_high_accuracy=True)),
        "cjk>=0.3": m_cjk_share,
        "lingua zh+en": lambda t: m_lingua(t, ["zh", "en"]),
        "lingua 8 langs": lambda t: m_lingua(t, ["zh", "en", "ja", "ko", "fr", "de", "es", "ru"]),
        "langdetect": m_langdetect,
    }
    if args.skip_langdetect:
        del methods["langdetect"]
    rows = []
    curate_preds: list[str] = []
    for name, fn in methods.items():
        t = time.perf_counter()
        preds = fn(texts)
        dt = time.perf_counter() - t
        if name == "curate":
            curate_preds = preds
        s, raw = score(items, preds), score(items, preds, "raw")
        rows.append((name, s, raw, len(texts) / dt))
    print("\n## Accuracy (adjudicated truth; raw file labels in brackets)\n")
    classes = sorted({it["truth"] for it in items})
    head = "| method | texts/s | zh vs en vs mixed | Simplified vs Traditional | all 5 labels | " + " | ".join(
        classes) + " |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name, s, raw, rate in rows:
        cells = [f"{s['per_class'][c][0]:.3f}" for c in classes]
        script = "n/a" if name.startswith(("lingua", "cjk")) else f"{s['script']:.4f}"
        print(f"| {name} | {rate:,.0f} | {s['zh_en_mixed']:.4f} ({raw['zh_en_mixed']:.4f}) | {script} | "
              f"{s['exact']:.4f} ({raw['exact']:.4f}) | " + " | ".join(cells) + " |")
    print(f"\nclass sizes: {({c: rows[0][1]['per_class'][c][1] for c in classes})}; script-determinable Chinese "
          f"texts: {rows[0][1]['script_n']}")

    by_kind: dict[str, list[int]] = {}
    for it, p in zip(items, curate_preds):
        k = it["kind"].split("-")[0]
        ok = p == it["truth"] or (it["script_free"] and family(p) == family(it["truth"]) == "zh")
        by_kind.setdefault(k, [0, 0])
        by_kind[k][0] += ok
        by_kind[k][1] += 1
    print("\ncurate by kind: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in by_kind.items()))

    if args.disagreements:
        print("\n## Disagreements (curate vs truth)\n")
        for it, p in zip(items, curate_preds):
            ok = p == it["truth"] or (it["script_free"] and family(p) == family(it["truth"]) == "zh")
            if not ok:
                print(json.dumps({"sha": sha(it["text"]), "kind": it["kind"], "truth": it["truth"], "got": p,
                                  "text": it["text"][:300]}, ensure_ascii=False))

    if not args.skip_speed:
        speed(args)


def balance_speed(n: int) -> None:
    """The balance stage on N synthetic rows: 5 labels, 4 sources, scores and duplicate-cluster sizes."""
    import numpy as np

    from curate.stages import balance

    rng = np.random.default_rng(0)
    labels = np.array(["zh-Hans", "zh-Hant", "en", "mixed", "other"])[rng.choice(5, n, p=[0.3, 0.05, 0.55, 0.07, 0.03])]
    df = pl.DataFrame({
        "pair_id": [f"{i:016x}" for i in range(n)], "lang": labels,
        "source": np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)],
        "chosen_score": rng.random(n), "rejected_score": rng.random(n), "dup_cluster_size": rng.integers(1, 4, n),
    })
    t, c = time.perf_counter(), time.process_time()
    res = balance.run(df.lazy(), balance.Config(target={"zh": 0.7, "en": 0.3}, max_drop_fraction=0.9)).collect()
    print(f"\n## Balance stage: {n:,} rows → {res.kept.height:,} kept, {res.rejects.height:,} rejected in "
          f"{time.perf_counter() - t:.2f} s wall, {time.process_time() - c:.2f} s CPU "
          f"(load average {os.getloadavg()[0]:.1f})")


def pair_rules(args: argparse.Namespace) -> None:
    """pair_rule = "prompt" (the prompt as a whole) against "instruction" (the default): how many demo pairs get
    their file's language, and the stage's cost, the two interleaved (A B A B) on the same frames."""
    from curate.stages import language

    print("\n## Pair rule: the prompt as a whole vs the instruction\n")
    demo = pl.DataFrame([{k: v for k, v in r.items()} for r in demo_pairs()])
    from curate.schema import conform, with_ids

    frame = with_ids(conform(demo.drop("file_lang"))).collect()
    truth = demo["file_lang"].replace({"zh": "zh-Hans"}).to_list()
    print("| pair_rule | demo pairs labelled with their file's language | other | mixed | mismatch rejected |")
    print("| --- | --- | --- | --- | --- |")
    for rule in ("prompt", "instruction"):
        res = language.run(frame, language.Config(pair_rule=rule)).collect()
        labels = dict(zip(res.kept["pair_id"], res.kept["lang"]))
        got = [labels.get(pid, "mismatch") for pid in frame["pair_id"]]
        ok = sum(g == t for g, t in zip(got, truth))
        print(f"| {rule} | {ok}/{len(truth)} | {got.count('other')} | {got.count('mixed')} | "
              f"{res.rejects.height} |")
    print("\n| pairs | rule | wall s (best of %d) | CPU s | pairs per CPU-second | load avg |" % args.repeat)
    print("| --- | --- | --- | --- | --- | --- |")
    for n in [int(x) for x in args.pairs.split(",")]:
        df = pairs_frame(n)
        time_stage(df.head(2000), 1)
        runs: dict[str, list[tuple[float, float]]] = {"prompt": [], "instruction": []}
        for _ in range(args.repeat):
            for rule in runs:  # interleaved
                runs[rule].append(time_stage(df, 1, language.Config(pair_rule=rule)))
        for rule, got in runs.items():
            wall, cpu = min(got)
            print(f"| {n:,} | {rule} | {wall:.2f} | {cpu:.2f} | {n / cpu:,.0f} | {os.getloadavg()[0]:.1f} |")
        base, new = min(runs["prompt"])[1], min(runs["instruction"])[1]
        print(f"| {n:,} | instruction / prompt CPU | {new / base:.2f}x | | | |")


def speed(args: argparse.Namespace) -> None:
    print("\n## Speed: whole language stage (3 texts per pair)\n")
    print("| pairs | wall s (best of %d) | pairs/s (wall) | CPU s | pairs per CPU-second | load avg |" % args.repeat)
    print("| --- | --- | --- | --- | --- | --- |")
    warm = pairs_frame(2000, seed=1)
    t = time.perf_counter()
    time_stage(warm, 1)
    cold = time.perf_counter() - t
    stage_rate = 0.0
    for n in [int(x) for x in args.pairs.split(",")]:
        df = pairs_frame(n)
        best, cpu = time_stage(df, args.repeat)
        stage_rate = n / best
        print(f"| {n:,} | {best:.2f} | {stage_rate:,.0f} | {cpu:.2f} | {n / cpu:,.0f} | {os.getloadavg()[0]:.1f} |")
    print(f"\n(first call in the process, 2,000 pairs, incl. OpenCC tables and regex compilation: {cold:.2f} s)")
    sub = pairs_frame(1000, seed=2)
    sub_texts = texts_of(sub)
    print("\nbaselines on the same kind of pairs, same process:\n")
    print("| method | pairs/s | curate stage is ×faster |")
    print("| --- | --- | --- |")
    for name, fn, k in [("langdetect (seed 0)", m_langdetect, 300),
                        ("lingua zh+en", lambda t: m_lingua(t, ["zh", "en"]), 1000),
                        ("lingua 8 langs", lambda t: m_lingua(t, ["zh", "en", "ja", "ko", "fr", "de", "es", "ru"]), 1000)]:
        chunk = sub_texts[: 3 * k]
        fn(chunk[:3])  # load models
        t = time.perf_counter()
        fn(chunk)
        rate = k / (time.perf_counter() - t)
        print(f"| {name} | {rate:,.0f} | {stage_rate / rate:,.1f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
