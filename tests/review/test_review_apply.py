"""Resolution policy and applying decisions: swap, drop, corrections, ties, disputes, conservation."""

from __future__ import annotations

import json

import polars as pl
import pytest

from curate.errors import ConfigError, ConservationError
from curate.review.apply import (
    REASON_PENDING,
    REASON_REJECTED,
    ResolvePolicy,
    apply_decisions,
    resolve,
    resolve_pair,
)


def ans(user, vote, problems=(), rating=None, corrected=None, updated_at="2026-01-01T00:00:00"):
    return {"user": user, "vote": vote, "problems": list(problems), "rating": rating, "corrected": corrected,
            "updated_at": updated_at}


P = ResolvePolicy()


def test_majority_keeps_or_swaps():
    assert resolve_pair([ans("a", "chosen"), ans("b", "chosen")], P)["review_decision"] == "chosen"
    row = resolve_pair([ans("a", "rejected"), ans("b", "rejected"), ans("c", "chosen")], P)
    assert row["review_decision"] == "rejected" and row["review_swapped"] and row["__drop"] is None
    assert json.loads(row["review_vote_counts"]) == {"chosen": 1, "rejected": 2, "tie": 0, "both_bad": 0}


def test_both_bad_and_unsafe_drop():
    assert "both responses bad" in resolve_pair([ans("a", "both_bad")], P)["__drop"]
    row = resolve_pair([ans("a", "chosen", ["unsafe"]), ans("b", "chosen")], P)
    assert row["__drop"].startswith("flagged unsafe by 1 of 2")
    # majority rule for flags: one flag out of two is not enough
    assert resolve_pair([ans("a", "chosen", ["unsafe"]), ans("b", "chosen")],
                        ResolvePolicy(problem_votes="majority"))["__drop"] is None
    # a non-dropping problem is recorded but doesn't drop
    row = resolve_pair([ans("a", "chosen", ["truncated"])], P)
    assert row["__drop"] is None and row["review_problems"] == ["truncated"]


def test_tie_and_disagreement_policies():
    tie = [ans("a", "tie"), ans("b", "tie")]
    assert resolve_pair(tie, P)["__drop"] is None
    assert "tie policy is drop" in resolve_pair(tie, ResolvePolicy(tie="drop"))["__drop"]
    split = [ans("a", "chosen"), ans("b", "rejected")]
    row = resolve_pair(split, P)
    assert row["review_decision"] == "disputed" and row["__drop"] is None and not row["review_swapped"]
    assert "disagree" in resolve_pair(split, ResolvePolicy(disagreement="drop"))["__drop"]


def test_correction_only_from_agreeing_annotators_latest_wins():
    row = resolve_pair([
        ans("a", "chosen", corrected="old fix", updated_at="2026-01-01T00:00:01"),
        ans("b", "chosen", corrected="new fix ", updated_at="2026-01-01T00:00:02"),
        ans("c", "rejected", corrected="dissent fix", updated_at="2026-01-01T00:00:09"),
    ], P)
    assert row["review_corrected"] and row["__correction"] == "new fix"
    assert resolve_pair([ans("a", "chosen", corrected="x")], ResolvePolicy(corrections=False))["__correction"] is None
    assert resolve_pair([ans("a", "chosen", corrected="   ")], P)["review_corrected"] is False


def test_min_votes_leaves_pair_unreviewed():
    row = resolve_pair([ans("a", "both_bad")], ResolvePolicy(min_votes=2))
    assert row["review_decision"] is None and row["__drop"] is None and row["review_votes"] == 1


def test_policy_validation_via_config_build():
    from curate.config import build

    with pytest.raises(ConfigError, match="drop_problems"):
        build(ResolvePolicy, {"drop_problems": ["nonsense"]}, "review")
    with pytest.raises(ConfigError, match="tie"):
        build(ResolvePolicy, {"tie": "maybe"}, "review")


def _pairs(pairs_factory):
    return pairs_factory([
        {"prompt": "keep me", "chosen": "c0", "rejected": "r0", "chosen_score": 2.0, "rejected_score": 1.0},
        {"prompt": "swap me", "chosen": "c1", "rejected": "r1", "chosen_score": 2.0, "rejected_score": 1.0},
        {"prompt": "drop me", "chosen": "c2", "rejected": "r2"},
        {"prompt": "fix me", "chosen": "c3", "rejected": "r3"},
        {"prompt": "nobody saw me", "chosen": "c4", "rejected": "r4"},
        {"prompt": "unsafe", "chosen": "c5", "rejected": "r5"},
    ])


