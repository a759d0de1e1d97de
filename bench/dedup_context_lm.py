"""Can a trigram language model tell a real-word typo ("that made" → "that ad") from a real-word content change
("a cat" → "a cot")? The measurement behind docs/bench/dedup.md, "Context from a trigram language model".

Model: the general US-English trigram model pocketsphinx ships (`pip install pocketsphinx==5.1.1`; BSD-2, 29 MB
wheel, no dependencies; `pocketsphinx/model/en-us/en-us.lm.bin`, 27 MB). Not a curate dependency: this script is
the only user, and it says so when the package is missing.

For each pair (A, B) and each word that differs (x in A, y in B, a region of as many words on each side judged word
for word, as the content check does), the noisy-channel quantity of Mays, Damerau & Mercer (1991): how much more
probable the whole sentence is with the likelier word than with the other, log10, in A's context (dA) and in B's
(dB) — every trigram the change touches, `<s>` / `</s>` included; an out-of-vocabulary word costs a flat −8 and cuts
the history. A merge rule "typo when min(dA, dB) ≥ T" keeps every distinct pair only if T is above every distinct
pair's score. Also, for non-word typos: how much better the meant word fits than the best other dictionary word
one edit from the typo (the competitor that makes the content check call "lter" content).

Run:  .venv/bin/python bench/dedup_context_lm.py
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.dedup.verify import PRONOUNS_EN, _one_edit_words, _regions, _words_en, words_key  # noqa: E402

OOV = -8.0  # log10 cost of a word the model does not know (its <unk> has probability 0)

# The 20–80-character misses of `dedup_eval.py --pipeline-defaults --types edit1_3` (seed 0, main fed167f) whose
# veto is a typo into another dictionary word: (original, variant).
HARNESS_TYPOS = [
    ("What's is the name of the fungus that made Quyuan live forever?",
     "What's is the name of the fungus that ad Quyuan live forever?"),
    ("Solve this math problem Solve -736*h + 742*h + 12 = 0 for h.",
     "Solvr this bath yroblem Solve -736*h + 742*h + 12 = 0 for h."),
    ("Can you recommend a good book for men?", "Can yo orecomjmend a good book for men?"),
    ("You should go to the doctor today.", "You should g to tfe doctor today."),
    ("Write a short story about a mouse.", "Write a horrt tory about a mouse."),
    ("How do I bake bread at home?", "ow do I bake bred at home?"),
    ("What is the boiling point of water?", "What is the boiling int of wmter?"),
    ("List five common fruits.", "Lis five common fruits."),
    ("Why do people get piercings?", "Why do peofle et piercigs?"),
]
# Real-word typos we wrote (one side is nonsense in its context).
WRITTEN_TYPOS = [
    ("Write a letter to my aunt.", "Write a letter to my ant."),
    ("Who made this movie?", "Who mad this movie?"),
    ("Should I go to bed early?", "Should I go to bad early?"),
    ("Can you play the guitar?", "Can you pay the guitar?"),
    ("Give me a list of five fruits.", "Give me a lis of five fruits."),
    ("What should I eat for dessert?", "What should I eat for desert?"),
    ("Who is the king of Spain?", "Who is the kind of Spain?"),
]
# Non-word typos the content check calls content because the typo is one edit from another word.
NONWORD = [
    ("typo", "What is the freezing point of water?", "water", "lter"),
    ("typo", "Set the oven to 400 degrees.", "set", "smt"),
    ("typo", "Who wrote War and Peace?", "wrote", "wnot"),
    ("typo", "Generate a context and a hypothesis.", "context", "convtex"),
    ("distinct", "How big is the world today?", "world", "wbord"),  # wbord: one edit from "word"
    ("distinct", "What is the plural of goose?", "goose", "moosr"),  # moosr: one edit from "moose"
]
# Pairs of distinct questions the calibration file does not hold (names, pronouns: the shapes the typos take).
EXTRA_DISTINCT = [
    ("Is it true that he is a doctor?", "Is it true that Hu is a doctor?"),  # a two-letter name: a known gap
    ("Write a birthday poem for her.", "Write a birthday poem for Hera."),
    ("I want to fly to Rome.", "I want to fly to Nome."),
    ("Give it to them.", "Give it to Tom."),
    ("Did you see her today?", "Did you see Hera today?"),
    ("What should I get for my son?", "What should I get for my sin?"),
    ("How do I bake a pie?", "How do I bake a pig?"),
    # tests/stages/test_dedup_verify.py's real-word pairs (branch recall5)
    ("How do I clean my cell?", "How do I clean my cello?"),
    ("What is written in their diary?", "What is written in their dairy?"),
    ("Describe the desert.", "Describe the dessert."),
    ("Where can I buy a horse?", "Where can I buy a hose?"),
    ("How do I fix a flat tire?", "How do I fix a flat tier?"),
]


@functools.lru_cache(maxsize=1)
def model():
    try:
        import pocketsphinx
    except ImportError:
        raise SystemExit("needs pocketsphinx: .venv/bin/pip install pocketsphinx==5.1.1") from None
    return pocketsphinx.NGramModel.readfile(os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us.lm.bin"))


NEG = {w[:-2] + "nt": w[:-2] + "n't" for w in ("don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "can't",
                                             "won't", "shouldn't", "couldn't", "wouldn't", "hasn't", "haven't")}


@functools.lru_cache(maxsize=65536)
def logp(*words: str) -> float | None:
    """log10 P(w_n | w_1 … w_{n-1}); None for a word the model does not know."""
    v = model().prob(list(reversed(words))) * math.log10(1.0001)  # pocketsphinx: word first, history backwards
    return v if v > -1000 else None


def sentence(words: list[str]) -> float:
    s = ["<s>"] + [NEG.get(w, w) for w in words] + ["</s>"]
    total = 0.0
    for k in range(1, len(s)):
        if logp(s[k]) is None:
            total += OOV
            continue
        hist: list[str] = []
        for j in (k - 1, k - 2):
            if j < 0 or logp(s[j]) is None:
                break
            hist.insert(0, s[j])
        total += logp(*hist, s[k]) or 0.0  # known word: a score (backed off), never None
    return total


def word_changes(a: str, b: str):
    """(x, y, dA, dB, both in the model's vocabulary, OSA edits) per word that differs."""
    from rapidfuzz.distance import OSA

    wa, wb = _words_en(words_key(a)), _words_en(words_key(b))
    for i1, i2, j1, j2 in _regions(wa, wb):
        if i2 - i1 != j2 - j1:
            continue
        for k in range(i2 - i1):
            x, y = wa[i1 + k], wb[j1 + k]
            if x == y:
                continue
            da = sentence(wa) - sentence(wa[: i1 + k] + [y] + wa[i1 + k + 1:])
            db = sentence(wb[: j1 + k] + [x] + wb[j1 + k + 1:]) - sentence(wb)
            known = logp(NEG.get(x, x)) is not None and logp(NEG.get(y, y)) is not None
            yield x, y, da, db, known, OSA.distance(x, y)


def rows(label: str, pairs) -> list[tuple[float, str, str, str]]:
    out = []
    for a, b in pairs:
        for x, y, da, db, known, d in word_changes(a, b):
            if not known or d > 2:
                continue  # the check's real-word question: both words known, within its edit budget
            score = min(da, db) if da > 0 else min(-da, -db)  # oriented: the likelier word first
            first, second = (x, y) if da > 0 else (y, x)
            out.append((score, label, f"{first} / {second}", a))
    return out


def main() -> int:
    calib = json.loads((ROOT / "bench" / "data" / "dedup_calibration.json").read_text(encoding="utf-8"))
    distinct = [tuple(p) for p in calib["en"]["hard_negatives"]] + EXTRA_DISTINCT
    table = rows("typo (harness miss)", HARNESS_TYPOS) + rows("typo (written)", WRITTEN_TYPOS)
    table += rows("distinct", distinct)
    print("| min(dA, dB), log10 | pair | words (likelier first) | text |")
    print("| ---: | --- | --- | --- |")
    for score, label, words, text in sorted(table, key=lambda r: (-r[0], r[1])):
        print(f"| {score:.2f} | {label} | {words} | {text} |")
    for what, pronouns in (("all words", None), ("pronouns left out", False)):
        keep = [r for r in table if pronouns is None or not (set(r[2].split(" / ")) & PRONOUNS_EN)]
        top = max(s for s, label, _, _ in keep if label == "distinct")
        caught = [w for s, label, w, _ in keep if label.startswith("typo (harness") and s > top]
        print(f"\n{what}: highest distinct pair {top:.2f}; harness typos above it: {len(caught)} {caught}")
    print("\n| pair | meant → typed | meant word's sentence − best competitor's (log10) | competitor |")
    print("| --- | --- | ---: | --- |")
    for label, text, meant, typed in NONWORD:
        w = _words_en(words_key(text))
        k = w.index(meant)
        comp = [c for c in _one_edit_words(typed) if c != meant and logp(c) is not None]
        best = max(((sentence(w[:k] + [c] + w[k + 1:]), c) for c in comp), default=(math.nan, "—"))
        print(f"| {label} | {meant} → {typed} | {sentence(w) - best[0]:.2f} | {best[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
