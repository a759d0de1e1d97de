"""Language and script identification for Chinese/English preference data, as Polars expressions.

Why not a statistical detector first: langdetect reads Traditional Chinese as Korean and code-mixed text as
Catalan (../shared/notes/measured-facts.md), and any per-text Python detector is far too slow for the
20,000 pairs/s target. Chinese vs English is a question of *script*, so it is answered by counting characters with
Polars regexes (vectorised, multi-threaded); a statistical detector (lingua) is asked only about Latin-script text
that a cheap English heuristic can't settle.

How a text is labelled (`zh-Hans`, `zh-Hant`, `en`, `mixed`, `other`):

1. Only the first `max_chars` characters are read (the whole text when nothing is left of that prefix after
   step 1's removals, e.g. a reply that opens with a long code block). Fenced and inline code, URLs, e-mail
   addresses, LaTeX math, HTML tags, code-looking lines (`import x`, `def f(`, ...) and identifiers
   (`pd.read_csv`, `snake_case`) are removed, so code inside a Chinese answer doesn't make it English.
2. Units are counted: each Han character (weighted `han_weight` ≈ 1/1.5, as a Chinese word is ~1.5
   characters, so the share is roughly a share of words), each kana / Hangul character, each run of Latin
   letters (a word) and each run of other letters (Cyrillic, Arabic, ...). A few Chinese names in English
   prose stay a small share; English product names in a Chinese sentence don't make it English.
3. No units left (code only, numbers only, empty) → `other` (method `empty`).
   Kana + Hangul ≥ `kana_min` of the CJK characters → `other` (Japanese or Korean, not Chinese).
   Han share ≥ `zh_min` → Chinese. Han share ≥ `mixed_min` → `mixed` if the text has at least
   `mixed_en_words` English function words (real English sentences, not just terms), else Chinese.
   Below `mixed_min` → not Chinese (step 5).
4. Simplified vs Traditional: characters are checked against two tables built once from OpenCC itself
   (`script_tables`: Simplified-only and Traditional-only characters).
   When one count is more than twice the other the larger wins; neither present → `neutral_script` (the text
   reads the same in both scripts); otherwise the text is converted with OpenCC t2s and s2t (phrase-aware) and
   the conversion that changes fewer characters names the script it already is in (the round trip).
5. Not Chinese: more non-Latin words than Latin words → `other`. Latin text with ≥ `en_word_share` English
   function words ("the", "is", "you", ...) among ≥ 3 words → `en` without a detector; 1–3 ASCII-only words
   ("OK", "Thanks!") → `en` (too short for any detector; English is the prior for ASCII in zh/en data); the rest
   (accented Latin, long text with few English function words) → lingua restricted to `lingua_languages`:
   English → `en`, anything else → `other`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import polars as pl

LABELS = ("zh-Hans", "zh-Hant", "en", "mixed", "other")
ZH_LABELS = ("zh-Hans", "zh-Hant")

# Regexes are Rust-regex syntax (Polars); no look-around there, hence the explicit alternatives.
_NOISE = [
    r"(?s)```.*?```",  # fenced code blocks
    r"(?s)```.*",  # an unclosed fence (or one cut by max_chars) runs to the end
    r"`[^`\n]*`",  # inline code
    r"(?i)(?:https?://|ftp://|www\.)\S+",  # URLs
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+",  # e-mail addresses
    r"(?s)\$\$.*?\$\$",  # display math
    r"\$[^$\n]{1,300}\$",  # inline math
    r"\\\[[^\n]{0,300}?\\\]",  # \[ ... \] and \( ... \) math, one line (a DOTALL scan costs 10x)
    r"\\\([^\n]{0,300}?\\\)",
    r"<[^<>\n]{1,200}>",  # HTML/XML tags
    # Lines that look like code even without fences (common in scraped data): a keyword *with* code syntax, so
    # English lines starting with "from", "let" or "import" stay ("let's start", "from time to time").
    (
        r"(?m)^[ \t]*(?:from [\w.]+ import |import [\w.]+(?: as \w+)?[ \t]*$|"
        r"(?:def|class|function|fn|func) \w+ *[(:{<]|"
        r"(?:let|const|var|val) \w+ *[:=]|print *\(|#include|#!|(?:public|private|protected|static) [^\n]*[({;]|"
        r">>> |\$ |SELECT |INSERT INTO |UPDATE \w+ SET )[^\n]*$"
    ),
    r"(?m)^[^\n\p{Han}]*[;{}]\s*$",
    # identifiers: ASCII words joined by . _ ( [ = : / \ (pd.read_csv(x), snake_case, a=b, 43.2, e.g)
    r"[A-Za-z0-9_]*(?:[A-Za-z0-9][._(\[=:/\\]+[A-Za-z0-9_]+)+[)\]]*",
]
_HAN = r"\p{Han}"
_KANA_HANGUL = r"[\p{Hiragana}\p{Katakana}\p{Hangul}]"
_LATIN_WORD = r"\p{Latin}+"
_OTHER_WORD = r"[\p{L}&&[^\p{Latin}\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]]+"
_NON_ASCII_LATIN = r"[\p{Latin}&&[^A-Za-z]]"
# Frequent English function words: they make up ~30-50% of English prose and almost none of other languages'.
_EN_WORDS = (
    "the a an and or but of to in into on at for with from by about as is are was were be been being it its this that "
    "these those you your i me my we our they their he she his her not no can could will would should do does did "
    "what how which who why when where if there have has had so all any some more than then just"
).split()
# ASCII word boundaries: Unicode \b defeats the regex DFA and is ~8x slower here.
_EN_WORD_RE = r"(?i)(?-u:\b)(?:" + "|".join(_EN_WORDS) + r")(?-u:\b)"

# Code-point ranges OpenCC knows (CJK Unified Ideographs, Ext A, Ext B-F); compatibility ideographs excluded
# because OpenCC normalises them both ways.
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF))


@dataclass(frozen=True)
class Params:
    """Thresholds of the rules above (the language stage's Config carries the same fields)."""

    max_chars: int = 1000
    han_weight: float = 0.67
    zh_min: float = 0.75
    mixed_min: float = 0.15
    mixed_en_words: int = 2
    kana_min: float = 0.1
    en_word_share: float = 0.1
    neutral_script: str = "zh-Hans"
    lingua_languages: tuple[str, ...] = ("en", "fr", "de", "es", "pt", "it", "nl", "id", "vi", "tr", "pl", "sv")
    lingua_high_accuracy: bool = False


@functools.lru_cache(maxsize=1)
def script_tables() -> tuple[str, str]:
    """(Simplified-only, Traditional-only) characters, derived from OpenCC's own character conversions.

    Traditional-only: t2s changes it, s2t keeps it (這, 們, 灣). Simplified-only: t2s keeps it and s2t, s2tw
    and s2hk all change it (这, 们, 湾) — a character one of the Traditional standards keeps (台 in Hong Kong) is
    not evidence of Simplified. Every CJK code point is converted once per config in a single call (joined by
    newlines, which no OpenCC phrase spans); ~0.3 s, cached for the process.
    """
    import opencc

    chars = [chr(c) for lo, hi in _CJK_RANGES for c in range(lo, hi + 1)]
    joined = "\n".join(chars)
    conv = {name: opencc.OpenCC(name).convert(joined).split("\n") for name in ("t2s", "s2t", "s2tw", "s2hk")}
    if any(len(v) != len(chars) for v in conv.values()):  # pragma: no cover - would be an OpenCC change
        raise RuntimeError("OpenCC changed line structure while converting single characters")
    to_simp, to_trad, to_tw, to_hk = conv["t2s"], conv["s2t"], conv["s2tw"], conv["s2hk"]
    simp = "".join(
        c for c, s, t, w, h in zip(chars, to_simp, to_trad, to_tw, to_hk, strict=True)
        if s == c and t != c and w != c and h != c
    )
    trad = "".join(c for c, s, t in zip(chars, to_simp, to_trad, strict=True) if s != c and t == c)
    return simp, trad


def _char_class(chars: str) -> str:
    """A compact regex class for a set of characters (runs of consecutive code points become ranges)."""
    points = sorted({ord(c) for c in chars})
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        parts.append(chr(points[i]) if i == j else f"{chr(points[i])}-{chr(points[j])}")
        i = j + 1
    return "[" + "".join(parts) + "]"


@functools.lru_cache(maxsize=1)
def _script_classes() -> tuple[str, str]:
    simp, trad = script_tables()
    return _char_class(simp), _char_class(trad)


def clean_text_expr(text: pl.Expr, max_chars: int) -> pl.Expr:
    """The part of a text that carries natural language: a prefix with code, URLs, math and tags removed."""
    out = text.fill_null("").str.head(max_chars)
    for pattern in _NOISE:
        out = out.str.replace_all(pattern, " ")
    return out


FEATURES = ("han", "kana", "latin", "otherw", "enw", "accent", "simp", "trad")


def feature_exprs(clean: pl.Expr, prefix: str) -> list[pl.Expr]:
    """Counts the rules work from, one column each (`{prefix}han`, ...), all vectorised regex counts.

    Separate columns rather than one struct: Polars re-evaluates a struct expression for each field read.
    """
    return [
        clean.str.count_matches(_HAN).alias(prefix + "han"),
        clean.str.count_matches(_KANA_HANGUL).alias(prefix + "kana"),
        clean.str.count_matches(_LATIN_WORD).alias(prefix + "latin"),
        clean.str.count_matches(_OTHER_WORD).alias(prefix + "otherw"),
        clean.str.count_matches(_EN_WORD_RE).alias(prefix + "enw"),
        clean.str.contains(_NON_ASCII_LATIN).alias(prefix + "accent"),
    ]


def script_exprs(clean: pl.Expr, prefix: str) -> list[pl.Expr]:
    """Simplified-only / Traditional-only character counts, scanned only in texts that have Han characters
    (the others get an empty string, which costs nothing to scan): ~15% of the stage's time saved on zh/en data."""
    simp_class, trad_class = _script_classes()
    han_only = pl.when(pl.col(prefix + "han") > 0).then(clean).otherwise(pl.lit(""))
    return [
        han_only.str.count_matches(simp_class).alias(prefix + "simp"),
        han_only.str.count_matches(trad_class).alias(prefix + "trad"),
    ]


def units_expr(prefix: str) -> pl.Expr:
    """Han + kana/Hangul characters + words in other scripts (0 = no natural-language text)."""
    return sum(pl.col(prefix + n) for n in ("han", "kana", "latin", "otherw"))  # type: ignore[return-value]


def han_share_expr(prefix: str, han_weight: float) -> pl.Expr:
    """Share of Han in the text, Han characters weighted to word-equivalents (a Chinese word ≈ 1.5 chars)."""
    han = pl.col(prefix + "han") * han_weight
    rest = pl.col(prefix + "kana") + pl.col(prefix + "latin") + pl.col(prefix + "otherw")
    total = han + rest
    return pl.when(total > 0).then(han / total).otherwise(0.0)


# Pre-labels: final labels, or one of these two markers that a second, per-text pass resolves.
NEEDS_LINGUA = "?lingua"
NEEDS_OPENCC = "?opencc"
NEEDS_FULL = "?full"  # nothing left in the first max_chars (a long code block first): read the whole text


def prelabel_expr(prefix: str, p: Params) -> pl.Expr:
    """Label from the counts alone; NEEDS_LINGUA / NEEDS_OPENCC where the counts can't decide."""
    han, kana, latin, otherw, enw, accent, simp, trad = (pl.col(prefix + n) for n in FEATURES)
    units = units_expr(prefix)
    han_share = han_share_expr(prefix, p.han_weight)
    cjk = han + kana
    script = (
        pl.when((simp == 0) & (trad == 0))
        .then(pl.lit(p.neutral_script))
        .when(trad > 2 * simp)
        .then(pl.lit("zh-Hant"))
        .when(simp > 2 * trad)
        .then(pl.lit("zh-Hans"))
        .otherwise(pl.lit(NEEDS_OPENCC))
    )
    return (
        pl.when((units == 0) & pl.col(prefix + "cut"))
        .then(pl.lit(NEEDS_FULL))
        .when(units == 0)
        .then(pl.lit("other"))
        .when((kana >= 2) & (kana >= p.kana_min * cjk))
        .then(pl.lit("other"))
        .when(han_share >= p.zh_min)
        .then(script)
        .when((han_share >= p.mixed_min) & (enw < p.mixed_en_words))
        .then(script)
        .when(han_share >= p.mixed_min)
        .then(pl.lit("mixed"))
        .when(otherw > latin)
        .then(pl.lit("other"))
        .when((latin >= 3) & (enw >= p.en_word_share * latin))
        .then(pl.lit("en"))
        .when((latin <= 3) & ~accent)
        .then(pl.lit("en"))
        .otherwise(pl.lit(NEEDS_LINGUA))
    )


def method_expr(prefix: str, pre: pl.Expr) -> pl.Expr:
    """How the label was reached: script / opencc / lingua / empty / full-text (for lang_detail and the report)."""
    return (
        pl.when(pre == NEEDS_FULL)
        .then(pl.lit("full-text"))
        .when(units_expr(prefix) == 0)
        .then(pl.lit("empty"))
        .when(pre == NEEDS_LINGUA)
        .then(pl.lit("lingua"))
        .when(pre == NEEDS_OPENCC)
        .then(pl.lit("opencc"))
        .otherwise(pl.lit("script"))
    )


@functools.lru_cache(maxsize=4)
def lingua_detector(languages: tuple[str, ...], high_accuracy: bool = False) -> Any:
    """A lingua detector for the given ISO 639-1 codes (English always included); built once per process.

    Low-accuracy mode (trigram models only) by default: it loads in ~0.2 s instead of ~5 s, and the texts that
    reach lingua are long or accented Latin text where it only has to tell English from not-English.
    """
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = {IsoCode639_1.from_str(c) for c in (*languages, "en")}
    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*sorted(codes, key=str))
    return (builder if high_accuracy else builder.with_low_accuracy_mode()).build()


