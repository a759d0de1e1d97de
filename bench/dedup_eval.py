"""Evaluation harness for the dedup stage: precision/recall of removal on a labelled set with injected variants.

Labelled set: the unique prompts of the real LLaMA-Factory DPO demo files (../shared/data/llamafactory_dpo_demo,
300 English + 300 Chinese rows) plus hard negatives we wrote (templated prompts that differ only in their
content words, here and in bench/data/dedup_calibration.json; they must all be kept). For each variant type, one run of the stage sees every original plus one
variant of each original the type applies to:

    punct_ws  punctuation width/choice changed, whitespace added/removed
    case      capitalisation changed (lower / UPPER / Title / swapped first letter)
    edit1_3   1–3 typos. English: random letters inserted, deleted or substituted inside words. Chinese: the typos
              a pinyin IME makes — a character replaced by a homophone (same pinyin, tones ignored), a character
              doubled, a particle (的 了 吗 呢 …) added or dropped
    edit1_3_random  1–3 random character edits with characters of the text itself, any position (the old
              edit1_5 model at 1–3 edits). In Chinese a random substitution is, lexically, a different word
              (猫 → 狗), so dedup keeps such pairs by design: this row shows what that costs
    script    Simplified → Traditional (Chinese only; OpenCC s2t)
    prefix    an added instruction prefix ("请回答：", "Please answer: ", …)
    reorder   the prompt's sentences in another order (prompts with ≥ 2 sentences)

Scoring: a group (original + its variant) is *found* when exactly one of the two was removed as a duplicate of
the other (same dup_cluster). Recall = found groups / groups, per type and language. Precision = removals whose
row and survivor belong to the same labelled group / all removals (so a removed hard negative, or a natural
near-miss in the real data, counts against it). A group "loses all members" if both rows were removed.

Run:  .venv/bin/python bench/dedup_eval.py [--methods exact,near,semantic] [--set near.threshold=0.6 ...]
          [--pipeline-defaults] [--types edit1_3,all] [--seed N] [--show-false] [--show-misses] [--json PATH]
Writes a Markdown table to stdout (and --json PATH for machines).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.config import build, parse_override
from curate.dedup.normalise import normalise
from curate.schema import MESSAGE, conform, row_ids, with_ids
from curate.stages import dedup

DATA = ROOT.parent / "shared" / "data" / "llamafactory_dpo_demo"
SHORT = 30  # normalised key length below which a prompt counts as short in the recall breakdown
TYPES = ("punct_ws", "case", "edit1_3", "edit1_3_random", "script", "prefix", "reorder")
SHORT_BAND = (20, 80)  # the "short prompts": 20–80 characters (raw last user turn)
PARTICLES = "的了吗呢吧啊"

# Hard negatives we wrote: same template, different content. None of them duplicates another.
HARD_NEGATIVES = {
    "en": [
        "Translate the following sentence into French: The cat is sleeping on the sofa.",
        "Translate the following sentence into French: My brother works at the hospital.",
        "Translate the following sentence into German: The cat is sleeping on the sofa.",
        "Write a haiku about the ocean at night.",
        "Write a haiku about the mountains in spring.",
        "What is the capital of Australia?",
        "What is the capital of Austria?",
        "Calculate 123456 * 789 and show your steps.",
        "Calculate 654321 * 987 and show your steps.",
        "Summarise the plot of Hamlet in three sentences.",
        "Summarise the plot of Macbeth in three sentences.",
        "Write a Python function that reverses a linked list.",
        "Write a Python function that reverses a string.",
        "Explain the difference between TCP and UDP.",
        "Explain the difference between HTTP and HTTPS.",
    ],
    "zh": [
        "请把下面这句话翻译成英文：今天天气很好。",
        "请把下面这句话翻译成英文：我明天要去北京出差。",
        "请把下面这句话翻译成法文：今天天气很好。",
        "写一首关于秋天的诗。",
        "写一首关于大海的诗。",
        "中国的首都是哪里？",
        "日本的首都是哪里？",
        "计算 123456 乘以 789，并写出步骤。",
        "计算 654321 乘以 987，并写出步骤。",
        "用三句话概括《红楼梦》的情节。",
        "用三句话概括《西游记》的情节。",
        "用 Python 写一个反转链表的函数。",
        "用 Python 写一个反转字符串的函数。",
        "解释一下 TCP 和 UDP 的区别。",
        "解释一下 HTTP 和 HTTPS 的区别。",
    ],
}

PREFIXES = {"en": ["Please answer: ", "Question: ", "Answer the following. "], "zh": ["请回答：", "问题：", "请回答下面的问题："]}
_SENT = re.compile(r"(?<=[.!?。！？])\s*")
_WIDTH = str.maketrans({",": "，", ":": "：", "?": "？", "!": "！", ";": "；", "(": "（", ")": "）"})
_NARROW = str.maketrans({"，": ",", "：": ":", "？": "?", "！": "!", "；": ";", "（": "(", "）": ")", "。": "."})


def load_demo(lang: str) -> list[dict]:
    """The demo file's rows as canonical dicts, read by curate's own ingest (LLaMA-Factory ShareGPT ranking)."""
    import tempfile

    import polars as pl

    from curate.ingest import ingest

    with tempfile.TemporaryDirectory() as out:
        ingest([str(DATA / f"dpo_{lang}_demo.json")], out)
        pairs = pl.read_parquet(f"{out}/pairs.parquet").sort("source_row")
    keep = ("source_row", "system", "prompt", "chosen", "rejected")
    return [{"source": f"demo_{lang}", **{k: r[k] for k in keep}, "meta": "{}"} for r in pairs.to_dicts()]


def originals(lang: str) -> list[dict]:
    """Unique prompts of the demo file (first occurrence) plus our hard negatives."""
    seen, out = set(), []
    for r in load_demo(lang):
        key = "\n".join(m["content"] for m in r["prompt"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    calib = json.loads((ROOT / "bench" / "data" / "dedup_calibration.json").read_text(encoding="utf-8"))[lang]
    extra = [t for pair in calib["hard_negatives"] for t in pair]
    negatives = list(dict.fromkeys(HARD_NEGATIVES[lang] + extra))  # ours + the calibration set's, once each
    for k, text in enumerate(negatives):
        out.append({"source": f"ours_{lang}", "source_row": k, "system": None,
                    "prompt": [{"role": "user", "content": text}], "chosen": f"answer {k}", "rejected": f"bad {k}",
                    "meta": "{}"})
    return out


def _s2t():
    import opencc

    return opencc.OpenCC("s2t")


def variant(text: str, kind: str, lang: str, rng: random.Random) -> str | None:
    """One injected variant of `text`, or None when the type does not apply (or would change nothing)."""
    if kind == "punct_ws":
        out = text.translate(_WIDTH if rng.random() < 0.5 else _NARROW)
        out = re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\n", " \t"]), out)
        out = out.rstrip("?？.。!！") + rng.choice(["?", "？", "!", "。", "...", " "])
        if lang == "zh":
            out = re.sub(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])", lambda m: " " if rng.random() < 0.05 else "", out)
    elif kind == "case":
        if not re.search(r"[A-Za-z]", text):
            return None
        out = rng.choice([str.lower, str.upper, str.title, str.swapcase])(text)
    elif kind == "edit1_3":
        out = _typos(text, lang, rng, rng.randint(1, 3))
    elif kind == "edit1_3_random":
        chars = list(text)
        alphabet = [c for c in text if c.isalpha()] or list("abcdefghijklmnopqrstuvwxyz")
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(["ins", "del", "sub"])
            pos = rng.randrange(max(1, len(chars)))
            if op == "ins" or not chars:
                chars.insert(pos, rng.choice(alphabet))
            elif op == "del":
                del chars[pos]
            else:
                chars[pos] = rng.choice(alphabet)
        out = "".join(chars)
    elif kind == "script":
        if lang != "zh":
            return None
        out = _s2t().convert(text)
    elif kind == "prefix":
        out = rng.choice(PREFIXES[lang]) + text
    elif kind == "reorder":
        sents = [s for s in _SENT.split(text.strip()) if s]
        if len(sents) < 2:
            return None
        order = list(range(len(sents)))
        while order == sorted(order):
            rng.shuffle(order)
        out = (" " if lang == "en" else "").join(sents[k] for k in order)
    else:
        raise ValueError(kind)
    return out if out != text else None


def _homophone_table() -> dict[str, list[str]]:
    """pinyin (no tone) → common Han characters with it, from the characters of the demo files and our texts."""
    import functools

    @functools.lru_cache(maxsize=1)
    def build() -> dict[str, list[str]]:
        from pypinyin import Style, lazy_pinyin

        chars: set[str] = set()
        for lang in ("zh",):
            for r in load_demo(lang):
                for m in r["prompt"]:
                    chars.update(c for c in m["content"] if "\u4e00" <= c <= "\u9fff")
        table: dict[str, list[str]] = {}
        for c in sorted(chars):
            table.setdefault(lazy_pinyin(c, style=Style.NORMAL)[0], []).append(c)
        return table

    return build()


def _typos(text: str, lang: str, rng: random.Random, n: int) -> str:
    chars = list(text)
    for _ in range(n):
        if lang == "en":
            letters = [k for k, c in enumerate(chars) if c.isalpha()]
            if not letters:
                break
            pos = rng.choice(letters)
            op = rng.choice(["ins", "del", "sub"])
            letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
            if op == "ins":
                chars.insert(pos, letter)
            elif op == "del":
                del chars[pos]
            else:
                chars[pos] = letter
            continue
        from pypinyin import Style, lazy_pinyin

        han = [k for k, c in enumerate(chars) if "\u4e00" <= c <= "\u9fff"]
        if not han:
            break
        op = rng.choice(["homophone", "homophone", "double", "particle"])
        pos = rng.choice(han)
        if op == "homophone":
            same = [c for c in _homophone_table().get(lazy_pinyin(chars[pos], style=Style.NORMAL)[0], [])
                    if c != chars[pos]]
            if same:
                chars[pos] = rng.choice(same)
                continue
            op = "double"
        if op == "double":
            chars.insert(pos, chars[pos])
        else:
            there = [k for k in han if chars[k] in PARTICLES]
            if there and rng.random() < 0.5:
                del chars[rng.choice(there)]
            else:
                chars.insert(pos + 1, rng.choice(PARTICLES))
    return "".join(chars)


def with_variant(row: dict, kind: str, lang: str, rng: random.Random) -> dict | None:
    """A copy of `row` whose last user turn is a variant (replies slightly changed, so pair ids differ)."""
    last = max(k for k, m in enumerate(row["prompt"]) if m["role"] == "user")
    new = variant(row["prompt"][last]["content"], kind, lang, rng)
    if new is None:
        return None
    prompt = [dict(m) for m in row["prompt"]]
    prompt[last]["content"] = new
    return {**row, "prompt": prompt, "source": f"{row['source']}_{kind}",
            "source_row": row["source_row"] + 100_000}


def frame(rows: list[dict]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema_overrides={"prompt": pl.List(MESSAGE)})
    # Variants copy their original's row; every row gets its own row_id, as ingest would give it.
    df = df.with_columns(pl.Series("row_id", row_ids("dedup_eval", list(range(df.height)))))
    return conform(with_ids(df)).collect()


def evaluate(kind: str | None, cfg, seed: int = 0) -> dict:
    """One stage run over originals (+ variants of `kind`; None: every type at once) → scores per language."""
    rng = random.Random(f"{seed}-{kind}")
    rows, group = [], []
    for lang in ("en", "zh"):
        for g, row in enumerate(originals(lang)):
            rows.append(row)
            group.append((lang, g, "orig"))
            for t in (TYPES if kind is None else (kind,)):
                v = with_variant(row, t, lang, rng)
                if v is not None:
                    rows.append(v)
                    group.append((lang, g, t))
    df = frame(rows).with_row_index("__i")
    t0 = time.perf_counter()
    res = dedup.run(df, cfg).collect()
    seconds = time.perf_counter() - t0
    gid = {i: (lang, g) for i, (lang, g, _) in enumerate(group)}
    kind_of = {i: t for i, (_, _, t) in enumerate(group)}
    row_of_pid: dict[str, int] = {}
    for i, pid in zip(df["__i"].to_list(), df["row_id"].to_list()):
        row_of_pid.setdefault(pid, i)
    removed = {i: (reason, root) for i, reason, root in res.rejects.select("__i", "reason", "dup_cluster").iter_rows()}
    kept = set(res.kept["__i"].to_list())
    correct = {"en": 0, "zh": 0}
    wrong: dict[str, list] = {"en": [], "zh": []}
    for i, (reason, root) in removed.items():
        lang = gid[i][0]
        ok = root is not None and root in row_of_pid and gid[row_of_pid[root]] == gid[i]
        if ok:
            correct[lang] += 1
        else:
            wrong[lang].append((i, reason, root))
    # Recall per (lang, type): a group is found when all but one of its members were removed into its cluster.
    members: dict[tuple[str, int], list[int]] = {}
    for i, key in gid.items():
        members.setdefault(key, []).append(i)
    found: dict[tuple[str, str], list[int]] = {}
    misses: list[dict] = []
    lost_all = 0
    for key, ms in members.items():
        if len(ms) < 2:
            continue
        survivors = [i for i in ms if i in kept]
        if not survivors:
            lost_all += 1
        for i in ms:
            if kind_of[i] == "orig":
                continue
            def into_group(m: int) -> bool:
                return m in removed and gid.get(row_of_pid.get(removed[m][1], -1)) == key  # noqa: B023 - called right here, inside the loop

            # The variant was removed into its own group, or it survived and the original was removed into it.
            pair_ok = into_group(i) or (i in kept and into_group(ms[0]))
            short = len(normalise(_prompt(rows[ms[0]], 10**9))) < SHORT
            n_raw = len(rows[ms[0]]["prompt"][-1]["content"])
            band = SHORT_BAND[0] <= n_raw <= SHORT_BAND[1]
            found.setdefault((key[0], kind_of[i]), []).append((int(pair_ok), short, band))
            if not pair_ok:
                fate = (f"removed into {_prompt(rows[row_of_pid[removed[i][1]]], 60)!r}" if i in removed
                        and removed[i][1] in row_of_pid else "kept")
                misses.append({"lang": key[0], "type": kind_of[i], "band": band, "original": _prompt(rows[ms[0]], 80),
                               "variant": _prompt(rows[i], 80), "variant_fate": fate})
    out = {"type": kind or "all", "rows": df.height, "seconds": round(seconds, 2), "lost_all_groups": lost_all,
           "misses": misses}
    for lang in ("en", "zh"):
        n_removed = correct[lang] + len(wrong[lang])
        out[f"precision_{lang}"] = round(correct[lang] / n_removed, 4) if n_removed else 1.0
        out[f"removed_{lang}"] = n_removed
        out[f"false_{lang}"] = [
            {"row": _prompt(rows[i]), "survivor": _prompt(rows[row_of_pid[root]]) if root in row_of_pid else None,
             "reason": reason}
            for i, reason, root in wrong[lang][:5]
        ]
        for (lg, t), hits in sorted(found.items()):
            if lg == lang:
                out[f"recall_{lang}_{t}"] = round(sum(h for h, _, _ in hits) / len(hits), 4)
                out[f"groups_{lang}_{t}"] = len(hits)
                band_hits = [h for h, _, band in hits if band]
                out[f"recall_band_{lang}_{t}"] = round(sum(band_hits) / len(band_hits), 4) if band_hits else None
                out[f"groups_band_{lang}_{t}"] = len(band_hits)
                long_hits = [h for h, short, _ in hits if not short]
                out[f"recall_long_{lang}_{t}"] = round(sum(long_hits) / len(long_hits), 4) if long_hits else None
                out[f"groups_long_{lang}_{t}"] = len(long_hits)
    return out


def _prompt(row: dict, width: int = 90) -> str:
    text = " ".join(row["prompt"][-1]["content"].split())
    return text[:width]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="exact,near,semantic")
    ap.add_argument("--set", action="append", default=[], help="dedup option override, e.g. near.threshold=0.6")
    ap.add_argument("--cache-dir", default="/tmp/curate-bench-embed-cache")
    ap.add_argument("--types", default=",".join(TYPES) + ",all", help="variant types to run (a subset is quicker)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the injected variants (another sample of typos)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--show-false", action="store_true")
    ap.add_argument("--show-misses", action="store_true",
                    help="print every group not found (original, variant, what happened to the variant)")
    ap.add_argument("--pipeline-defaults", action="store_true",
                    help="use pipelines/default.toml's [dedup] tables (then --methods is ignored)")
    args = ap.parse_args(argv)
    table: dict = {"methods": args.methods.split(","), "semantic": {"cache_dir": args.cache_dir, "progress": False}}
    if args.pipeline_defaults:
        import tomllib

        table = tomllib.loads((ROOT / "pipelines" / "default.toml").read_text(encoding="utf-8"))["dedup"]
        table.setdefault("semantic", {}).update({"cache_dir": args.cache_dir, "progress": False})
    for item in args.set:
        _, key, value = parse_override("dedup." + item)
        cur = table
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    cfg = build(dedup.Config, table, "dedup_eval")
    results = []
    for t in args.types.split(","):
        results.append(evaluate(None if t == "all" else t, cfg, seed=args.seed))
    print(f"methods={args.methods} overrides={args.set} seed={args.seed}")
    print(f"| variant | lang | groups | recall | recall, prompts of {SHORT_BAND[0]}–{SHORT_BAND[1]} chars (groups) | "
          f"recall, keys ≥ {SHORT} chars (groups) | precision (run) | false removals | lost groups |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        for lang in ("en", "zh"):
            kinds = TYPES if r["type"] == "all" else (r["type"],)
            for t in kinds:
                if f"recall_{lang}_{t}" not in r:
                    continue
                print(f"| {t if r['type'] != 'all' else 'all:' + t} | {lang} | {r[f'groups_{lang}_{t}']} | "
                      f"{r[f'recall_{lang}_{t}']:.3f} | {_fmt(r[f'recall_band_{lang}_{t}'])} "
                      f"({r[f'groups_band_{lang}_{t}']}) | {_fmt(r[f'recall_long_{lang}_{t}'])} ({r[f'groups_long_{lang}_{t}']}) | "
                      f"{r[f'precision_{lang}']:.3f} | {len_false(r, lang)} | "
                      f"{r['lost_all_groups']} |")
    if args.show_false:
        for r in results:
            for lang in ("en", "zh"):
                for f in r[f"false_{lang}"]:
                    print(f"FALSE [{r['type']}/{lang}/{f['reason']}] {f['row']!r}  <=  {f['survivor']!r}")
    if args.show_misses:
        for r in results:
            for m in r["misses"]:
                print(f"MISS [{r['type']}/{m['lang']}/{m['type']}{'/band' if m['band'] else ''}] {m['original']!r}  "
                      f"->  {m['variant']!r}  ({m['variant_fate']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def len_false(r: dict, lang: str) -> int:
    return r[f"removed_{lang}"] - round(r[f"precision_{lang}"] * r[f"removed_{lang}"])


if __name__ == "__main__":
    raise SystemExit(main())
