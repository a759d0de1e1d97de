"""Agreement maths: percent agreement and Krippendorff's alpha against hand-worked values."""

from __future__ import annotations

import polars as pl
import pytest

from curate.review.agreement import (
    agreement_report,
    annotator_stats,
    krippendorff_alpha,
    percent_agreement,
)


def test_percent_agreement_pairs():
    # unit 1: 2 of 2 agree → 1.0; unit 2: a,a,b → 2 agreeing ordered pairs of 6 → 1/3; single answers ignored
    assert percent_agreement([["x", "x"], ["a", "a", "b"], ["lonely"]]) == pytest.approx((1 + 1 / 3) / 2)
    assert percent_agreement([["only"]]) is None


def test_alpha_perfect_and_undefined():
    perfect = [(i, u, "A" if i % 2 else "B") for i in range(6) for u in ("u1", "u2")]
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    same = [(i, u, "A") for i in range(4) for u in ("u1", "u2")]
    assert krippendorff_alpha(same) is None  # no variation: undefined, not a fake 1.0
    assert krippendorff_alpha([(1, "u1", "A"), (2, "u2", "B")]) is None  # no item with two answers


def test_alpha_matches_hand_computed_nominal():
    # 2 coders, 4 items: (a,a) (a,b) (b,b) (b,b). Coincidences: a-a 2, a-b 1, b-a 1, b-b 4; n=8, n_a=3, n_b=5.
    # D_o = 2/8; D_e = 2*3*5/(8*7) = 30/56; alpha = 1 - (2/8)/(30/56) = 1 - 56/120 = 0.5333…
    data = [(1, "u1", "a"), (1, "u2", "a"), (2, "u1", "a"), (2, "u2", "b"),
            (3, "u1", "b"), (3, "u2", "b"), (4, "u1", "b"), (4, "u2", "b")]
    assert krippendorff_alpha(data) == pytest.approx(1 - 56 / 120, abs=1e-6)


def test_alpha_ordinal_penalises_far_disagreement_more():
    near = [(1, "u1", 4), (1, "u2", 5), (2, "u1", 1), (2, "u2", 1), (3, "u1", 3), (3, "u2", 3)]
    far = [(1, "u1", 1), (1, "u2", 5), (2, "u1", 4), (2, "u2", 4), (3, "u1", 3), (3, "u2", 3)]
    assert krippendorff_alpha(near, "ordinal") > krippendorff_alpha(far, "ordinal")


def _responses(rows):
    return pl.DataFrame(
        rows,
        orient="row",
        schema={"row_id": pl.String, "user": pl.String, "status": pl.String, "better": pl.String,
                "vote": pl.String, "problems": pl.List(pl.String), "rating": pl.Int64, "corrected": pl.String},
    )


def test_report_and_annotator_stats():
    r = _responses([
        ("p1", "ann1", "submitted", "a", "chosen", ["unsafe"], 5, None),
        ("p1", "ann2", "submitted", "b", "chosen", ["unsafe"], 4, None),
        ("p2", "ann1", "submitted", "a", "rejected", [], None, "fixed"),
        ("p2", "ann2", "submitted", "a", "chosen", [], None, None),
        ("p3", "ann1", "draft", "a", "chosen", [], None, None),
    ])
    rep = agreement_report(r)
    assert rep["better"]["items"] == 2 and rep["better"]["percent"] == pytest.approx(0.5)
    assert rep["problems"]["unsafe"]["percent"] == pytest.approx(1.0)
    assert rep["rating"]["items"] == 1
    decisions = pl.DataFrame({"row_id": ["p1", "p2"], "review_decision": ["chosen", "disputed"]})
    stats = {s["user"]: s for s in annotator_stats(r, decisions)}
    assert stats["ann1"]["submitted"] == 2 and stats["ann1"]["draft"] == 1
    assert stats["ann1"]["picked_a_share"] == 1.0 and stats["ann2"]["picked_a_share"] == 0.5
    # only p1 has a clear decision; both agreed with it
    assert stats["ann1"]["overlap_items"] == 1 and stats["ann1"]["agrees_with_decision"] == 1.0
    assert stats["ann1"]["corrections"] == 1 and stats["ann2"]["mean_rating"] == 4.0
