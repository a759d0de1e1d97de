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
  homophone counts as content: lexically it can't be told from 「猫」→「狗」. A homophone in a two-character name
  after a common surname (「张伟」/「张维」) is content too.
- Other text: word alignment. A changed region is content when it touches a digit or a negation, or when every
  word that differs is a dictionary word (wordfreq Zipf ≥ 3) and not a stopword — real words were swapped, added
  or removed. A region with a non-word on one side is a typo (noise) when the two sides are at most 3 character
  edits apart. Regions made only of stopwords ("How do I" / "How can I") are noise, unless a pronoun names
  someone else ("he" / "she"; "me" / "Meg").

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
                          "couldnt", "hasnt", "havent", "hadnt", "mustnt", "neednt", "shant", "aint", "mightnt",
                          "n't"})
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
_NUMBER = re.compile(r"\d+")


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
    """The character's usual reading, tones ignored. Not every reading: 癌 has an old reading yán, and 胃癌 / 胃炎
    are different diseases (measured: all readings merged 67 distinct calibration pairs)."""
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(ch, style=Style.NORMAL)[0]


def _homophone(x: str, y: str) -> bool:
    return _is_han(x) and _is_han(y) and _pinyin(x) == _pinyin(y)


def _homophones(a: str, b: str) -> bool:
    return len(a) == len(b) and all(x == y or _homophone(x, y) for x, y in zip(a, b, strict=True))


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
        if any(c in NEGATIONS_ZH for c in x + y) and not _mistyped_negation_zh(a, i1, x, b, j1, y):
            return f"negation {x or '∅'}→{y or '∅'}"
        if not x or not y:
            s = x or y
            full, at = (b, j1) if not x else (a, i1)
            if _inserted_noise(full, at, at + len(s), s):
                continue  # particles inserted or dropped, characters doubled (写出 → 写写出出), a stutter (用 → 佣用)
            if len(s) == 1 or is_word_zh(s) or _has_word_zh(s):
                return f"word {x or '∅'}→{y or '∅'}"
            continue
        if _homophones(x, y) and (w := _homophone_word(a, i1, x, b, j1, y)):
            return f"homophone word {w}"
        if _homophones(x, y) and (w := _name_change(a, i1, x, b, j1, y)):
            return f"name {w}"
        sx, sy = _noise_stripped(a, i1, i2, x)[0], _noise_stripped(b, j1, j2, y)[0]
        if len(sx) == len(sy) == 1 and _homophones(sx, sy):
            sa, sb = a[:i1] + sx + a[i2:], b[:j1] + sy + b[j2:]
            if w := _homophone_word(sa, i1, sx, sb, j1, sy):
                return f"homophone word {w}"  # 反应 / 反映映的的: the doubling and particles stripped, still 反映
            if w := _name_change(sa, i1, sx, sb, j1, sy):
                return f"name {w}"  # 张伟 / 张维维
        if _homophones(x, y) or _homophones(sx, sy) or _homophones(x, sy) or _homophones(sx, y):
            continue  # an IME homophone, maybe beside a dropped particle or a doubled character (的助→逐, 你→尼尼,
            # 个→啊阁: the particle is the noise, not the 个 it sits beside)
        if len(x) != len(y) and min(len(x), len(y)) == 0:
            continue
        # A substitution: a different character is a different word unless it merely doubles a neighbour.
        if len(x) + len(y) <= 2 and (y and (a[i1 - 1 : i1] == y or a[i2 : i2 + 1] == y)):
            continue
        if all(c in STOPCHARS_ZH for c in x + y):
            continue
        return f"{x}→{y}"
    return None


