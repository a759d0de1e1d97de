"""Vectorised dedup keys and flat MinHash LSH (curate/dedup/normalise.py, minhash.py) against their references:
the per-text `normalise`, Python's own Unicode tables, OpenCC per text, and exact n-gram Jaccard by brute force."""

from __future__ import annotations

import itertools
import random
import unicodedata

import numpy as np
import polars as pl
import pytest

from curate.dedup import minhash, unitables
from curate.dedup.normalise import _t2s, cjk_share, cjk_share_expr, normalise, normalise_series

HARD = [
    "Question: 如何学习？", "请问：今天天气怎么样", "Please answer the following question: Why?", "Q. Q: ",
    "ANSWER:\x1c what is ſ?", "问题：", "请回答下面的问题：请问 为什么", "ß Straße ΣΑΣ ﬁne ǅ İstanbul",
    "全角ＡＢＣ，。！？「」", "臺灣 這們 發展", "a\x1cb\x1fc  d\u3000e", "Ⅻ ① ㈱ ﬃ", "", "…—–～·", "ǰ̌ ẞ ς σ",
    "  Hello,   World!  ", "你好，世界。", "這個問題", "a+b=c <x>", "Answer: ", "q: q: q: q: what", "\ue000 私用",
    "Ｑｕｅｓｔｉｏｎ：ｗｈａｔ", "請問：這是什麼？", "ǅemal ǈ ǋ", "１２３４５６", "tab\there\nnewline\r\n",
]

OPTIONS = [
    {},
    {"t2s": False},
    {"casefold": False, "punctuation": "fold", "whitespace": "fold"},
    {"punctuation": "space", "whitespace": "fold", "strip_prefixes": False},
    {"unicode_form": "NFC"},
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = "的是不了在人有我他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么" \
           "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样" \
           "現實點機關們說這過時學會發對開體產進種經從問題應義頭長電動" \
           "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ  0123456789 ,.;:!?'\"-()[]，。；：！？、「」《》（）…—～·\t\n\u3000"
    out = []
    for _ in range(n):
        k = rng.randint(0, 80)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


@pytest.mark.parametrize("opts", OPTIONS)
def test_normalise_series_equals_normalise(opts):
    texts = HARD + _random_texts(600) + [t.upper() for t in HARD]
    got = normalise_series(pl.Series(texts, dtype=pl.String), **opts).to_list()
    want = [normalise(t, **opts) for t in texts]
    assert got == want


def test_normalise_series_nulls_and_empty():
    got = normalise_series(pl.Series([None, "", "A", None], dtype=pl.String)).to_list()
    assert got == ["", "", "a", ""]
    assert normalise_series(pl.Series([], dtype=pl.String)).to_list() == []


def test_normalise_series_every_assigned_bmp_character():
    """Every assigned character of the Basic Multilingual Plane alone (and after 'x'): the same key either way."""
    chars = [chr(c) for c in range(0x10000)
             if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"]
    texts = chars + ["x" + c + "y" for c in chars]
    got = normalise_series(pl.Series(texts, dtype=pl.String)).to_list()
    want = [normalise(t) for t in texts]
    bad = [(hex(ord(t[0])), a, b) for t, a, b in zip(texts, got, want, strict=True) if a != b]
    assert bad == []


def test_separator_character_falls_back_to_row_by_row():
    texts = ["臺灣\ue000這們", "發展"]
    assert normalise_series(pl.Series(texts)).to_list() == [normalise(t) for t in texts]


def test_t2s_touches_only_texts_the_filter_sends():
    """The t2s shortcut sends only texts with a character at or above U+2E80 to OpenCC: OpenCC changes no
    character below it (checked over every code point)."""
    conv = _t2s()
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c) != "\ue000"]
    got = conv.convert("\ue000".join(chars)).split("\ue000")
    assert len(got) == len(chars)
    changed = [c for c, g in zip(chars, got, strict=True) if c != g]
    probe = pl.Series(changed, dtype=pl.String)
    from curate.dedup.normalise import T2S_MAY_CHANGE

    sent = pl.DataFrame({"t": probe}).select(pl.col("t").str.contains(T2S_MAY_CHANGE))["t"].to_list()
    assert changed and all(sent), [hex(ord(c)) for c, s in zip(changed, sent, strict=True) if not s]