def _responses(pairs, votes):
    rows = []
    for i, (user, vote, problems, corrected) in votes:
        rows.append({"row_id": pairs["row_id"][i], "user": user, "status": "submitted", "vote": vote,
                     "problems": problems, "rating": None, "corrected": corrected, "updated_at": "t"})
    rows.append({"row_id": pairs["row_id"][4], "user": "x", "status": "draft", "vote": "both_bad",
                 "problems": [], "rating": None, "corrected": None, "updated_at": "t"})
    return pl.DataFrame(rows, schema={"row_id": pl.String, "user": pl.String, "status": pl.String, "vote": pl.String,
                                      "problems": pl.List(pl.String), "rating": pl.Int64, "corrected": pl.String,
                                      "updated_at": pl.String})


VOTES = [
    (0, ("a", "chosen", [], None)), (0, ("b", "chosen", [], None)),
    (1, ("a", "rejected", [], None)), (1, ("b", "rejected", [], None)),
    (2, ("a", "both_bad", [], None)), (2, ("b", "both_bad", [], None)),
    (3, ("a", "rejected", [], "r3, polished")),
    (5, ("a", "chosen", ["unsafe"], None)),
]


def test_apply_swaps_drops_corrects_and_conserves(pairs_factory):
    pairs = _pairs(pairs_factory)
    dec = resolve(_responses(pairs, VOTES), P)
    out = apply_decisions(pairs, dec, P)
    kept = {r["prompt"][0]["content"]: r for r in out.kept.to_dicts()}
    assert set(kept) == {"keep me", "swap me", "fix me", "nobody saw me"}
    assert kept["keep me"]["chosen"] == "c0" and not kept["keep me"]["review_swapped"]
    s = kept["swap me"]
    assert (s["chosen"], s["rejected"], s["chosen_score"], s["rejected_score"]) == ("r1", "c1", 1.0, 2.0)
    f = kept["fix me"]
    assert f["chosen"] == "r3, polished" and f["rejected"] == "c3" and f["review_replaced"] == "r3"
    assert f["review_swapped"] and f["review_corrected"]
    n = kept["nobody saw me"]  # a draft is not a vote
    assert n["review_decision"] is None and n["review_votes"] == 0 and n["chosen"] == "c4"
    assert out.rejects["reason"].to_list() == [REASON_REJECTED, REASON_REJECTED]
    assert set(out.rejects["stage"]) == {"review"}
    assert out.stats["pairs_in"] == 6 == out.stats["kept"] + out.stats["rejected"]
    assert out.stats["swapped"] == 2 and out.stats["corrected"] == 1 and out.stats["unreviewed"] == 1
    # row_id names the row (and its Argilla record): unchanged. pair_id is the content hash: recomputed where the
    # texts changed, exactly as ingest computes it; prompt_id (the prompt's hash) unchanged
    from curate.schema import with_ids

    assert out.kept["row_id"].to_list() + out.rejects["row_id"].to_list() == [
        pairs["row_id"][i] for i in (0, 1, 3, 4, 2, 5)
    ]
    before = dict(zip(pairs["row_id"], pairs["pair_id"]))
    for r in out.kept.to_dicts():
        changed = r["review_swapped"] or r["review_corrected"]
        assert (r["pair_id"] != before[r["row_id"]]) == changed, r["prompt"]
    assert out.kept["pair_id"].to_list() == with_ids(out.kept).collect()["pair_id"].to_list()
    assert out.kept["prompt_id"].to_list() == with_ids(out.kept).collect()["prompt_id"].to_list()
    assert set(out.rejects["pair_id"]) <= set(pairs["pair_id"])  # a dropped pair is reported as it came in
    assert out.kept.columns[: len(pairs.columns)] == pairs.columns


def test_only_reviewed_rejects_pending(pairs_factory):
    pairs = _pairs(pairs_factory)
    policy = ResolvePolicy(only_reviewed=True)
    out = apply_decisions(pairs, resolve(_responses(pairs, VOTES), policy), policy)
    assert sorted(out.rejects["reason"].to_list()) == [REASON_PENDING, REASON_REJECTED, REASON_REJECTED]
    assert out.kept.height == 3


