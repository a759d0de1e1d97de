"""Length bias: how often the chosen reply is the longer one, per source and language.

Why: when chosen is nearly always the longer reply, a preference model (and an ORPO/DPO policy) learns "longer is
better" instead of "better is better" — the best-known reward-hacking shortcut. The share should sit near 50% for
a source whose annotators judged content; 70–90% means length explains much of its preferences. The `balance`
stage can even the share out (`length_balance`).

Language: the pair's `lang` from the language stage when it ran (zh-Hans / zh-Hant → zh), else the script of the
prompt's user turns plus the chosen reply (their first 400 characters): `zh` when Han characters are at least 30%
of the letters (1.000 accuracy on zh vs en in ../shared/notes/measured-facts.md), `en` otherwise.
"""

from __future__ import annotations

from typing import Any

import polars as pl

CJK_SHARE = 0.3
_HEAD = 400


def lang_expr(names: list[str]) -> pl.Expr:
    """The language group of each pair (see the module docstring)."""
    if "lang" in names:
        lang = pl.col("lang").cast(pl.String)
        return pl.when(lang.str.starts_with("zh")).then(pl.lit("zh")).otherwise(lang.fill_null("other"))
    user = (
        pl.col("prompt")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.join("\n")
        .fill_null("")
    )
    head = pl.concat_str([user.str.slice(0, _HEAD), pl.col("chosen").fill_null("").str.slice(0, _HEAD)], separator="\n")
    han = head.str.count_matches(r"\p{Han}")
    letters = head.str.count_matches(r"[\p{Han}\p{Latin}]")
    return pl.when((letters > 0) & (han >= CJK_SHARE * letters)).then(pl.lit("zh")).otherwise(pl.lit("en"))


def bias(df: pl.DataFrame, chosen_len: str = "__clen", rejected_len: str = "__rlen", lang: str = "__lang") -> dict[str, Any]:
    """Counts of chosen-longer / rejected-longer / equal pairs, overall, per language and per (source, language)."""

    def summary(frame: pl.DataFrame) -> dict[str, Any]:
        c, r = frame[chosen_len], frame[rejected_len]
        n = frame.height
        longer = int((c > r).sum())
        shorter = int((c < r).sum())
        ratio = (c.cast(pl.Float64) / r.cast(pl.Float64).clip(lower_bound=1.0)).median() if n else None
        return {
            "pairs": n,
            "chosen_longer": longer,
            "rejected_longer": shorter,
            "equal": n - longer - shorter,
            "share_chosen_longer": round(longer / n, 4) if n else None,
            "median_length_ratio": round(float(ratio), 3) if ratio is not None else None,  # type: ignore[arg-type]
        }

    out: dict[str, Any] = {"overall": summary(df), "by_lang": {}, "by_source": []}
    for (g,), part in sorted(df.group_by(lang), key=lambda kv: str(kv[0][0])):
        out["by_lang"][str(g)] = summary(part)
    for (src, g), part in sorted(df.group_by("source", lang), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        out["by_source"].append({"source": src, "lang": g, **summary(part)})
    return out
