"""Is the difference between two similar texts noise (a duplicate) or content (a different question)?

Near-duplicate and semantic methods find pairs that look alike; this module decides whether what differs is
*noise* — a typo, a dropped particle, a swapped function word, an IME homophone — or *content*: another word in a
slot ("capital of Austria" / "Australia", 「英文」/「法文」, "cat" / "dog"), another number, a negation, words in
another order ("Celsius to Fahrenheit" / "Fahrenheit to Celsius"), an added content word ("乙型肝炎" / "肝炎").
A pair whose difference is content is never a duplicate, however similar: that is what keeps templated questions
apart.

How (alignment by rapidfuzz's Levenshtein opcodes on the normalised keys, word lists from wordfreq, pinyin from
pypinyin):
- Chinese (keys with ≥ 30% CJK): character alignment. A changed region is content when it touches a digit or a
  negation (不 没 无 非 别 未), inserts or deletes characters other than a particle (的 了 吗 呢 …) or a doubled
  neighbour (「麻疹」/「荨麻疹」, 「肝炎」/「乙型肝炎」), or substitutes characters that are not homophones (same
  pinyin, tones ignored: the typo an IME makes). By design a random one-character substitution that is not a
  homophone counts as content: lexically it can't be told from 「猫」→「狗」.
- Other text: word alignment. A changed region is content when it touches a digit or a negation, or when every
  word that differs is a dictionary word (wordfreq Zipf ≥ 3) and not a stopword — real words were swapped, added
  or removed. A region with a non-word on one side is a typo (noise) when the two sides are at most 3 character
  edits apart. Regions made only of stopwords ("How do I" / "How can I") are noise.

Why not a bigger model: these rules are cheap (microseconds per pair), deterministic and explainable in a
reject's detail; the semantic model stays the judge of paraphrases with different wording.
"""

from __future__ import annotations

import functools
import re

from curate.dedup.normalise import cjk_share

NEGATIONS_ZH = frozenset("不没无非别未")
NEGATIONS_EN = frozenset({"not", "no", "never", "nor", "none", "nothing", "without", "dont", "doesnt", "didnt",
                          "isnt", "arent", "wasnt", "werent", "cant", "cannot", "wont", "wouldnt", "shouldnt",
                          "couldnt", "hasnt", "havent", "n't"})
# Function words whose swap or removal does not change the question (negations are deliberately absent).
STOPWORDS_EN = frozenset(
    ["a", "an", "the", "this", "that", "these", "those", "is", "are", "was", "were", "be", "been", "being", "am", "do",
     "does", "did", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "i", "me", "my", "you",
     "your", "we", "our", "it", "its", "he", "she", "they", "them", "his", "her", "their", "of", "to", "in", "on", "at",
     "for", "by", "with", "from", "as", "and", "or", "so", "if", "then", "than", "please", "kindly", "just", "also",
     "some", "any", "how", "what", "which", "who", "whom", "whose", "why", "there", "here", "about", "into", "onto",
     "upon", "up", "out", "over", "very", "really", "me"]
)
STOPCHARS_ZH = frozenset("的了吗呢啊吧呀嘛么也都很就还在和与及请问是个着过地得这那")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=1)
def _freq_en() -> dict[str, float]:
    from wordfreq import get_frequency_dict

    return get_frequency_dict("en", wordlist="large")


@functools.lru_cache(maxsize=1)
def _freq_zh() -> dict[str, float]:
    from wordfreq import get_frequency_dict

    return get_frequency_dict("zh", wordlist="large")


def is_word_en(w: str) -> bool:
    return _freq_en().get(w, 0.0) >= 1e-6  # Zipf ≥ 3: about once per million words


def is_word_zh(w: str) -> bool:
    return len(w) >= 2 and _freq_zh().get(w, 0.0) > 0.0


@functools.lru_cache(maxsize=65536)
def _pinyin(ch: str) -> str:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(ch, style=Style.NORMAL)[0]


def _homophones(a: str, b: str) -> bool:
    return len(a) == len(b) and all(x == y or (_pinyin(x) == _pinyin(y) and _is_han(x) and _is_han(y))
                                    for x, y in zip(a, b, strict=True))


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def _regions(a, b):
    """Changed regions (a_start, a_end, b_start, b_end) from Levenshtein opcodes, adjacent changes merged."""
    from rapidfuzz.distance import Levenshtein

    out: list[list[int]] = []
    for op in Levenshtein.opcodes(a, b):
        if op.tag == "equal":
            continue
        i1, i2, j1, j2 = op.src_start, op.src_end, op.dest_start, op.dest_end
        if out and out[-1][1] == i1 and out[-1][3] == j1:
            out[-1][1], out[-1][3] = i2, j2
        else:
            out.append([i1, i2, j1, j2])
    return out


def _noise_stripped(full: str, i1: int, i2: int, x: str) -> tuple[str]:
    """A changed region without the noise the other rules allow one at a time: particles, a character doubled
    (within the region or with its neighbour). Composed noise stays noise: 「的助」→「逐」 is a dropped 的 plus the
    homophone 助→逐."""
    out: list[str] = []
    for k, c in enumerate(x):
        if c in STOPCHARS_ZH or (out and out[-1] == c):
            continue
        if (k == 0 and full[i1 - 1 : i1] == c) or (k == len(x) - 1 and full[i2 : i2 + 1] == c):
            continue
        out.append(c)
    return ("".join(out),)