def test_conservation_error_is_raised(pairs_factory):
    pairs = _pairs(pairs_factory)
    dec = resolve(_responses(pairs, VOTES), P)
    # a decisions table with a duplicated pair would invent rows: the law must catch it
    with pytest.raises(ConservationError):
        apply_decisions(pairs, pl.concat([dec, dec.head(1)]), P)


def test_nothing_reviewed_keeps_everything(pairs_factory):
    from curate.review.agreement import agreement_report, annotator_stats
    from curate.review.pull import RESPONSES_SCHEMA

    pairs = _pairs(pairs_factory)
    empty = pl.DataFrame(schema=RESPONSES_SCHEMA)
    dec = resolve(empty, P)
    out = apply_decisions(pairs, dec, P)
    assert out.kept.height == pairs.height and out.rejects.height == 0
    assert out.kept["chosen"].to_list() == pairs["chosen"].to_list()
    assert out.stats["unreviewed"] == pairs.height and out.stats["decisions"] == {}
    rep = agreement_report(empty)
    assert rep["better"] == {"level": "nominal", "items": 0, "percent": None, "alpha": None}
    assert annotator_stats(empty, dec) == []


def test_both_bad_with_a_correction_keeps_the_corrected_pair(pairs_factory):
    # what the guidelines promise: "dropped unless someone writes a corrected reply"
    row = resolve_pair([ans("a", "both_bad", corrected="a good reply"), ans("b", "both_bad")], P)
    assert row["__drop"] is None and row["review_decision"] == "both_bad" and row["__correction"] == "a good reply"
    # a correction from an annotator who voted otherwise doesn't rescue it
    row = resolve_pair([ans("a", "both_bad"), ans("b", "both_bad"), ans("c", "chosen", corrected="x")], P)
    assert "both responses bad" in row["__drop"]
    assert "both responses bad" in resolve_pair([ans("a", "both_bad", corrected="x")],
                                                ResolvePolicy(corrections=False))["__drop"]
    pairs = pairs_factory([{"prompt": "p", "chosen": "bad one", "rejected": "bad two", "chosen_score": 3.0}])
    votes = [(0, ("a", "both_bad", [], "a good reply"))]
    out = apply_decisions(pairs, resolve(_responses_only(pairs, votes), P), P)
    kept = out.kept.to_dicts()[0]
    assert (kept["chosen"], kept["rejected"], kept["review_replaced"]) == ("a good reply", "bad two", "bad one")
    assert kept["review_corrected"] and kept["chosen_score"] is None and out.rejects.height == 0


def _responses_only(pairs, votes):
    rows = [{"row_id": pairs["row_id"][i], "user": user, "status": "submitted", "vote": vote, "problems": problems,
             "rating": None, "corrected": corrected, "updated_at": "t"} for i, (user, vote, problems, corrected) in votes]
    return pl.DataFrame(rows, schema={"row_id": pl.String, "user": pl.String, "status": pl.String, "vote": pl.String,
                                      "problems": pl.List(pl.String), "rating": pl.Int64, "corrected": pl.String,
                                      "updated_at": pl.String})


def test_min_votes_defaults_to_the_datasets_min_submitted():
    two = [ans("a", "rejected")]
    assert ResolvePolicy().votes_needed(2) == 2 and ResolvePolicy(min_votes=1).votes_needed(2) == 1
    # one vote of two wanted: not decided (a pair must not be swapped while the other annotator has a draft)
    assert resolve_pair(two, ResolvePolicy().resolved(2))["review_decision"] is None
    assert resolve_pair(two, ResolvePolicy().resolved(1))["review_swapped"]
    with pytest.raises(ValueError, match="min_votes"):
        ResolvePolicy(min_votes=0).validate()


def _lang_pairs(pairs_factory):
    from curate.stages import language

    rows = [
        {"prompt": "請問台灣的首都在哪裡？", "chosen": "台灣的首都是臺北市。", "rejected": "不知道。"},
        {"prompt": "请解释什么是机器学习。", "chosen": "机器学习是人工智能的一个分支。", "rejected": "不清楚。"},
        {"prompt": "请解释什么是量子计算。", "chosen": "答案一很差。", "rejected": "答案二也很差。"},
    ]
    pairs = pairs_factory(rows)
    return language.run(pairs, language.Config()).kept.collect(), language.Config()