def _homophone_word(a: str, i1: int, x: str, b: str, j1: int, y: str) -> str | None:
    """A homophone that makes a common word with the same neighbour on both sides: 「权利」/「权力」, 「反应」/「反映」,
    「必须」/「必需」 are different words an IME offers side by side, so the choice is content, not a typo. Common:
    Zipf ≥ 3 (once per million words) on both sides — wordfreq's Chinese list also holds rare segmentation pieces
    (「视场」, 「启东」) that a random typo often makes."""
    for k, (cx, cy) in enumerate(zip(x, y, strict=True)):
        if cx == cy:
            continue
        lx, ly = a[i1 + k - 1 : i1 + k] if i1 + k else "", b[j1 + k - 1 : j1 + k] if j1 + k else ""
        if lx and lx == ly and _different_words(lx + cx, ly + cy):
            return f"{lx}{cx}→{ly}{cy}"
        rx, ry = a[i1 + k + 1 : i1 + k + 2], b[j1 + k + 1 : j1 + k + 2]
        if rx and rx == ry and _different_words(cx + rx, cy + ry):
            return f"{cx}{rx}→{cy}{ry}"
    return None


# The commonest Chinese surnames (about 85% of people). A homophone after one, or of one, changes a name
# when neither side is a common word: 「张伟」/「张维」, 「王芳」/「汪芳」 are different people; 「许多」 is a word.
SURNAMES_ZH = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
                        "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛"
                        "郝龚邵万钱严覃武戴莫孔向汤")


def _name_change(a: str, i1: int, x: str, b: str, j1: int, y: str) -> str | None:
    """A homophone inside a two-character name: the character after the same surname on both sides (「张伟」 /
    「张维」), or the surname itself before the same given name (「王芳」 / 「汪芳」), neither side a common word
    (Zipf ≥ 3: 「许多」, 「周末」 are words, and a typo in them is a typo). Lexically an IME typo, but a user's
    data asks about people by name; when in doubt, the row stays. A name that is itself a common word
    (「李娜」) is not told from a typo."""
    if len(x) != 1 or len(y) != 1 or x in STOPCHARS_ZH or y in STOPCHARS_ZH:
        return None
    left_a, left_b = a[i1 - 1 : i1], b[j1 - 1 : j1]
    if left_a and left_a == left_b and left_a in SURNAMES_ZH and not _ends_word(a, i1 - 1) \
            and not _ends_word(b, j1 - 1) \
            and not _common_zh(left_a + x) and not _common_zh(left_b + y):
        return f"{left_a}{x}→{left_b}{y}"
    right_a, right_b = a[i1 + 1 : i1 + 2], b[j1 + 1 : j1 + 2]
    if x in SURNAMES_ZH and y in SURNAMES_ZH and right_a and right_a == right_b and _is_han(right_a) \
            and not _ends_word(a, i1) and not _ends_word(b, j1) \
            and not _common_zh(x + right_a) and not _common_zh(y + right_b):
        return f"{x}{right_a}→{y}{right_b}"
    return None


def _ends_word(s: str, k: int) -> bool:
    """Does a common word of two or three characters end at s[k]? Then s[k] is no surname starting a name: the
    何 of 「如何」, the 毛 of 「眉毛」, the 于 of 「位于」."""
    return any(k - n + 1 >= 0 and _common_zh(s[k - n + 1 : k + 1]) for n in (2, 3))


# Variant spellings of one word (异形词: 「甚么」 is 「什么」), common in real text; the homophone-word rule must not
# call them different words. Hand-written from the common pairs of the 第一批异形词整理表 (no offline library
# ships the table); a variant missing here only keeps a duplicate.
VARIANTS_ZH = {"甚么": "什么", "其它": "其他", "惟一": "唯一", "帐号": "账号", "帐户": "账户", "好象": "好像",
               "作法": "做法", "象样": "像样", "图象": "图像", "想像": "想象", "週年": "周年",
               "那末": "那么", "这末": "这么", "计画": "计划", "部份": "部分", "成份": "成分"}


def _different_words(w1: str, w2: str) -> bool:
    return _common_zh(w1) and _common_zh(w2) and VARIANTS_ZH.get(w1, w1) != VARIANTS_ZH.get(w2, w2)


def _common_zh(w: str) -> bool:
    return _freq_zh().get(w, 0.0) >= 1e-6


