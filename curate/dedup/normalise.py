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
    unicode_form: str = "NFKC",
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
