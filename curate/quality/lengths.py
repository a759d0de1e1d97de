"""Length bias: how often the chosen reply is the longer one, per source and language.

Why: when chosen is nearly always the longer reply, a preference model (and an ORPO/DPO policy) learns "longer is
better" instead of "better is better" — the best-known reward-hacking shortcut. The share should sit near 50% for
a source whose annotators judged content; 70–90% means length explains much of its preferences. The `balance`
stage can even the share out (`length_balance`).

Language: the pair's `lang` from the language stage when it ran (zh-Hans / zh-Hant → zh), else the script of the
last user turn plus the chosen reply (their first 400 characters each): `zh` when at least 30% of the
characters are CJK (counted as 3-byte UTF-8 characters, which CJK ideographs and punctuation are), `en` otherwise.
The same 30% rule on Han letters had 1.000 accuracy on zh vs en (../shared/notes/measured-facts.md); counting
characters rather than letters only moves pairs whose text is mostly digits or symbols.
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
    last_user = (
        pl.col("prompt")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
        .fill_null("")
    )
    head = pl.concat_str(
        [last_user.str.slice(0, _HEAD), pl.col("chosen").fill_null("").str.slice(0, _HEAD)], separator="\n"
    )
    # CJK characters are 3 bytes in UTF-8 and ASCII 1, so (bytes - chars) / 2 counts them without a regex pass per
    # character (a Unicode-class count_matches cost 35 µs per pair); a few accented letters or emoji barely move it.
    chars = head.str.len_chars()
    wide = (head.str.len_bytes() - chars) / 2
    return pl.when((chars > 0) & (wide >= CJK_SHARE * chars)).then(pl.lit("zh")).otherwise(pl.lit("en"))


def bias(
    df: pl.DataFrame, chosen_len: str = "__clen", rejected_len: str = "__rlen", lang: str = "__lang"
) -> dict[str, Any]:
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