def test_unicode_tables_equal_this_python():
    punct, space, alpha, fold = unitables.compute()
    assert unicodedata.unidata_version == unitables.UNIDATA_VERSION
    assert punct == unitables.PUNCT
    assert space == unitables.SPACE
    assert alpha == unitables.ALPHA
    assert fold == unitables.CASEFOLD


def test_cjk_share_expr_equals_cjk_share():
    texts = HARD + _random_texts(400, seed=3) + ["\ufa6e\ufa6f中", "ａ中", "123", ""]
    got = pl.DataFrame({"t": texts}).select(cjk_share_expr(pl.col("t")))["t"].to_list()
    assert got == [cjk_share(t) for t in texts]


# --------------------------------------------------------------------------------------------------- MinHash LSH


def _brute(texts, sizes, threshold):
    sets = [minhash.shingles(t, n) for t, n in zip(texts, sizes, strict=True)]
    out = {}
    for a, b in itertools.combinations(range(len(texts)), 2):
        j = minhash.jaccard(sets[a], sets[b])
        if j >= threshold:
            out[(a, b)] = j
    return out


def _variants(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    base = _random_texts(n, seed=seed + 7)
    out = []
    for t in base:
        out.append(t)
        if len(t) > 10 and rng.random() < 0.6:
            k = rng.randrange(len(t))
            out.append(t[:k] + rng.choice("xyz的了") + t[k + 1 :])
    return out


def test_candidate_pairs_confirmed_by_exact_jaccard():
    texts = _variants(1, 300)
    sizes = [2 if cjk_share(t) >= 0.3 else 5 for t in texts]
    i, j, s = minhash.candidate_pairs(texts, ngram=sizes, num_perm=128, threshold=0.6)
    truth = _brute(texts, sizes, 0.6)
    found = dict(zip(zip(i.tolist(), j.tolist(), strict=True), s.tolist(), strict=True))
    assert set(found) <= set(truth)  # nothing below the threshold
    assert all(found[p] == truth[p] for p in found)  # the exact Jaccard, not an estimate
    assert len(found) >= 0.95 * len(truth)  # LSH recall at 25 x 5 bands
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == sorted(found)  # (i, j) order, i < j
    assert all(a < b for a, b in found)


def test_candidate_pairs_series_input_and_determinism():
    texts = _variants(2, 200)
    a = minhash.candidate_pairs(texts, ngram=5, num_perm=128, threshold=0.5)
    b = minhash.candidate_pairs(pl.Series(texts), ngram=5, num_perm=128, threshold=0.5)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_candidate_pairs_against_queries():
    ref = ["what is the capital of france", "how do i bake bread at home", "北京是中国的首都吗"]
    queries = ["what is the capital of france?", "unrelated text about cars", "北京是中国的首都吗？", ""]
    q, t, s = minhash.candidate_pairs(ref, ngram=[5, 5, 2], num_perm=128, threshold=0.6, queries=queries,
                                      query_ngram=[5, 5, 2, 5])
    assert list(zip(q.tolist(), t.tolist(), strict=True)) == [(0, 0), (2, 2)]
    assert all(x >= 0.6 for x in s.tolist())


def test_candidate_pairs_empty_and_short():
    q, t, s = minhash.candidate_pairs(["", "", "ab", "ab", "abc"], ngram=5, num_perm=64, threshold=0.9)
    assert list(zip(q.tolist(), t.tolist(), strict=True)) == [(2, 3)]  # short keys are one token; empties never
    q, _, _ = minhash.candidate_pairs([], ngram=5, num_perm=64, threshold=0.5)
    assert len(q) == 0


def test_band_layout_matches_datasketch():
    from datasketch.lsh import _optimal_param

    for thr in (0.05, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9):
        for num_perm in (64, 128, 256):
            assert minhash.band_layout(thr, num_perm) == _optimal_param(thr, num_perm, 0.5, 0.5), (thr, num_perm)


def test_max_len_diff_keeps_exactly_the_close_lengths():
    base = [t for t in _variants(4, 200) if len(t) > 40]
    texts = base + [t + t[:8] for t in base[:40]]
    qi, tj, _ = minhash.candidate_pairs(texts, ngram=3, num_perm=128, threshold=0.0, lsh_threshold=0.25)
    fi, fj, _ = minhash.candidate_pairs(texts, ngram=3, num_perm=128, threshold=0.0, lsh_threshold=0.25,
                                        max_len_diff=2)
    want = [(a, b) for a, b in zip(qi.tolist(), tj.tolist(), strict=True) if abs(len(texts[a]) - len(texts[b])) <= 2]
    assert list(zip(fi.tolist(), fj.tolist(), strict=True)) == want
    assert len(want) < len(qi)


def _band_truth(bh: np.ndarray, lengths: np.ndarray, max_len_diff: int | None) -> set[tuple[int, int]]:
    """Pairs sharing any band hash, by brute force (lengths within max_len_diff when given)."""
    n = bh.shape[0]
    return {(a, b) for a in range(n) for b in range(a + 1, n) if lengths[a] and lengths[b]
            and (bh[a] == bh[b]).any() and (max_len_diff is None or abs(lengths[a] - lengths[b]) <= max_len_diff)}


@pytest.mark.parametrize("max_len_diff", [None, 0, 3])
def test_candidate_chunks_are_every_band_pair_once_whatever_the_chunk(max_len_diff):
    rng = random.Random(5)
    things = ["flu", "gout", "asthma", "measles", "rabies", "mumps", "tetanus", "anaemia", "scurvy", "rickets"]
    texts = [f"{rng.choice(['What', 'Which'])} are the {rng.choice(['signs', 'symptoms', 'causes'])} of "
             f"{rng.choice(things)}{'?' * rng.randrange(3)}" for _ in range(120)]
    texts += [t for t in _variants(5, 40)] + ["", ""]
    sizes = minhash._sizes(len(texts), 3)
    bh, nonempty, lengths = minhash.band_hashes(texts, sizes, 128, minhash.band_layout(0.25, 128))
    truth = _band_truth(bh, lengths, max_len_diff)
    assert len(truth) > 200  # a low LSH threshold: many candidates, big buckets
    for chunk in (1, 7, 1 << 20):
        got = [(int(a), int(d)) for ca, cd in minhash._self_candidate_chunks(bh, nonempty, lengths, max_len_diff,
                                                                              chunk=chunk)
               for a, d in zip(ca, cd, strict=True)]
        assert len(got) == len(set(got)) and set(got) == truth  # first_band: each pair exactly once
        assert all(a < d for a, d in got)
        many = [(int(a), int(d)) for ca, cd in minhash._self_candidate_chunks(
            bh, nonempty, lengths, max_len_diff, first_band=False, chunk=chunk) for a, d in zip(ca, cd, strict=True)]
        assert set(many) == truth and len(many) >= len(truth)  # once per band shared
        if chunk == 7:
            sizes_seen = [len(ca) for ca, _ in minhash._self_candidate_chunks(bh, nonempty, lengths, max_len_diff,
                                                                              first_band=False, chunk=7)]
            assert max(sizes_seen) <= 7 + 150  # a chunk overshoots by at most one row's partners


def test_edit_pairs_are_the_lsh_candidates_within_max_edits():
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(6)
    base = [t for t in _variants(6, 200) if 5 < len(t) <= 100]
    texts = base + [t[: k] + rng.choice("abc的了") + t[k + 1:] for t in base[:60] for k in [rng.randrange(len(t))]]
    texts += [t[:-2] for t in base[60:90]] + [None]
    series = pl.Series(texts, dtype=pl.String)
    sizes = [2 if cjk_share(t or "") >= 0.3 else 3 for t in texts]
    i, j, d = minhash.edit_pairs(series, ngram=sizes, num_perm=128, lsh_threshold=0.25, max_edits=3)
    # the reference: every LSH candidate (threshold 0 returns them all), then the edit distance of each
    ci, cj, _ = minhash.candidate_pairs(series, ngram=sizes, num_perm=128, threshold=0.0, lsh_threshold=0.25,
                                        max_len_diff=3)
    want = [(a, b, Levenshtein.distance(texts[a], texts[b])) for a, b in zip(ci.tolist(), cj.tolist(), strict=True)]
    want = [w for w in want if w[2] <= 3]
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == want
    assert len(want) >= 80  # the planted edits are found
    again = minhash.edit_pairs(series, ngram=sizes, num_perm=128, lsh_threshold=0.25, max_edits=3)
    assert all(np.array_equal(x, y) for x, y in zip((i, j, d), again, strict=True))