def _lingua_labels(texts: list[str], languages: tuple[str, ...], high_accuracy: bool = False) -> list[str]:
    if not texts:
        return []
    from lingua import Language

    found = lingua_detector(languages, high_accuracy).detect_languages_in_parallel_of(texts)
    return ["en" if lang == Language.ENGLISH else "other" for lang in found]


@functools.lru_cache(maxsize=2)
def _converter(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)


def opencc_script(text: str, neutral: str = "zh-Hans") -> str:
    """Simplified or Traditional by OpenCC round trip: the conversion that changes fewer characters wins."""
    to_simp = _converter("t2s").convert(text)
    to_trad = _converter("s2t").convert(text)
    trad_evidence = sum(a != b for a, b in zip(text, to_simp, strict=False)) + abs(len(text) - len(to_simp))
    simp_evidence = sum(a != b for a, b in zip(text, to_trad, strict=False)) + abs(len(text) - len(to_trad))
    if trad_evidence == simp_evidence:
        return neutral
    return "zh-Hant" if trad_evidence > simp_evidence else "zh-Hans"


def resolve(pre: pl.Series, clean: pl.Series, raw: pl.Series, p: Params) -> pl.Series:
    """Replace the NEEDS_* markers with final labels (lingua / OpenCC / the full text, on those texts only)."""
    pre_list = pre.to_list()
    need = {m: [i for i, v in enumerate(pre_list) if v == m] for m in (NEEDS_LINGUA, NEEDS_OPENCC, NEEDS_FULL)}
    if not any(need.values()):
        return pre
    texts = clean.to_list()
    found = _lingua_labels([texts[i] for i in need[NEEDS_LINGUA]], p.lingua_languages, p.lingua_high_accuracy)
    for i, label in zip(need[NEEDS_LINGUA], found, strict=True):
        pre_list[i] = label
    for i in need[NEEDS_OPENCC]:
        pre_list[i] = opencc_script(texts[i], p.neutral_script)
    if need[NEEDS_FULL]:
        raws = raw.to_list()
        full = [raws[i] for i in need[NEEDS_FULL]]
        longest = max(len(t) for t in full)
        for i, label in zip(need[NEEDS_FULL], detect(full, dataclasses.replace(p, max_chars=longest + 1)), strict=True):
            pre_list[i] = label
    return pl.Series(pre.name, pre_list, dtype=pl.String)