def test_corrections_go_through_the_language_stage(pairs_factory):
    from curate.stages import language

    pairs, cfg = _lang_pairs(pairs_factory)
    assert pairs["lang_chosen"].to_list() == ["zh-Hant", "zh-Hans", "zh-Hans"]
    votes = [
        (0, ("a", "chosen", [], "台湾的首都是台北市，这是简体字写的答案。")),  # Simplified correction, Traditional pair
        (1, ("a", "chosen", [], "Machine learning is a branch of artificial intelligence that learns from data.")),
        (2, ("a", "both_bad", [], "Quantum computing uses qubits, which can hold superpositions of states.")),
    ]
    dec = resolve(_responses_only(pairs, votes), P)
    out = apply_decisions(pairs, dec, P, language=cfg)
    kept = {r["prompt"][0]["content"][:4]: r for r in out.kept.to_dicts()}
    hant = kept["請問台灣"]
    assert hant["review_corrected"] and hant["lang_chosen"] == "zh-Hans"  # labelled again, not left zh-Hant
    assert hant["lang_prompt"] == "zh-Hant" and hant["review_correction_refused"] is None
    en = kept["请解释什"]  # an English correction to a Chinese question is set aside; the vote stands
    assert not en["review_corrected"] and en["chosen"] == "机器学习是人工智能的一个分支。"
    assert en["review_correction_refused"] == "language_mismatch: prompt is zh-Hans, corrected reply is en"
    assert en["lang_chosen"] == "zh-Hans"
    # both bad, and its only correction refused: dropped, saying why
    assert out.rejects.height == 1 and "corrected reply was set aside" in out.rejects["detail"][0]
    assert out.stats["corrections_refused"] == 2 and out.stats["corrected"] == 1
    # the stage's flag mode keeps a mismatched pair (labelled) instead of refusing the correction
    flag = language.Config(mismatch="flag")
    out = apply_decisions(pairs, dec, P, language=flag)
    assert out.stats["corrections_refused"] == 0 and "mismatch" in out.kept["lang"].to_list()
    # without a language stage in the run: no check, corrections used as written
    assert apply_decisions(pairs, dec, P).stats["corrected"] == 3


def test_a_swap_carries_the_per_reply_language_labels(pairs_factory):
    from curate.stages import language

    rows = [{"prompt": "Explain photosynthesis in one sentence, please.",
             "chosen": "光合作用是植物利用阳光把二氧化碳和水变成糖的过程。",
             "rejected": "Plants turn sunlight, water and carbon dioxide into sugar and oxygen."}]
    pairs = language.run(pairs_factory(rows), language.Config(mismatch="flag")).kept.collect()
    assert (pairs["lang_chosen"][0], pairs["lang_rejected"][0]) == ("zh-Hans", "en")
    out = apply_decisions(pairs, resolve(_responses_only(pairs, [(0, ("a", "rejected", [], None))]), P), P)
    kept = out.kept.to_dicts()[0]
    assert kept["review_swapped"] and kept["chosen"].startswith("Plants")
    assert (kept["lang_chosen"], kept["lang_rejected"]) == ("en", "zh-Hans")  # the labels follow their replies
    assert kept["lang_prompt"] == pairs["lang_prompt"][0] and kept["row_id"] == pairs["row_id"][0]


def test_corrections_follow_the_stages_script_conversion(pairs_factory):
    from curate.stages import language

    pairs, _ = _lang_pairs(pairs_factory)
    votes = [(1, ("a", "chosen", [], "機器學習是人工智慧的一個分支，這是繁體字。"))]
    out = apply_decisions(pairs, resolve(_responses_only(pairs, votes), P), P, language=language.Config(convert="t2s"))
    fixed = next(r for r in out.kept.to_dicts() if r["review_corrected"])
    assert fixed["chosen"] == "机器学习是人工智慧的一个分支，这是繁体字。" and fixed["lang_chosen"] == "zh-Hans"


def test_upsampling_copies_follow_their_originals_decision(pairs_factory):
    pairs = _pairs(pairs_factory).with_columns(pl.lit(None, dtype=pl.String).alias("balance_copy_of"))
    copy = pairs.slice(1, 1).with_columns(pl.lit("copy-1").alias("row_id"), pl.col("row_id").alias("balance_copy_of"))
    both = pl.concat([pairs, copy])
    out = apply_decisions(both, resolve(_responses(pairs, VOTES), P), P)
    rows = {r["row_id"]: r for r in out.kept.to_dicts()}
    assert rows["copy-1"]["review_swapped"] and rows["copy-1"]["chosen"] == "r1"  # swapped like the original
    assert out.stats["pairs_in"] == 7 == out.stats["kept"] + out.stats["rejected"]
