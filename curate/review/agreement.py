"""Inter-annotator agreement per question, and per-annotator statistics.

Two figures per question, over the records that at least two annotators submitted:
- percent agreement: the share of annotator pairs on the same record that gave the same answer (observed
  agreement; easy to read, but inflated when one answer dominates);
- Krippendorff's alpha (the `krippendorff` package): chance-corrected, handles any number of annotators and
  missing answers; nominal for labels, ordinal for the 1-5 rating. It is undefined (None) when every answer in
  the pairable data is the same value; we report None rather than a misleading 1.0.

The input is the "long" responses table that pull builds: one row per (pair key, user) submitted response.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from typing import Any, Literal

import polars as pl

from curate.review.settings import PROBLEM_LABELS, RECORD_KEY, VOTES

KEY = RECORD_KEY


def percent_agreement(units: Iterable[list[Hashable]]) -> float | None:
    """Mean over units with ≥2 answers of (agreeing annotator pairs / all annotator pairs)."""
    scores = []
    for values in units:
        n = len(values)
        if n < 2:
            continue
        counts = Counter(values)
        agreeing = sum(c * (c - 1) for c in counts.values())
        scores.append(agreeing / (n * (n - 1)))
    return sum(scores) / len(scores) if scores else None


Level = Literal["nominal", "ordinal", "interval", "ratio"]  # krippendorff's levels of measurement


def krippendorff_alpha(triples: Iterable[tuple[Hashable, Hashable, Any]], level: Level = "nominal") -> float | None:
    """Alpha from (item, annotator, value) triples; None when undefined (fewer than 2 values, no overlap)."""
    import krippendorff
    import numpy as np

    triples = list(triples)
    by_item: dict[Hashable, dict[Hashable, Any]] = defaultdict(dict)
    for item, annotator, value in triples:
        if value is not None:
            by_item[item][annotator] = value
    pairable = {item: answers for item, answers in by_item.items() if len(answers) >= 2}
    if not pairable:
        return None
    values = sorted({v for answers in pairable.values() for v in answers.values()}, key=_sort_key)
    if len(values) < 2:
        return None
    annotators = sorted({a for answers in pairable.values() for a in answers}, key=str)
    items = sorted(pairable, key=str)
    code = {v: i for i, v in enumerate(values)}  # ordinal: sorted order of the values is their rank
    matrix = np.full((len(annotators), len(items)), np.nan)
    a_index = {a: i for i, a in enumerate(annotators)}
    for j, item in enumerate(items):
        for annotator, value in pairable[item].items():
            matrix[a_index[annotator], j] = float(value) if level != "nominal" and _is_number(value) else code[value]
    try:
        alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except (ValueError, ZeroDivisionError):
        return None
    return None if alpha != alpha else round(alpha, 6)  # NaN → None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if _is_number(v) else (1, str(v))


def _question(triples: list[tuple[str, str, Any]], level: Level) -> dict[str, Any]:
    by_item: dict[str, list[Any]] = defaultdict(list)
    for item, _user, value in triples:
        if value is not None:
            by_item[item].append(value)
    pct = percent_agreement(by_item.values())
    return {
        "level": level,
        "items": sum(1 for v in by_item.values() if len(v) >= 2),
        "percent": None if pct is None else round(pct, 6),
        "alpha": krippendorff_alpha(triples, level),
    }


def agreement_report(responses: pl.DataFrame) -> dict[str, Any]:
    """Per-question agreement over submitted responses (columns: the pair key, user, vote, problems, rating)."""
    sub = responses.filter(pl.col("status") == "submitted") if "status" in responses.columns else responses
    rows = sub.select(KEY, "user", "vote", "problems", "rating").to_dicts()
    report: dict[str, Any] = {"better": _question([(r[KEY], r["user"], r["vote"]) for r in rows], "nominal")}
    report["problems"] = {
        label: _question([(r[KEY], r["user"], int(label in (r["problems"] or []))) for r in rows], "nominal")
        for label in PROBLEM_LABELS
    }
    report["rating"] = _question([(r[KEY], r["user"], r["rating"]) for r in rows], "ordinal")
    return report


def annotator_stats(responses: pl.DataFrame, decisions: pl.DataFrame | None = None) -> list[dict[str, Any]]:
    """Per annotator: answers by status, vote mix, share of "Response A" picks (position bias), agreement with
    the resolved decision on records that had at least one other annotator, mean rating, corrections written."""
    resolved: dict[str, str | None] = {}
    if decisions is not None and decisions.height:
        resolved = dict(zip(decisions[KEY].to_list(), decisions["review_decision"].to_list(), strict=True))
    submitters = Counter(
        responses.filter(pl.col("status") == "submitted")[KEY].to_list() if responses.height else []
    )
    out = []
    for user in sorted(set(responses["user"].to_list()) if responses.height else []):
        mine = responses.filter(pl.col("user") == user)
        status = Counter(mine["status"].to_list())
        sub = mine.filter(pl.col("status") == "submitted").to_dicts()
        votes = Counter(r["vote"] for r in sub if r["vote"])
        ab = [r["better"] for r in sub if r["better"] in ("a", "b")]
        overlap = [r for r in sub if submitters[r[KEY]] >= 2 and resolved.get(r[KEY]) in VOTES]
        ratings = [r["rating"] for r in sub if r["rating"] is not None]
        out.append(
            {
                "user": user,
                "submitted": status.get("submitted", 0),
                "draft": status.get("draft", 0),
                "discarded": status.get("discarded", 0),
                "votes": {v: votes.get(v, 0) for v in VOTES},
                "picked_a_share": round(ab.count("a") / len(ab), 6) if ab else None,
                "overlap_items": len(overlap),
                "agrees_with_decision": (
                    round(sum(r["vote"] == resolved[r[KEY]] for r in overlap) / len(overlap), 6) if overlap else None
                ),
                "mean_rating": round(sum(ratings) / len(ratings), 6) if ratings else None,
                "corrections": sum(1 for r in sub if r.get("corrected")),
            }
        )
    return out