def resolve_expr(pre: pl.Expr, clean: pl.Expr, raw: pl.Expr, p: Params) -> pl.Expr:
    """`resolve` as an element-wise expression, so a LazyFrame stays lazy and streams."""
    return pl.struct(pre.alias("pre"), clean.alias("clean"), raw.alias("raw")).map_batches(
        lambda s: resolve(s.struct.field("pre"), s.struct.field("clean"), s.struct.field("raw"), p),
        return_dtype=pl.String,
        is_elementwise=True,
    )


def annotate(frame: pl.LazyFrame, texts: dict[str, pl.Expr], p: Params = Params()) -> pl.LazyFrame:
    """Add, for each named text expression, `lang_{name}` plus working columns `__{name}_*` (features,
    `__{name}_by` = method); the caller drops the working columns (`working_columns(frame)`) when done."""
    lf = frame.with_columns([e.fill_null("").alias(f"__{n}_raw") for n, e in texts.items()])
    lf = lf.with_columns([clean_text_expr(pl.col(f"__{n}_raw"), p.max_chars).alias(f"__{n}_clean") for n in texts])
    lf = lf.with_columns(
        [f for n in texts for f in feature_exprs(pl.col(f"__{n}_clean"), f"__{n}_")]
        + [(pl.col(f"__{n}_raw").str.len_chars() > p.max_chars).alias(f"__{n}_cut") for n in texts]
    )
    lf = lf.with_columns([f for n in texts for f in script_exprs(pl.col(f"__{n}_clean"), f"__{n}_")])
    lf = lf.with_columns([prelabel_expr(f"__{n}_", p).alias(f"__{n}_pre") for n in texts])
    return lf.with_columns(
        [resolve_expr(pl.col(f"__{n}_pre"), pl.col(f"__{n}_clean"), pl.col(f"__{n}_raw"), p).alias(f"lang_{n}")
         for n in texts]
        + [method_expr(f"__{n}_", pl.col(f"__{n}_pre")).alias(f"__{n}_by") for n in texts]
    )


