"""Near-duplicate candidates with MinHash LSH (datasketch) over character n-grams, verified by exact Jaccard.

Character n-grams need no word segmentation, so the same code serves Chinese and English. LSH only proposes
candidate pairs; each is then checked with the exact Jaccard similarity of the two n-gram sets, so the threshold
means what it says and LSH's estimate error cannot remove a row on its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def shingles(text: str, n: int) -> set[str]:
    """Character n-grams of `text` (the whole text when it is shorter than n; empty text → empty set)."""
    if not text:
        return set()
    if len(text) <= n:
        return {text}
    return {text[k : k + n] for k in range(len(text) - n + 1)}


def _crc32(b: bytes) -> int:
    # crc32 instead of datasketch's default sha1: ~3x faster per n-gram in this Python loop, stable across runs
    # (unlike hash()), and datasketch mixes (fmix) the value before permuting, so its 32 bits are enough here.
    return zlib.crc32(b)


def _sizes(texts: Sequence[str], ngram: int | Sequence[int]) -> list[int]:
    return [ngram] * len(texts) if isinstance(ngram, int) else list(ngram)


def signatures(texts: Sequence[str], ngram: int | Sequence[int], num_perm: int, seed: int = 1) -> list:
    """One datasketch LeanMinHash per text (None for empty text); `ngram` is one size or one per text."""
    from datasketch import LeanMinHash, MinHash

    template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_crc32)
    out = []
    for text, n in zip(texts, _sizes(texts, ngram), strict=True):
        grams = shingles(text, n)
        if not grams:
            out.append(None)
            continue
        m = MinHash(num_perm=num_perm, seed=seed, hashfunc=_crc32, permutations=template.permutations,
                    scheme=template.scheme)
        m.update_batch([g.encode("utf-8") for g in sorted(grams)])
        out.append(LeanMinHash(m))
    return out


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def candidate_pairs(
    texts: Sequence[str],
    *,
    ngram: int | Sequence[int],
    num_perm: int,
    threshold: float,
    lsh_threshold: float | None = None,
    seed: int = 1,
    queries: Sequence[str] | None = None,
    query_ngram: int | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with exact n-gram Jaccard ≥ threshold, found through MinHash LSH.

    Without `queries`: pairs (i, j), i < j, within `texts`. With `queries`: pairs (q, t) of a query index and a
    `texts` index (decontamination against a reference set). `ngram` may differ per text (the stage uses
    shorter n-grams for Chinese, where one character carries about as much as a short English word).
    `lsh_threshold` (default: threshold − 0.1) sets the LSH band layout; lower finds more candidates at more
    verification cost.
    """
    from datasketch import MinHashLSH

    lsh_t = lsh_threshold if lsh_threshold is not None else max(0.05, threshold - 0.1)
    sigs = signatures(texts, ngram, num_perm, seed)
    lsh = MinHashLSH(threshold=lsh_t, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for k, s in enumerate(sigs):
            if s is not None:
                session.insert(k, s, check_duplication=False)
    sizes = _sizes(texts, ngram)
    qtexts = texts if queries is None else queries
    qsizes = sizes if queries is None else _sizes(queries, ngram if query_ngram is None else query_ngram)
    qsigs = sigs if queries is None else signatures(queries, qsizes, num_perm, seed)
    cache: dict[tuple[int, int], set[str]] = {}

    def grams(side: int, k: int) -> set[str]:
        key = (side, k)
        if key not in cache:
            cache[key] = shingles(texts[k], sizes[k]) if side == 0 else shingles(qtexts[k], qsizes[k])
        return cache[key]

    qi: list[int] = []
    tj: list[int] = []
    js: list[float] = []
    qside = 0 if queries is None else 1
    for q, s in enumerate(qsigs):
        if s is None:
            continue
        for t in sorted(lsh.query(s)):
            if queries is None and t <= q:
                continue
            sim = jaccard(grams(qside, q), grams(0, t))
            if sim >= threshold:
                qi.append(q)
                tj.append(t)
                js.append(sim)
        if len(cache) > 200_000:  # bound memory on big inputs; n-gram sets are cheap to rebuild
            cache.clear()
    return np.asarray(qi, dtype=np.int64), np.asarray(tj, dtype=np.int64), np.asarray(js, dtype=np.float64)
