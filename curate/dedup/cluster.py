"""Clusters from similarity edges, with a guard against chaining.

Why not connected components: with a cosine threshold, A~B and B~C do not make A~C, and components over a dense
region can swallow rows that are nothing alike (chaining). We use *leader clustering* instead (the documented
alternative the issue allows): rows are visited best-first by the survivor rule; an unassigned row becomes the
kept leader of a new cluster and takes every still-unassigned neighbour within the threshold of *itself*. So every
removed row is within the threshold of its cluster's kept row, and no cluster loses all its members (its leader
is always kept). A row whose only similar neighbours were removed by another leader stays kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Assignment:
    """Per-row outcome of one method: `leader[i]` = index of the kept row i duplicates (-1: kept), `sim[i]`."""

    leader: np.ndarray  # int64, -1 for kept rows
    sim: np.ndarray  # float64, NaN for kept rows


def leader_cluster(n: int, rank: np.ndarray, i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> Assignment:
    """Leader clustering over undirected edges (i, j, sim) among `n` rows; `rank[r]` lower = better survivor.

    Edges must already pass the threshold. Deterministic: rows are visited in rank order and a row's neighbours
    are taken in (rank) order; ties in rank are broken by row index.
    """
    leader = np.full(n, -1, dtype=np.int64)
    best = np.full(n, np.nan, dtype=np.float64)
    if len(i) == 0:
        return Assignment(leader, best)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    sim = np.asarray(sim, dtype=np.float64)
    # Both directions, grouped by source row; sorted so each row's neighbour list is in a fixed order.
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    ss = np.concatenate([sim, sim])
    keep = src != dst
    src, dst, ss = src[keep], dst[keep], ss[keep]
    order = np.lexsort((dst, rank[dst], src))
    src, dst, ss = src[order], dst[order], ss[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    assigned = np.zeros(n, dtype=bool)
    has_edges = np.diff(starts) > 0
    # Visit only rows with edges, best survivor first (a row without edges is trivially kept).
    candidates = np.flatnonzero(has_edges)
    candidates = candidates[np.lexsort((candidates, rank[candidates]))]
    dst_l = dst.tolist()
    ss_l = ss.tolist()
    starts_l = starts.tolist()
    for r in candidates.tolist():
        if assigned[r]:
            continue
        assigned[r] = True
        for k in range(starts_l[r], starts_l[r + 1]):
            m = dst_l[k]
            if not assigned[m]:
                assigned[m] = True
                leader[m] = r
                best[m] = ss_l[k]
    return Assignment(leader, best)


def group_leader(keys: list | pl.Series, rank: np.ndarray) -> Assignment:
    """Exact groups: rows with equal keys form one cluster; the best-ranked row is kept ('' keys never match).

    `keys` is a list or a String Series (then grouped in Polars, without a Python object per row)."""
    import polars as pl

    n = len(keys)
    leader = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan, dtype=np.float64)
    if not n:
        return Assignment(leader, sim)
    frame = pl.DataFrame({
        "k": keys if isinstance(keys, pl.Series) else pl.Series(keys, dtype=pl.String),
        "rank": np.asarray(rank, dtype=np.int64), "r": np.arange(n, dtype=np.int64),
    })
    # Best survivor first (rank, then row index); the first row of each key is its cluster's kept row.
    members = (
        frame.filter(pl.col("k").is_not_null() & (pl.col("k") != ""))
        .sort(["rank", "r"])
        .with_columns(pl.col("r").first().over("k").alias("lead"))
        .filter(pl.col("r") != pl.col("lead"))
    )
    r = members["r"].to_numpy()
    leader[r] = members["lead"].to_numpy()
    sim[r] = 1.0
    return Assignment(leader, sim)


def resolve_roots(leader: np.ndarray) -> np.ndarray:
    """Follow dup-of links (row → the row it duplicates → …) to the final kept row of each cluster."""
    root = np.where(leader < 0, np.arange(len(leader)), leader)
    for _ in range(64):  # links are at most one per method deep; 64 is a safe bound
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root
