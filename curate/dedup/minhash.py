"""Near-duplicate candidates with MinHash LSH over character n-grams, verified by exact Jaccard.

Character n-grams need no word segmentation, so the same code serves Chinese and English. LSH only proposes
candidate pairs; each is then checked with the exact Jaccard similarity of the two n-gram sets (Python string
sets), so the threshold means what it says and LSH's estimate error cannot remove a row on its own.

How, in flat arrays (no Python object per row): keys → code points (NumPy, UTF-32) → one 64-bit hash per n-gram
window → MinHash digests in Rust (`rensa`'s `RMinHash.digest_matrix_from_flat_token_hashes`, seeded) → one
64-bit hash per LSH band → rows whose band hashes are equal, found by sorting. Done in chunks of rows, so the
per-n-gram arrays never exist for all rows at once: what stays is one uint64 per row and band. The band layout
(b bands of r rows) is the one that minimises the false-positive + false-negative area at `lsh_threshold`
(datasketch's `_optimal_param`, computed here in NumPy).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MUL = np.uint64(0x100000001B3)
_CHUNK = 20_000  # rows per signature chunk: bounds the per-n-gram arrays (~8 bytes per character of a chunk)

Texts = Sequence[str] | pl.Series


def shingles(text: str, n: int) -> set[str]:
    """Character n-grams of `text` (the whole text when it is shorter than n; empty text → empty set)."""
    if not text:
        return set()
    if len(text) <= n:
        return {text}
    return {text[k : k + n] for k in range(len(text) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64 output bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


@functools.lru_cache(maxsize=64)
def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising 0.5 · false-positive + 0.5 · false-negative probability mass around
    `threshold` (datasketch's `_optimal_param`; the integrals by Gauss–Legendre quadrature, exact to ~1e-12)."""
    x, w = np.polynomial.legendre.leggauss(64)

    def integral(lo: float, hi: float, b: np.ndarray, r: np.ndarray, negative: bool) -> np.ndarray:
        s = (hi - lo) / 2 * x + (hi + lo) / 2
        p = 1.0 - (1.0 - s[None, :] ** r[:, None]) ** b[:, None]
        f = 1.0 - p if negative else p
        return (f * w[None, :]).sum(axis=1) * (hi - lo) / 2

    bs, rs = zip(*[(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], strict=True)
    b_arr, r_arr = np.asarray(bs, dtype=np.float64), np.asarray(rs, dtype=np.float64)
    err = 0.5 * integral(0.0, threshold, b_arr, r_arr, False) + 0.5 * integral(threshold, 1.0, b_arr, r_arr, True)
    k = int(np.argmin(err))  # first minimum in (b, r) order, as datasketch's strict '<' scan
    return int(bs[k]), int(rs[k])


def _sizes(n_texts: int, ngram: int | Sequence[int] | np.ndarray) -> np.ndarray:
    if isinstance(ngram, int):
        return np.full(n_texts, ngram, dtype=np.int64)
    out = np.asarray(ngram, dtype=np.int64)
    if len(out) != n_texts:
        raise ValueError(f"{len(out)} n-gram sizes for {n_texts} texts")
    return out


def _as_list(texts: Texts, a: int, b: int) -> list[str]:
    if isinstance(texts, pl.Series):
        return texts.slice(a, b - a).fill_null("").to_list()
    return [t or "" for t in texts[a:b]]


def _ngram_hashes(keys: list[str], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat uint64 hash per n-gram window of each key (grouped by key) and the row offsets; a key shorter than its
    n is one token (tagged with its length). Also each key's length in code points."""
    lens = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    cp = np.frombuffer("".join(keys).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    off = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    out_h, out_row = [], []
    with np.errstate(over="ignore"):
        for n in np.unique(sizes).tolist():
            rows = np.flatnonzero(sizes == n)
            full = rows[lens[rows] >= n]
            cnt = lens[full] - n + 1
            starts = np.repeat(off[full], cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            h = np.zeros(len(starts), dtype=np.uint64)
            for k in range(n):
                h = h * _MUL + cp[starts + k]
            out_h.append(_mix(h ^ np.uint64(n << 56)))
            out_row.append(np.repeat(full, cnt))
            short = rows[(lens[rows] < n) & (lens[rows] > 0)]
            if len(short):
                hs = np.zeros(len(short), dtype=np.uint64)
                for k in range(n - 1):
                    valid = lens[short] > k
                    hs = np.where(valid, hs * _MUL + cp[np.minimum(off[short] + k, len(cp) - 1)], hs)
                out_h.append(_mix(hs ^ (lens[short].astype(np.uint64) << np.uint64(56))))
                out_row.append(short)
    h = np.concatenate(out_h) if out_h else np.zeros(0, dtype=np.uint64)
    row = np.concatenate(out_row) if out_row else np.zeros(0, dtype=np.int64)
    order = np.argsort(row, kind="stable")  # grouped by row; repeated n-grams are kept (MinHash ignores them)
    h = h[order]
    toff = np.zeros(len(keys) + 1, dtype=np.uint64)
    np.cumsum(np.bincount(row, minlength=len(keys)), out=toff[1:])
    return h, toff, lens


def band_hashes(texts: Texts, ngram: int | Sequence[int] | np.ndarray, num_perm: int, bands: tuple[int, int],
                seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, b) uint64 band hashes of each text's MinHash signature, a mask of non-empty texts, their lengths.

    Computed `_CHUNK` texts at a time, each chunk on its own (`curate.parallel.map_tasks`: the Ray engine runs the
    chunks as tasks on its cluster; the bands are the same wherever a chunk runs)."""
    from curate.parallel import map_tasks

    n = len(texts)
    sizes = _sizes(n, ngram)
    out = np.zeros((bands[0], n), dtype=np.uint64).T  # column-major: each band's hashes contiguous (sorted per band)
    nonempty = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    spans = [(a, min(n, a + _CHUNK)) for a in range(0, n, _CHUNK)]
    calls = ((_as_list(texts, a, z), sizes[a:z], num_perm, bands, seed) for a, z in spans)  # built on demand
    for (a, z), (part, lens) in zip(spans, map_tasks(_band_chunk, calls), strict=True):
        out[a:z] = part
        nonempty[a:z] = lens > 0
        lengths[a:z] = lens
    return out, nonempty, lengths


def _band_chunk(keys: list[str], sizes: np.ndarray, num_perm: int, bands: tuple[int, int],
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Band hashes (len(keys), b) of one chunk of texts, and their lengths in code points."""
    from rensa import RMinHash

    b, r = bands
    out = np.zeros((len(keys), b), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h, toff, lens = _ngram_hashes(keys, sizes)
        if not len(h):
            return out, lens
        m = RMinHash.digest_matrix_from_flat_token_hashes(h, toff, num_perm, seed)
        sig = np.asarray(m.to_rows(), dtype=np.uint64)
        del m, h
        for k in range(b):
            acc = np.full(len(keys), np.uint64(k + 1), dtype=np.uint64)
            for c in range(r):
                acc = _mix(acc * _MUL + sig[:, k * r + c])
            out[:, k] = acc
    return out, lens


_PAIR_CHUNK = 1 << 20  # candidate pairs generated (and verified) at a time: bounds memory whatever the buckets


def _self_candidate_chunks(bh: np.ndarray, nonempty: np.ndarray, lengths: np.ndarray | None = None,
                           max_len_diff: int | None = None, first_band: bool = True,
                           chunk: int = _PAIR_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs (a, d), a < d, sharing a band hash, in chunks of at most ~`chunk` pairs (one bucket's run of a row
    may exceed it), band by band; only pairs whose lengths differ by at most `max_len_diff`, when given.

    Memory is bounded by the chunk, not by the candidates (they grow with the square of a bucket's size): rows
    are sorted by (band hash, length), so each row's partners in its bucket within the length window are one
    contiguous range of the sorted order, and pairs are made from a range of sorted positions at a time. With
    `first_band` a pair is emitted only in the first band it shares (each pair once, at the cost of comparing the
    earlier bands' hashes); without it a pair sharing several bands comes once per band, for a caller whose check
    is cheaper than that comparison (duplicates must then be removed from what it keeps).
    """
    rows_all = np.flatnonzero(nonempty)
    if len(rows_all) < 2:
        return
    window = max_len_diff is not None and lengths is not None
    if window:
        assert lengths is not None and max_len_diff is not None
        rows_all = rows_all[np.argsort(lengths[rows_all], kind="stable")]  # by length within each bucket below
        lens_all = lengths[rows_all]
        span = np.int64(int(lens_all.max()) + int(max_len_diff) + 1)
    cols = np.asfortranarray(bh).T if first_band else None  # one band's hashes contiguous (a view if already)
    for k in range(bh.shape[1]):
        h = bh[rows_all, k]
        order = np.argsort(h, kind="stable")
        hs, rs = h[order], rows_all[order]
        brk = np.flatnonzero(hs[1:] != hs[:-1]) + 1
        start = np.concatenate([[0], brk])
        end = np.concatenate([brk, [len(hs)]])
        run_end = np.repeat(end, end - start)  # per sorted position: the end of its run of equal hashes
        if window:
            run_id = np.repeat(np.arange(len(start), dtype=np.int64), end - start)
            key = run_id * span + lens_all[order]  # sorted: runs in order, lengths ascending within a run
            stop = np.minimum(np.searchsorted(key, key + max_len_diff, side="right"), run_end)
            del run_id, key
        else:
            stop = run_end
        cnt = stop - np.arange(len(hs)) - 1  # partners after it in the run (within the length window)
        del run_end, stop
        pos = np.flatnonzero(cnt > 0)
        if not len(pos):
            continue
        c = cnt[pos]
        del cnt
        csum = np.cumsum(c)
        lo = 0
        while lo < len(pos):
            hi = max(lo + 1, int(np.searchsorted(csum, (csum[lo - 1] if lo else 0) + chunk, side="right")))
            p, cc = pos[lo:hi], c[lo:hi]
            src = np.repeat(p, cc)
            dst = src + 1 + (np.arange(int(cc.sum())) - np.repeat(np.cumsum(cc) - cc, cc))
            a, d = rs[src], rs[dst]
            del src, dst
            if cols is not None and k:
                earlier = np.zeros(len(a), dtype=bool)
                for kk in range(k):
                    col = cols[kk]
                    earlier |= col[a] == col[d]
                a, d = a[~earlier], d[~earlier]
            yield np.minimum(a, d), np.maximum(a, d)
            lo = hi


def _self_candidates(bh: np.ndarray, nonempty: np.ndarray, lengths: np.ndarray | None = None,
                     max_len_diff: int | None = None) -> np.ndarray:
    """Pairs i < j sharing a band hash, as sorted unique codes i·n + j (only pairs whose lengths differ by at
    most `max_len_diff`, when given). Holds every candidate: for callers that need them all."""
    n = bh.shape[0]
    found = [a * n + d for a, d in _self_candidate_chunks(bh, nonempty, lengths, max_len_diff)]
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(found))


def _cross_candidates(qh: np.ndarray, qmask: np.ndarray, th: np.ndarray, tmask: np.ndarray) -> np.ndarray:
    """Pairs (query q, text t) sharing a band hash, as sorted unique codes q·n_texts + t."""
    nt = th.shape[0]
    trows = np.flatnonzero(tmask)
    qrows = np.flatnonzero(qmask)
    found = []
    for k in range(th.shape[1]):
        order = np.argsort(th[trows, k], kind="stable")
        ts, tr = th[trows, k][order], trows[order]
        qv = qh[qrows, k]
        lo = np.searchsorted(ts, qv, side="left")
        hi = np.searchsorted(ts, qv, side="right")
        c = hi - lo
        if not c.sum():
            continue
        q = np.repeat(qrows, c)
        t = tr[np.repeat(lo, c) + (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))]
        found.append(np.unique(q * nt + t))
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(found))


def candidate_pairs(
    texts: Texts,
    *,
    ngram: int | Sequence[int] | np.ndarray,
    num_perm: int,
    threshold: float,
    lsh_threshold: float | None = None,
    seed: int = 1,
    queries: Texts | None = None,
    query_ngram: int | Sequence[int] | np.ndarray | None = None,
    max_len_diff: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with exact n-gram Jaccard ≥ threshold, found through MinHash LSH, in (first, second) order.

    Without `queries`: pairs (i, j), i < j, within `texts`. With `queries`: pairs (q, t) of a query index and a
    `texts` index (decontamination against a reference set). `ngram` may differ per text (the stage uses
    shorter n-grams for Chinese, where one character carries about as much as a short English word).
    `lsh_threshold` (default: threshold − 0.2) sets the LSH band layout; lower finds more candidates at more
    verification cost (at the default 0.6: 32 bands × 4 rows, a pair at Jaccard 0.6 becomes a candidate with
    probability 0.988; threshold − 0.1 gave 25 × 5 and 0.868). `threshold` ≤ 0 returns every LSH candidate with
    similarity NaN (not computed). `max_len_diff` (self pairs only) drops candidates whose lengths in characters
    differ by more: the edit-distance pass needs no pair that can't be within that many edits.
    """
    lsh_t = lsh_threshold if lsh_threshold is not None else max(0.05, threshold - 0.2)
    layout = band_layout(float(lsh_t), int(num_perm))
    n = len(texts)
    sizes = _sizes(n, ngram)
    th, tmask, tlens = band_hashes(texts, sizes, num_perm, layout, seed)
    if queries is None:
        if threshold <= 0:
            codes = _self_candidates(th, tmask, tlens, max_len_diff)
            return codes // max(n, 1), codes % max(n, 1), np.full(len(codes), np.nan)
        # verified chunk by chunk: only pairs at or above the threshold are held
        kept, sims_kept = [], []
        for a, d in _self_candidate_chunks(th, tmask, tlens, max_len_diff):
            sim = _verify(texts, sizes, a, texts, sizes, d)
            ok = sim >= threshold
            kept.append(a[ok] * n + d[ok])
            sims_kept.append(sim[ok])
        if not kept:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        codes, sims = np.concatenate(kept), np.concatenate(sims_kept)
        order = np.argsort(codes, kind="stable")
        codes, sims = codes[order], sims[order]
        return codes // n, codes % n, sims
    qsizes = _sizes(len(queries), ngram if query_ngram is None else query_ngram)
    qh, qmask, _ = band_hashes(queries, qsizes, num_perm, layout, seed)
    codes = _cross_candidates(qh, qmask, th, tmask)
    qi, tj = codes // max(n, 1), codes % max(n, 1)
    if threshold <= 0:
        return qi, tj, np.full(len(qi), np.nan)
    sims = _verify(queries, qsizes, qi, texts, sizes, tj)
    ok = sims >= threshold
    return qi[ok], tj[ok], sims[ok]


def edit_pairs(
    texts: pl.Series,
    *,
    ngram: int | Sequence[int] | np.ndarray,
    num_perm: int,
    lsh_threshold: float,
    max_edits: int,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of `texts` at most `max_edits` character edits apart (Levenshtein), among the MinHash
    LSH candidates at `lsh_threshold` whose lengths differ by at most `max_edits`; with their distances, sorted.

    For short texts, where a few typos change too many n-grams for the Jaccard pass: a low `lsh_threshold`
    proposes many candidates, so they are made and checked a chunk at a time (rapidfuzz's `process.cpdist`, in
    C++) and only the pairs within `max_edits` are kept. A pair sharing several bands is checked once per band
    (cheaper than finding its first band) and kept once. Memory: the band hashes (8 bytes per row and band), the
    texts and one chunk, whatever the candidates.
    """
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cpdist

    layout = band_layout(float(lsh_threshold), int(num_perm))
    n = len(texts)
    sizes = _sizes(n, ngram)
    th, tmask, tlens = band_hashes(texts, sizes, num_perm, layout, seed)
    # The texts as one object array, indexed per chunk: gathering and converting them from Arrow for every pair
    # cost ~15x more (0.91 vs 0.06 CPU-s for 1.6 M pairs at 100k); they are short (≤ short_chars + max_edits),
    # ~150 bytes each, and go when the pass ends.
    strs = np.asarray(texts.fill_null("").to_list(), dtype=object)
    kept, dists = [], []
    for a, d in _self_candidate_chunks(th, tmask, tlens, max_edits, first_band=False):
        dist = cpdist(strs[a], strs[d], scorer=Levenshtein.distance, score_cutoff=max_edits, dtype=np.int32)
        ok = dist <= max_edits
        kept.append(a[ok] * n + d[ok])
        dists.append(dist[ok])
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    codes, dist = np.concatenate(kept), np.concatenate(dists).astype(np.int64)
    codes, first = np.unique(codes, return_index=True)
    return codes // n, codes % n, dist[first]


def _verify(qtexts: Texts, qsizes: np.ndarray, qi: np.ndarray, texts: Texts, sizes: np.ndarray,
            tj: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the n-gram string sets of each candidate pair (sets built for candidate rows only)."""
    out = np.empty(len(qi), dtype=np.float64)
    if not len(qi):
        return out
    same = qtexts is texts
    qt = _pick(qtexts, np.unique(np.concatenate([qi, tj])) if same else np.unique(qi))
    tt = qt if same else _pick(texts, np.unique(tj))
    qcache: dict[int, set[str]] = {}
    tcache = qcache if same else {}
    for k, (a, b) in enumerate(zip(qi.tolist(), tj.tolist(), strict=True)):
        ga = qcache.get(a)
        if ga is None:
            ga = qcache[a] = shingles(qt[a], int(qsizes[a]))
        gb = tcache.get(b)
        if gb is None:
            gb = tcache[b] = shingles(tt[b], int(sizes[b]))
        out[k] = jaccard(ga, gb)
        if len(qcache) + len(tcache) > 200_000:  # bound memory on big inputs; n-gram sets are cheap to rebuild
            qcache.clear()
            tcache.clear()
    return out


def _pick(texts: Texts, rows: np.ndarray) -> dict[int, str]:
    if isinstance(texts, pl.Series):
        vals = texts.gather(rows).fill_null("").to_list()
    else:
        vals = [texts[r] or "" for r in rows.tolist()]
    return dict(zip(rows.tolist(), vals, strict=True))