def _mistyped_negation_zh(a: str, i1: int, x: str, b: str, j1: int, y: str) -> bool:
    """A negation swapped for a homophone that makes no word with its neighbours — 「不是」 typed as 「步是」, 「无法」
    as 「物法」: the same negation, mistyped (「不会」 / 「部会」 is a word: content)."""
    if len(x) != 1 or len(y) != 1 or (x in NEGATIONS_ZH) == (y in NEGATIONS_ZH) or not _homophone(x, y):
        return False
    typed, at, full = (y, j1, b) if x in NEGATIONS_ZH else (x, i1, a)
    return not (is_word_zh(full[at - 1 : at] + typed) or is_word_zh(typed + full[at + 1 : at + 2]))


def _inserted_noise(full: str, i1: int, i2: int, s: str) -> bool:
    """Is the text `s` = full[i1:i2], present on one side only, noise? Particles and characters doubling a
    neighbour (「写出」 in 「写写出出」), or one Han character that sounds like its neighbour without making a word
    with it — a stutter on the IME, 「怎么颁办」 for 「怎么办」 (「事实」 in 「这是事实吗」 / 「这是事吗」 is a word:
    content)."""
    rest = _noise_stripped(full, i1, i2, s)[0]
    if not rest:
        return True
    if len(s) != 1 or not _is_han(s):
        return False
    for left, right in ((full[i1 - 1 : i1], s), (s, full[i2 : i2 + 1])):
        near = left if right == s else right
        if near and _homophone(s, near) and not is_word_zh(left + right):
            return True
    return False


def _has_word_zh(s: str) -> bool:
    return any(is_word_zh(s[k : k + n]) for n in (2, 3) for k in range(len(s) - n + 1))


PARTICLES_ZH = frozenset("的了吗呢吧啊呀嘛")


def cjk_noise_free(key: str) -> str:
    """A Chinese key without the edits that can't make another word: particles (的 了 吗 呢 吧 啊 呀 嘛) dropped and
    each run of one character cut to one — 「怎么么办办了」 → 「怎么办」. The near pass's edit-similarity floor counts
    only the edits left between two such keys: three of these in a 9-character question are still one question,
    while a substitution (a homophone in a name, 张伟 / 张维) counts in full."""
    out: list[str] = []
    for c in key:
        if c in PARTICLES_ZH or (out and out[-1] == c):
            continue
        out.append(c)
    return "".join(out)


SHORT_ZH = 6  # characters besides particles and doubling, below which a particle is part of the question


def _short_particles(a: str, b: str) -> str | None:
    """In a question of a few characters a particle is much of what it asks: 「他走了吗」 (has he left?) is not
    「他走吗」 (is he going?), nor 「你好吗」 「你好」. Particles are noise only from SHORT_ZH characters besides
    them."""
    if min(len(cjk_noise_free(a)), len(cjk_noise_free(b))) >= SHORT_ZH:
        return None
    pa, pb = set(a) & PARTICLES_ZH, set(b) & PARTICLES_ZH
    if pa == pb:
        return None
    return f"particle {''.join(sorted(pa)) or '∅'}→{''.join(sorted(pb)) or '∅'} in a short question"


def _words_en(s: str) -> list[str]:
    """Words of an English key, the negative contraction put back together: the key has "shouldn t" for
    "shouldn't" (punctuation became a space), which is the negation "shouldnt", not the word "shouldn" and a "t"."""
    out: list[str] = []
    for w in _WORD.findall(s):
        if w == "t" and out and out[-1].endswith("n"):
            out[-1] += "t"
        else:
            out.append(w)
    return out


def _mistyped_negation(w: str) -> bool:
    """ "nozt", "canmnot", "nno" (a non-word of three letters or more, one edit from a negation), "didn" ("didn't"
    with its t lost; not "can", a stopword)."""
    from rapidfuzz.distance import OSA

    if w.endswith("n") and w + "t" in NEGATIONS_EN and w not in STOPWORDS_EN:
        return True
    return len(w) >= 3 and not is_word_en(w) and any(OSA.distance(w, g) <= 1 for g in NEGATIONS_EN if len(g) >= 2)


