"""Synthetic zh/en preference pairs with planted exact, near and semantic duplicates (seeded, so identical every
time). Used by tests/engines/ (a few hundred pairs) and bench/bench_ray.py (100k and 1M pairs).

Planted, per language, among otherwise distinct prompts:
    exact      the same prompt with other spacing, case, full-width letters or punctuation (one normalised key)
    near       the same prompt with a few characters changed (character n-gram Jaccard well above 0.6)
    semantic   the same English request reworded with other function words (n-grams differ, meaning does not)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_ZH = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定"
       "行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外"
       "天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最")
_EN = ("apple river mountain engine garden window pencil market doctor teacher music planet ocean forest bridge castle "
       "camera rocket silver yellow quickly slowly happy angry simple complex travel cook write read build break carry "
       "climb dance drive explain finish gather handle imagine jump kick learn measure notice open paint question "
       "remember search throw understand visit wash yield zoom anchor basket candle desert eagle feather glacier harbor "
       "island jacket kettle ladder meadow needle orchard pillow quartz ribbon saddle tunnel valley wagon").split()


def _zh_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ZH) for _ in range(n)) + "？"


def _en_text(rng: random.Random, n: int) -> str:
    return "How do I " + " ".join(rng.choice(_EN) for _ in range(n)) + "?"


def _exact_variant(text: str, rng: random.Random, zh: bool) -> str:
    if zh:  # full-width/half-width punctuation and spaces: the same normalised key
        return " " + text.replace("？", "?") + "  "
    return text.upper() if rng.random() < 0.5 else text.replace(" ", "  ").replace("?", " ?")


def _near_variant(text: str, rng: random.Random, zh: bool) -> str:
    chars = list(text)
    for _ in range(max(1, len(chars) // 25)):  # ~4% of characters changed
        k = rng.randrange(len(chars) - 1)
        chars[k] = rng.choice(_ZH) if zh else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def _semantic_variant(text: str, rng: random.Random) -> str:
    # Reworded by function words only ("How do I X?" -> "How can I X, please?"): n-grams and edit distance differ
    # too much for exact and near, the content check sees only stopwords changed, so semantic dedup is the judge.
    # A rewording that adds content words ("explain", "best way") is kept by design (issue 9: precision first).
    return "How can I " + text[len("How do I "):-1] + ", please?"


def rows(n: int, seed: int = 0, zh_share: float = 0.7, dup_share: float = 0.15) -> list[dict]:
    """`n` pairs: distinct prompts plus about `dup_share` planted duplicates, `zh_share` of them Chinese."""
    rng = random.Random(seed)
    out: list[dict] = []
    for i in range(n):
        zh = rng.random() < zh_share
        if out and rng.random() < dup_share:
            base = rng.choice(out)
            zh = base["lang"] == "zh"
            kind = rng.choice(("exact", "near") if zh else ("exact", "near", "semantic"))
            text = base["prompt"]
            prompt = (_exact_variant(text, rng, zh) if kind == "exact" else _near_variant(text, rng, zh)
                      if kind == "near" else _semantic_variant(text, rng))
        else:
            kind = "unique"
            prompt = _zh_text(rng, rng.randint(24, 60)) if zh else _en_text(rng, rng.randint(4, 6))
        if zh:
            chosen, rejected = "好的，" + _zh_text(rng, 40), "不知道。" + _zh_text(rng, 6)
        else:
            chosen = "Sure: " + " ".join(rng.choice(_EN) for _ in range(30)) + "."
            rejected = "No idea, " + " ".join(rng.choice(_EN) for _ in range(4)) + "."
        out.append({"id": i, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                    "score_chosen": round(rng.uniform(5, 10), 2), "score_rejected": round(rng.uniform(0, 5), 2),
                    "lang": "zh" if zh else "en", "planted": kind})
    return out


def write(folder: Path, n: int, seed: int = 0, files: int = 3) -> list[Path]:
    """The pairs of `rows(n, seed)` as `files` JSON Lines files under `folder` (so ingest has sources to spread)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = rows(n, seed)
    paths = []
    for f in range(files):
        p = folder / f"part-{f:02d}.jsonl"
        with p.open("w", encoding="utf-8") as fh:
            for r in data[f::files]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        paths.append(p)
    return paths