def working_columns(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("__")]


def detect(texts: list[str | None], p: Params = Params()) -> list[str]:
    """Labels for a list of Python strings (tests, review helpers)."""
    frame = pl.LazyFrame({"text": texts}, schema={"text": pl.String})
    return annotate(frame, {"text": pl.col("text")}, p).collect()["lang_text"].to_list()


def chart_mix(mix: dict[str, Any], labels: tuple[str, ...] = (*LABELS, "mismatch")) -> dict[str, float]:
    """A label → count dict in a fixed label order, zeros included, so report charts colour labels alike."""
    out = {k: float(mix.get(k, 0)) for k in labels}
    out.update({k: float(v) for k, v in mix.items() if k not in out})
    return out


def short_sources(names: list[str]) -> dict[str, str]:
    """Source → display name: the file name when file names are unique, else the full source."""
    from pathlib import PurePath

    base = {n: PurePath(n).name or n for n in names}
    return base if len(set(base.values())) == len(base) else {n: n for n in names}


def family(label: str | None) -> str | None:
    """zh-Hans / zh-Hant → zh; en → en; others → themselves."""
    if label is None:
        return None
    return "zh" if label in ZH_LABELS else label


def explain(text: str, p: Params = Params()) -> dict[str, Any]:
    """The counts, method and label for one text, for debugging a surprising label."""
    frame = pl.LazyFrame({"text": [text]}, schema={"text": pl.String})
    row = annotate(frame, {"t": pl.col("text")}, p).collect().row(0, named=True)
    return {"lang": row["lang_t"], "by": row["__t_by"], **{n: row[f"__t_{n}"] for n in FEATURES},
            "clean": row["__t_clean"]}


__all__ = ["LABELS", "Params", "annotate", "detect", "explain", "family", "opencc_script", "script_tables"]