def _negated_form(x: list[str], y: list[str]) -> bool:
    """Is a word of `y` a mistyped negative form of a word of `x`? "shoulxdnt" is one edit from "shouldnt", which
    starts with "should"; "cazt" is one edit from "cant", which doesn't start with "cat" (a typo of "cat"); "cann"
    is as near "can" as "cant" (a typo of "can")."""
    from rapidfuzz.distance import OSA

    for w in y:
        if w in NEGATIONS_EN or not _mistyped_negation(w):
            continue
        for g in NEGATIONS_EN:
            d = OSA.distance(w, g)
            if d <= 1 and any(len(v) >= 2 and v != g and g.startswith(v) and d < OSA.distance(w, v) for v in x):
                return True  # nearer the negation than the word itself: "cann" is as near "can" as "cant"
    return False


def _negation_changed(x: list[str], y: list[str]) -> bool:
    """Do the two sides of a region hold a different number of negations? A mistyped negation on the side with
    fewer counts as one ("not" / "nozt"); a region with as many on each side is still judged word by word."""
    nx, ny = sum(w in NEGATIONS_EN for w in x), sum(w in NEGATIONS_EN for w in y)
    if nx == ny:
        # As many negations each side, but one side has the negative form of the other's word, mistyped:
        # "should" / "shoulxdn't" (one edit from "shouldnt", which is "should" negated).
        return _negated_form(x, y) or _negated_form(y, x)
    fewer, more = (x, nx) if nx < ny else (y, ny)
    return more + sum(w not in NEGATIONS_EN and _mistyped_negation(w) for w in fewer) != max(nx, ny)


