"""Text normalisation for duplicate keys, so trivially different copies of one text collide.

Steps, in order (each documented on `curate.stages.dedup.NormaliseConfig`):
1. Unicode NFKC: folds full-width Latin letters, digits and most full-width punctuation (，：？！（）) to ASCII and
   composes accents, so width variants of one text compare equal.
2. CJK punctuation that NFKC leaves alone (。、「」『』《》“”‘’ …) is mapped to its ASCII counterpart.
3. Optional Traditional → Simplified conversion with OpenCC (`t2s`), so the two scripts of one Chinese text collide.
4. Optional case folding.
5. Optional removal of leading instruction prefixes ("Question: ", "Please answer: ", 「请回答：」, 「请问」), which
   don't change the question (`strip_prefixes`).
6. Punctuation and whitespace: folded (one space) or stripped (removed) — stripping makes "Hello , world!" and
   "hello world" the same key.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import polars as pl

# Punctuation NFKC does not fold: CJK full stops, brackets and curly quotes.
_CJK_PUNCT = str.maketrans(
    {
        "。": ".", "、": ",", "｡": ".", "､": ",",
        "「": '"', "」": '"', "『": '"', "』": '"', "《": '"', "》": '"', "〈": '"', "〉": '"',
        "“": '"', "”": '"', "‘": "'", "’": "'", "【": "[", "】": "]", "〔": "(", "〕": ")",
        "…": "...", "—": "-", "–": "-", "～": "~", "·": ".",
    }
)
_WS = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


# Unicode punctuation (category P*) only: symbols such as '+', '=', '<', '>' (Sm) are kept because they change the
# meaning of code and maths. The stdlib `re` has no \p{P}, hence the per-character category check (cached).
@functools.lru_cache(maxsize=65536)
def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def strip_punct(text: str, repl: str = "") -> str:
    return "".join(repl if _is_punct(ch) else ch for ch in text)


# Instruction prefixes that do not change the question ("Question: …", "请回答：…"); removed from the start of a key
# when `strip_prefixes` is on. Each needs its delimiter (":", "：", "." …) except 请问, which Chinese writes bare.
_PREFIX = re.compile(
    r"^\s*(?:(?:please\s+)?answer(?:\s+the\s+following(?:\s+question)?)?|question|q|"
    r"请回答(?:下面|以下|下列)?(?:的)?(?:问题)?|回答(?:下面|以下)(?:的)?问题|问题)\s*[:：.。,，]\s*|^\s*请问\s*[:：,，]?\s*",
    re.IGNORECASE,
)


def strip_prefix(text: str) -> str:
    """Remove leading instruction prefixes (repeatedly: "Question: Please answer: …")."""
    for _ in range(3):
        new = _PREFIX.sub("", text, count=1)
        if new == text or not new.strip():
            break
        text = new
    return text


def normalise(
    text: str | None,
    *,
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC",
    t2s: bool = True,
    casefold: bool = True,
    punctuation: str = "strip",
    whitespace: str = "strip",
    strip_prefixes: bool = True,
) -> str:
    """One text → its duplicate key text (see the module docstring for the steps)."""
    if not text:
        return ""
    out = unicodedata.normalize(unicode_form, text).translate(_CJK_PUNCT)
    if strip_prefixes:
        out = strip_prefix(out)
    if t2s:
        out = _t2s().convert(out)
    if casefold:
        out = out.casefold()
    if punctuation == "strip":
        out = strip_punct(out)
    elif punctuation == "space":
        out = strip_punct(out, " ")
    if whitespace == "strip":
        out = _WS.sub("", out)
    else:
        out = _WS.sub(" ", out).strip()
    return out


def normalise_many(texts: Iterable[str | None], **options) -> list[str]:
    return [normalise(t, **options) for t in texts]


def light(text: str | None) -> str:
    """The normalisation for embedding inputs: NFC + whitespace folded (models see case and punctuation)."""
    if not text:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def cjk_share(text: str) -> float:
    """Share of CJK ideographs among the letters/ideographs of `text` (0 for empty text)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    cjk = sum(1 for c in letters if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" or "\uf900" <= c <= "\ufaff")
    return cjk / len(letters)


def embedding_input(text: str | None, *, t2s: bool = True) -> str:
    """What a model embeds: `light` text, with Traditional folded to Simplified (OpenCC t2s) when `t2s` is on.

    Why fold: USE-multilingual-v3 puts one sentence in its two scripts at cosine ~0.77 — below any safe
    threshold — so without folding a Traditional copy of a Simplified prompt looks like a different question.
    """
    out = light(text)
    if t2s and out and any("\u4e00" <= c <= "\u9fff" for c in out):
        out = _t2s().convert(out)
    return out


# ------------------------------------------------------------------------------------------- vectorised (Polars)
# The same keys as `normalise`, for a whole column at once: Polars string expressions (Rust) instead of a Python
# call per text. Character classes come from curate/dedup/unitables.py (this Python's own Unicode tables), so the
# two agree character for character; the one difference is NFKC itself, which Polars takes from a newer Unicode
# version: code points unassigned in Python 3.11's Unicode 14 may fold differently (tests/test_dedup_keys.py).


def _esc(point: int) -> str:
    return f"\\x{{{point:x}}}"


def _cls(ranges: tuple[tuple[int, int], ...]) -> str:
    """A Rust-regex character class for exactly these code point ranges."""
    return "[" + "".join(_esc(a) if a == b else f"{_esc(a)}-{_esc(b)}" for a, b in ranges) + "]"


@functools.lru_cache(maxsize=1)
def _classes() -> dict[str, Any]:
    from curate.dedup import unitables as u

    return {
        "punct": _cls(u.PUNCT), "space": _cls(u.SPACE), "alpha": _cls(u.ALPHA),
        "space_chars": "".join(chr(c) for a, b in u.SPACE for c in range(a, b + 1)),
        "fold_from": [chr(c) for c in u.CASEFOLD], "fold_to": list(u.CASEFOLD.values()),
        "cjk_from": list(_CJK_PUNCT_STR), "cjk_to": list(_CJK_PUNCT_STR.values()),
        # the ideographs cjk_share counts: its three ranges, only where str.isalpha (assigned) holds
        "cjk_alpha": _cls(tuple((max(a, lo), min(b, hi)) for a, b in u.ALPHA for lo, hi in _CJK_RANGES
                                if max(a, lo) <= min(b, hi))),
    }


_CJK_PUNCT_STR = {chr(k): v for k, v in _CJK_PUNCT.items()}
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
T2S_MAY_CHANGE = r"[\x{2e80}-\x{10ffff}]"  # CJK radicals and everything above them
_T2S_SEP = "\ue000"  # private use: OpenCC's dictionaries hold no phrase across it
_T2S_CHUNK = 20_000


def _t2s_series(s: pl.Series) -> pl.Series:
    """OpenCC t2s over a column: one call per 20k texts joined by a private-use character (row by row when a text
    holds that character itself); only texts with a character in the CJK ranges go to OpenCC."""
    conv = _t2s()
    frame = pl.DataFrame({"t": s})
    # OpenCC changes no character below U+2E80 (tests/test_dedup_keys.py checks every code point): texts without
    # one pass through as they are.
    has = frame.select(pl.col("t").str.contains(T2S_MAY_CHANGE))["t"]
    idx = np.flatnonzero(has.fill_null(False).to_numpy())
    if not len(idx):
        return s
    todo = s.gather(idx).to_list()
    if any(_T2S_SEP in t for t in todo):
        done = [conv.convert(t) for t in todo]
    else:
        done = []
        for k in range(0, len(todo), _T2S_CHUNK):
            chunk = todo[k : k + _T2S_CHUNK]
            res = conv.convert(_T2S_SEP.join(chunk)).split(_T2S_SEP)
            if len(res) != len(chunk):  # cannot happen with a separator no text holds; row by row if it did
                res = [conv.convert(t) for t in chunk]
            done.extend(res)
    return frame.with_row_index("__i").join(
        pl.DataFrame({"__i": pl.Series(idx, dtype=pl.UInt32), "__t": pl.Series(done, dtype=pl.String)}),
        on="__i", how="left", maintain_order="left",
    ).select(pl.coalesce("__t", "t").alias(s.name))[s.name]


def normalise_series(
    s: pl.Series,
    *,
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC",
    t2s: bool = True,
    casefold: bool = True,
    punctuation: str = "strip",
    whitespace: str = "strip",
    strip_prefixes: bool = True,
) -> pl.Series:
    """`normalise` over a whole column (nulls → ""), as Polars expressions; returns a String Series."""
    c = _classes()
    name = s.name
    frame = pl.DataFrame({"t": s.cast(pl.String)})
    e = pl.col("t").fill_null("").str.normalize(unicode_form).str.replace_many(c["cjk_from"], c["cjk_to"])
    if strip_prefixes:  # strip_prefix: up to three leading instruction prefixes, never down to an empty key
        pat = "(?i)" + _PREFIX.pattern.replace(r"\s", c["space"])
        for _ in range(3):
            new = e.str.replace(pat, "")
            e = pl.when(new.str.replace_all(c["space"], "") != "").then(new).otherwise(e)
    out = frame.select(e.alias("t"))["t"]
    if t2s:
        out = _t2s_series(out)
    e = pl.col("t")
    if casefold:
        e = e.str.replace_many(c["fold_from"], c["fold_to"])
    if punctuation == "strip":
        e = e.str.replace_all(c["punct"], "")
    elif punctuation == "space":
        e = e.str.replace_all(c["punct"], " ")
    if whitespace == "strip":
        e = e.str.replace_all(c["space"] + "+", "")
    else:
        e = e.str.replace_all(c["space"] + "+", " ").str.strip_chars(c["space_chars"])
    return pl.DataFrame({"t": out}).select(e.alias(name or "t"))[name or "t"]


def cjk_share_expr(e: pl.Expr) -> pl.Expr:
    """`cjk_share` as a Polars expression (0.0 for a text without letters)."""
    letters = e.str.count_matches(_classes()["alpha"]).cast(pl.Float64)
    cjk = e.str.count_matches(_classes()["cjk_alpha"]).cast(pl.Float64)
    return pl.when(letters > 0).then(cjk / letters).otherwise(0.0)
