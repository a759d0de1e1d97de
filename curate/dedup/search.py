"""Neighbour pairs above a cosine threshold among L2-normalised vectors.

- Small inputs (≤ `exact_max` rows): faiss exact inner-product range search (IndexFlatIP) — every pair found.
- Larger inputs: a SemDeDup-like partitioned search. faiss k-means (spherical, seeded) splits the vectors into
  k cells; each vector is compared exactly (one BLAS matrix product per cell) with the members of its `nprobe`
  nearest cells. A pair is found when either vector probes the other's cell, so near-duplicates that straddle a
  cell border are still found in the common case. Why not faiss IVF/HNSW: IVF scans lists one query at a time
  and HNSW construction alone took ~500 s at 1M here; grouping the queries of a cell into one matrix product is
  what makes 1M vectors fit in the time budget on 2 cores (figures in docs/bench/dedup.md).
"""

from __future__ import annotations

import math

import numpy as np

EXACT_MAX = 5_000


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _range_flat(query: np.ndarray, base: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    # faiss keeps results strictly above the radius; step just below and re-check with >= below.
    lims, dist, ids = index.range_search(query, float(np.nextafter(np.float32(threshold), np.float32(-1))))
    counts: np.ndarray = np.diff(lims.astype(np.int64))
    q = np.repeat(np.arange(len(query), dtype=np.int64), counts)
    keep = dist >= threshold
    return q[keep], ids[keep].astype(np.int64), dist[keep].astype(np.float64)


def _unique_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, s) → unique unordered pairs with i < j, sorted by (i, j) for determinism."""
    keep = i != j
    i, j, s = i[keep], j[keep], s[keep]
    a, b = np.minimum(i, j), np.maximum(i, j)
    key = a * np.int64(n) + b
    key, first = np.unique(key, return_index=True)
    return a[first], b[first], s[first]


def partitions(n: int, cells: int | None) -> int:
    """Number of k-means cells: about 1.5·√n by default (balances the per-cell products against assignment)."""
    if cells:
        return max(1, min(cells, n))
    return max(1, min(n // 40, round(1.5 * math.sqrt(n))))


def self_pairs(
    vecs: np.ndarray,
    threshold: float,
    *,
    exact_max: int = EXACT_MAX,
    cells: int | None = None,
    nprobe: int = 5,
    seed: int = 0,
    train_points_per_cell: int = 40,
    kmeans_iter: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with cosine ≥ threshold (exact below `exact_max` rows, partitioned above)."""
    vecs = _as_f32(vecs)
    n = len(vecs)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if n < 2:
        return empty
    if n <= exact_max:
        q, t, s = _range_flat(vecs, vecs, threshold)
        return _unique_pairs(q, t, s, n)
    return partitioned_pairs(
        vecs, threshold, cells=partitions(n, cells), nprobe=nprobe, seed=seed,
        train_points_per_cell=train_points_per_cell, kmeans_iter=kmeans_iter,
    )


def kmeans_cells(
    vecs: np.ndarray, cells: int, nprobe: int, seed: int, train_points_per_cell: int = 40, kmeans_iter: int = 10
) -> np.ndarray:
    """Top-`nprobe` k-means cells of each vector, shape (n, nprobe); column 0 is the vector's own cell."""
    import faiss

    n, d = vecs.shape
    km = faiss.Kmeans(
        d, cells, niter=kmeans_iter, seed=seed, spherical=True, verbose=False,
        max_points_per_centroid=train_points_per_cell, min_points_per_centroid=1,
    )
    # Train on a seeded sample: faiss would subsample too, but its own sampling is per-call random state.
    rng = np.random.default_rng(seed)
    m = min(n, cells * train_points_per_cell)
    sample = vecs[np.sort(rng.choice(n, size=m, replace=False))] if m < n else vecs
    km.train(sample)
    if km.centroids is None:  # faiss sets them in train(); here for the type checker
        raise RuntimeError("faiss k-means produced no centroids")
    index = faiss.IndexFlatIP(d)
    index.add(km.centroids)
    _, probe = index.search(vecs, nprobe)
    return probe.astype(np.int64)


def partitioned_pairs(
    vecs: np.ndarray,
    threshold: float,
    *,
    cells: int,
    nprobe: int = 5,
    seed: int = 0,
    train_points_per_cell: int = 40,
    kmeans_iter: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vecs = _as_f32(vecs)
    n = len(vecs)
    probe = kmeans_cells(vecs, cells, nprobe, seed, train_points_per_cell, kmeans_iter)
    own = probe[:, 0]
    member_order = np.argsort(own, kind="stable")
    member_starts = np.searchsorted(own[member_order], np.arange(cells + 1))
    flat_cell = probe.ravel()
    flat_row = np.repeat(np.arange(n, dtype=np.int64), probe.shape[1])
    query_order = np.argsort(flat_cell, kind="stable")
    query_starts = np.searchsorted(flat_cell[query_order], np.arange(cells + 1))
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    thr = np.float32(threshold)
    for c in range(cells):
        members = member_order[member_starts[c] : member_starts[c + 1]]
        if len(members) == 0:
            continue
        queries = flat_row[query_order[query_starts[c] : query_starts[c + 1]]]
        if len(queries) == 0:
            continue
        sims = vecs[queries] @ vecs[members].T
        qi, mj = np.nonzero(sims >= thr)
        if len(qi):
            a, b = queries[qi], members[mj]
            keep = a != b
            out_i.append(a[keep])
            out_j.append(b[keep])
            out_s.append(sims[qi[keep], mj[keep]].astype(np.float64))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return _unique_pairs(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s), n)


def cross_pairs(
    queries: np.ndarray, base: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (query index, base index, cosine) with cosine ≥ threshold (exact; for reference sets)."""
    if len(queries) == 0 or len(base) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return _range_flat(_as_f32(queries), _as_f32(base), threshold)


def nearest_similarity(vecs: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Cosine of each sampled row's nearest other row (exact), for the report's similarity histogram."""
    import faiss

    vecs = _as_f32(vecs)
    if len(vecs) < 2 or len(sample) == 0:
        return np.zeros(0)
    # faiss.knn reads `vecs` in place (an IndexFlatIP would copy all of them: 1.8 GB at 1M 512-d vectors);
    # same exhaustive search, same results.
    dist, ids = faiss.knn(vecs[sample], vecs, 2, metric=faiss.METRIC_INNER_PRODUCT)
    # The first hit is normally the row itself; take the best hit that isn't.
    self_hit = ids[:, 0] == sample
    return np.where(self_hit, dist[:, 1], dist[:, 0]).astype(np.float64)