def _zh_content(a: str, b: str) -> str | None:
    for i1, i2, j1, j2 in _regions(a, b):
        x, y = a[i1:i2], b[j1:j2]
        if _DIGIT.search(x) or _DIGIT.search(y):
            return f"number {x or '∅'}→{y or '∅'}"
        if any(c in NEGATIONS_ZH for c in x + y):
            return f"negation {x or '∅'}→{y or '∅'}"
        if not x or not y:
            s = x or y
            full, at = (b, j1) if not x else (a, i1)
            if len(s) == 1 and (s in STOPCHARS_ZH or full[at - 1 : at] == s or full[at + 1 : at + 2] == s):
                continue  # a particle inserted or dropped, or a character doubled: noise
            if len(s) == 1 or is_word_zh(s) or _has_word_zh(s):
                return f"word {x or '∅'}→{y or '∅'}"
            continue
        if _homophones(x, y) or _homophones(*_noise_stripped(a, i1, i2, x), *_noise_stripped(b, j1, j2, y)):
            continue  # an IME homophone, maybe beside a dropped particle or a doubled character (的助→逐, 你→尼尼)
        if len(x) != len(y) and min(len(x), len(y)) == 0:
            continue
        # A substitution: a different character is a different word unless it merely doubles a neighbour.
        if len(x) + len(y) <= 2 and (y and (a[i1 - 1 : i1] == y or a[i2 : i2 + 1] == y)):
            continue
        if all(c in STOPCHARS_ZH for c in x + y):
            continue
        return f"{x}→{y}"
    return None


def _has_word_zh(s: str) -> bool:
    return any(is_word_zh(s[k : k + n]) for n in (2, 3) for k in range(len(s) - n + 1))


def _en_content(a: str, b: str) -> str | None:
    wa, wb = _WORD.findall(a), _WORD.findall(b)
    for i1, i2, j1, j2 in _regions(wa, wb):
        x, y = wa[i1:i2], wb[j1:j2]
        sx, sy = " ".join(x), " ".join(y)
        if _DIGIT.search(sx) or _DIGIT.search(sy):
            return f"number {sx or '∅'}→{sy or '∅'}"
        if any(w in NEGATIONS_EN for w in x + y):
            return f"negation {sx or '∅'}→{sy or '∅'}"
        if len(x) == len(y) == 1 and (_inflection(x[0], y[0]) or _stopword_typo(x[0], y[0])):
            continue  # ocean / oceans, bake / baked; "of" / "df", "the" / "te"
        diff = [w for w in x if w not in y] + [w for w in y if w not in x]
        content = [w for w in diff if w not in STOPWORDS_EN]
        if not content:
            continue  # function words only
        if all(is_word_en(w) for w in content):
            return f"word {sx or '∅'}→{sy or '∅'}"
        # A non-word is involved: a typo when the two sides are a few character edits apart.
        from rapidfuzz.distance import Levenshtein

        if Levenshtein.distance(sx.replace(" ", ""), sy.replace(" ", "")) > 3:
            return f"{sx or '∅'}→{sy or '∅'}"
    return None


def _inflection(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 3 and short.endswith("e") and long_ == short + "n":
        return True  # give / given, take / taken
    return len(short) >= 3 and long_.startswith(short) and long_[len(short):] in ("s", "es", "ed", "d", "ing")


# Words a mistyped function word must not turn into to count as a typo: they carry content of their own.
NUMBER_WORDS_EN = frozenset("zero one two three four five six seven eight nine ten eleven twelve hundred thousand "
                            "million billion first second third half".split())


def _stopword_typo(a: str, b: str) -> bool:
    """A function word mistyped ("of" → "df", "the" → "te", "what" → "wat", "is" → "s"): one side is a stopword,
    the other is one character edit away and neither a stopword, a negation nor a number word. Short letter strings
    are nearly all in wordfreq's list (Zipf ≥ 3), so the dictionary test alone would call these content."""
    from rapidfuzz.distance import Levenshtein

    if (a in STOPWORDS_EN) == (b in STOPWORDS_EN):
        return False
    other = b if a in STOPWORDS_EN else a
    if other in NEGATIONS_EN or other in NUMBER_WORDS_EN:
        return False
    return Levenshtein.distance(a, b) <= 1


def content_change(a: str, b: str) -> str | None:
    """Why `a` and `b` differ in content (a short phrase for the report), or None when they differ only by noise.

    `a` and `b` are keys in the `words` form (see `words_key`): NFKC, casefolded, Traditional folded to
    Simplified, punctuation replaced by spaces.
    """
    if a == b:
        return None
    if cjk_share(a) >= 0.3 or cjk_share(b) >= 0.3:
        # Chinese: compare without spaces; Latin words inside (Python, TCP) are compared as characters too.
        a, b = a.replace(" ", ""), b.replace(" ", "")
        check = _zh_content
    else:
        check = _en_content
    # Both directions: an edit script is not symmetric (烧伤→伤寒 is one substitution one way, an insertion and
    # a deletion the other), and the pair is content if either reading says so.
    return check(a, b) or check(b, a)


def words_key(text: str) -> str:
    """The form `content_change` compares: NFKC, casefolded, t2s, punctuation → space, whitespace folded."""
    from curate.dedup.normalise import normalise

    return normalise(text, punctuation="space", whitespace="fold")