def _typo(sx: str, sy: str, words: bool) -> bool:
    """Are two word strings a few keystrokes apart? A transposition is one edit ("teh" / "the").
    - One side has a dictionary word (the word meant): one edit; two from 5 letters, three from 8 ("qvode" for
      "code", "decrb" for "describe"), unless the non-word is one edit from another word, which it may as well
      be a typo of: "wbord" is two edits from "world" but one from "word", "moosr" one from "moose".
    - Neither has (names, acronyms, identifiers, a run of another script): one edit per four letters, none under
      five letters, at most 3.
    - 3 letters or fewer: one edit, and only from a common word (Zipf ≥ 4) to a rare string (Zipf < 2.5), "off" /
      "ogf". Short strings are names more often than typos: "tcp" / "udp", "rsa" / "dsa", "xyz" / "abc" are
      different things (function words have their own rule)."""
    from rapidfuzz.distance import OSA

    x, y = sx.replace(" ", ""), sy.replace(" ", "")
    n = max(len(x), len(y))
    d = OSA.distance(x, y)
    if n <= 3:
        zx, zy = _zipf_en(x), _zipf_en(y)
        return d <= 1 and max(zx, zy) >= 4.0 and min(zx, zy) < 2.5
    if not words:
        return d <= (0 if n < 5 else min(3, max(1, (n + 1) // 4)))
    if d <= 1:
        return True
    if d > 3 or n < (5 if d == 2 else 8):
        return False
    # Two or three edits: a typo only if the non-word is not one edit from some other word, which it may as well
    # be a typo of ("wbord": one edit from "word", two from "world").
    meant = set(sx.split()) | set(sy.split())
    # A word one edit away competes only if it is about as common as the word meant, or commoner (a noisy channel:
    # one edit is likelier than two, by about what one Zipf unit of frequency is worth): "convtex" is one edit
    # from "convex" (Zipf 3.3) and two from "context" (4.6), and is a typo of "context".
    # One word each side only: in a region of several words the word meant is not known ("isdsa encyption" / "is
    # rsa encryption": "is" is no measure of what "isdsa" stands for).
    one = len(meant) == 2 and " " not in sx + sy
    prior = max((_zipf_en(m) for m in meant if is_word_en(m)), default=0.0) - 1.0 if one else 0.0
    for w in sx.split() + sy.split():
        if not is_word_en(w):
            other = {o for o in _one_edit_words(w) - meant
                     if not any(_inflection(o, m) for m in meant) and _zipf_en(o) >= prior}
            if other:  # "feaure" is one edit from "feature", which is "features" inflected: not another word
                return False
    return True


@functools.lru_cache(maxsize=4096)
def _one_edit_words(w: str) -> frozenset[str]:
    """Dictionary words one edit (delete, transpose, replace, insert a–z) from `w`."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(w[:k], w[k:]) for k in range(len(w) + 1)]
    cands = {a + b[1:] for a, b in splits if b}
    cands |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    cands |= {a + c + b[1:] for a, b in splits if b for c in letters}
    cands |= {a + c + b for a, b in splits for c in letters}
    cands.discard(w)
    return frozenset(c for c in cands if is_word_en(c))


def _zipf_en(w: str) -> float:
    import math

    f = _freq_en().get(w, 0.0)
    return math.log10(f * 1e9) if f > 0 else 0.0


def _en_content(a: str, b: str) -> str | None:
    wa, wb = _words_en(a), _words_en(b)
    regions: list[tuple[list[str], list[str]]] = []
    for i1, i2, j1, j2 in _regions(wa, wb):
        x, y = wa[i1:i2], wb[j1:j2]
        if len(x) == len(y) > 1:
            # Word for word: a real word changed beside a typo ("iran nuclear" / "iraq nucllear") is content.
            regions.extend(([u], [v]) for u, v in zip(x, y, strict=True) if u != v)
        else:
            regions.append((x, y))
    for x, y in regions:
        sx, sy = " ".join(x), " ".join(y)
        if _NUMBER.findall(sx) != _NUMBER.findall(sy):  # "40°C" / "400°C"; the same 40 beside a typo is no change
            return f"number {sx or '∅'}→{sy or '∅'}"
        if _negation_changed(x, y):
            return f"negation {sx or '∅'}→{sy or '∅'}"
        if len(x) == len(y) == 1 and (_inflection(x[0], y[0]) or _stopword_typo(x[0], y[0])
                                      or _lost_t(x[0], y[0])):
            continue  # ocean / oceans, bake / baked; "of" / "df", "the" / "te"; "didn't" / "didn'"
        if any(_is_han(c) for c in sx + sy):
            # Chinese inside English text (a quoted sentence, a translation task): Chinese rules for the region.
            why = _zh_content(sx.replace(" ", ""), sy.replace(" ", "")) or _zh_content(sy.replace(" ", ""),
                                                                                       sx.replace(" ", ""))
            if why is not None:
                return why
            continue
        diff = [w for w in x if w not in y] + [w for w in y if w not in x]
        if (who := _person_changed(x, y)) is not None:
            return who
        content = [w for w in diff if w not in STOPWORDS_EN]
        if not content:
            continue  # function words only
        if all(is_word_en(w) for w in content):
            return f"word {sx or '∅'}→{sy or '∅'}"
        # A non-word is involved: a typo when the two sides are a few character edits apart.
        if not _typo(sx, sy, any(w in STOPWORDS_EN or is_word_en(w) for w in diff)):
            return f"{sx or '∅'}→{sy or '∅'}"
    return None


def _lost_t(a: str, b: str) -> bool:
    """A negative contraction that lost its t ("didn'" for "didn't"): the same negation."""
    short, long_ = sorted((a, b), key=len)
    return long_ == short + "t" and long_ in NEGATIONS_EN


def _inflection(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 3 and short.endswith("e") and long_ == short + "n":
        return True  # give / given, take / taken
    return len(short) >= 3 and long_.startswith(short) and long_[len(short):] in ("s", "es", "ed", "d", "ing")


# Words a mistyped function word must not turn into to count as a typo: they carry content of their own.
NUMBER_WORDS_EN = frozenset("zero one two three four five six seven eight nine ten eleven twelve hundred thousand "
                            "million billion first second third half".split())


# Pronouns fill a noun's slot: one changed into another common word names someone else ("a poem for me" / "… for
# men", "for her" / "for hen"), unlike a mistyped preposition or article ("picture off the sea").
PRONOUNS_EN = frozenset("i me my you your he him his she her it its we us our they them their".split())


# Who a pronoun names: person, number and gender. A change between these is someone else ("Is he a doctor?" /
# "Is she a doctor?", "your book" / "their book"); a change within one is a case or a typo ("me" / "my").
PERSON_EN = {**dict.fromkeys(("i", "me", "my", "mine", "myself"), "1s"), **dict.fromkeys(("we", "us", "our"), "1p"),
             **dict.fromkeys(("you", "your", "yours"), "2"), **dict.fromkeys(("he", "him", "his"), "3m"),
             **dict.fromkeys(("she", "her", "hers"), "3f"), **dict.fromkeys(("it", "its"), "3n"),
             **dict.fromkeys(("they", "them", "their"), "3p")}


def _person_changed(x: list[str], y: list[str]) -> str | None:
    """A pronoun replaced by one that names someone else: both sides of the region hold pronouns, of different
    persons ("he" / "she", "I" / "you", "our" / "their"). Swapping function words is noise ("How do I" / "How can
    I"); swapping whom the question is about is not, though both are in STOPWORDS_EN."""
    px, py = [w for w in x if w in PERSON_EN], [w for w in y if w in PERSON_EN]
    if not px or not py:
        return None
    if sorted(PERSON_EN[w] for w in px) == sorted(PERSON_EN[w] for w in py):
        return None
    return f"pronoun {' '.join(px)}→{' '.join(py)}"


def _stopword_typo(a: str, b: str) -> bool:
    """A function word mistyped ("of" → "df", "the" → "te" or "teh", "what" → "wat", "is" → "s"): one side is a
    stopword, the other is one character edit away and neither a stopword, a negation nor a number word. Short
    letter strings are nearly all in wordfreq's list (Zipf ≥ 3), so the dictionary test alone would call these
    content. Two edits when the other side is no word at all ("of" → "ovk", "and" → "anwr", "what" → "hact", "how" →
    "h"): a function word's slot holds no name or term that a non-word could be. A pronoun changed into a word of
    three letters or more (Zipf ≥ 3) is content: a pronoun stands for a person, and one edit makes a name of it as
    often as a typo ("help me" / "help Meg", "about you" / "about Lou"; the keys are casefolded, so the capital that
    marks a name is gone). Into two letters only a common word (Zipf ≥ 4: "me" / "mi"): nearly every two-letter
    string is in wordfreq's list at Zipf 3–4 ("ou", "yu", "ci", "hs"), and those are the typos of "you", "I",
    "his". Into a non-word or a lone letter it is a typo ("it" / "iy", "my" / "m"). A rare or two-letter name is
    lexically such a typo ("her" / "Hera", Zipf 2.97; "he" / "Hu") and is not told apart."""
    from rapidfuzz.distance import OSA

    if (a in STOPWORDS_EN) == (b in STOPWORDS_EN):
        return False
    stop, other = (a, b) if a in STOPWORDS_EN else (b, a)
    if other in NEGATIONS_EN or other in NUMBER_WORDS_EN or _mistyped_negation(other):  # "did" / "didn"
        return False
    d = OSA.distance(a, b)  # a transposition is one edit: "teh" / "the"
    if d == 2 and len(stop) >= 2 and (not is_word_en(other) if len(other) >= 2 else other not in ("a", "i")):
        return True  # "of" → "ovk", "how" → "h" (a letter is in wordfreq's list, but is no word in a sentence)
    name = len(other) >= 2 and _zipf_en(other) >= (3.0 if len(other) >= 3 else 4.0)
    return d <= 1 and not (stop in PRONOUNS_EN and name)


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
        if (why := _short_particles(a, b)) is not None:
            return why
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
