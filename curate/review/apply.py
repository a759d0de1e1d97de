"""Resolve annotators' answers per pair, and apply the decisions to the pairs with the conservation law.

Resolution (per pair, over its *submitted* responses; drafts and discarded answers don't vote):
1. Fewer than `min_votes` submitted answers → unreviewed: kept unchanged (review_decision null), or rejected
   as `review_pending` with `only_reviewed`.
2. A problem listed in `drop_problems` (default: unsafe) flagged by any / a majority of annotators → dropped.
3. The votes (already unblinded to chosen / rejected / tie / both_bad) decide by strict plurality:
   chosen → keep; rejected → keep with chosen/rejected (and their scores) swapped; both_bad → dropped;
   tie → the `tie` policy; no strict plurality (e.g. 1 vs 1) → "disputed", the `disagreement` policy.
4. A kept pair whose annotators wrote a corrected better reply gets it as `chosen` (the replaced reply is kept
   in `review_replaced`). Only corrections from annotators whose vote matches the decision count (any, for a
   kept tie or disputed pair); among several, the most recently updated wins (then the user name), so the
   result is deterministic.

Every dropped pair lands in the rejects table with stage "review", reason `review_rejected` (or
`review_pending`) and a detail a person can read. `pair_id` is kept unchanged after a swap or correction: it
is the pair's provenance link back to its Argilla record and the earlier stages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from curate.errors import ConservationError
from curate.review.settings import PROBLEM_LABELS, VOTE_BOTH_BAD, VOTE_CHOSEN, VOTE_REJECTED, VOTE_TIE, VOTES
from curate.stage import reject

STAGE = "review"
REASON_REJECTED = "review_rejected"  # both bad, flagged unsafe, or dropped by the tie/disagreement policy
REASON_PENDING = "review_pending"  # not reviewed yet, and only reviewed pairs were asked for

DECISION_DISPUTED = "disputed"

DECISION_COLUMNS = pl.Schema(
    {
        "pair_id": pl.String,
        "review_decision": pl.String,
        "review_votes": pl.Int64,
        "review_vote_counts": pl.String,
        "review_swapped": pl.Boolean,
        "review_corrected": pl.Boolean,
        "review_problems": pl.List(pl.String),
        "review_rating": pl.Float64,
        "review_annotators": pl.List(pl.String),
        "__drop": pl.String,
        "__correction": pl.String,
    }
)
REVIEW_COLUMNS = [n for n in DECISION_COLUMNS.names() if not n.startswith("__") and n != "pair_id"] + ["review_replaced"]


@dataclass(frozen=True)
class ResolvePolicy:
    """How answers become decisions. Each option is also a `curate review pull` flag."""

    tie: Literal["keep", "drop"] = field(
        default="keep", metadata={"help": "a pair resolved as Tie: keep it as the source labelled it, or drop it"}
    )
    disagreement: Literal["keep", "drop"] = field(
        default="keep",
        metadata={"help": "no strict majority (e.g. 1 vs 1): keep the source's label (decision 'disputed') or drop"},
    )
    drop_problems: tuple[str, ...] = field(
        default=("unsafe",), metadata={"help": "problem labels that drop a pair when flagged"}
    )
    problem_votes: Literal["any", "majority"] = field(
        default="any", metadata={"help": "flags needed to drop: any annotator, or a majority of those who submitted"}
    )
    min_votes: int = field(default=1, metadata={"help": "submitted answers a pair needs to count as reviewed"})
    only_reviewed: bool = field(
        default=False, metadata={"help": "reject unreviewed pairs (reason review_pending) instead of keeping them"}
    )
    corrections: bool = field(default=True, metadata={"help": "replace chosen by an annotator's corrected reply"})

    def validate(self) -> None:
        unknown = sorted(set(self.drop_problems) - set(PROBLEM_LABELS))
        if unknown:
            raise ValueError(f"drop_problems: unknown label {unknown[0]!r} (known: {', '.join(PROBLEM_LABELS)})")
        if self.min_votes < 1:
            raise ValueError(f"min_votes must be at least 1, got {self.min_votes}")


def resolve_pair(answers: list[dict[str, Any]], policy: ResolvePolicy) -> dict[str, Any]:
    """One pair's submitted answers → its decision row (see the module docstring for the rules).

    Each answer: user, vote (chosen/rejected/tie/both_bad), problems (list), rating (int|None), corrected
    (str|None), updated_at (sortable|None)."""
    answers = [a for a in answers if a.get("vote") in VOTES]
    n = len(answers)
    counts = Counter(a["vote"] for a in answers)
    flags = Counter(p for a in answers for p in set(a.get("problems") or []))
    ratings = [a["rating"] for a in answers if a.get("rating") is not None]
    row: dict[str, Any] = {
        "review_decision": None,
        "review_votes": n,
        "review_vote_counts": _counts_json(counts),
        "review_swapped": False,
        "review_corrected": False,
        "review_problems": sorted(flags),
        "review_rating": (sum(ratings) / len(ratings)) if ratings else None,
        "review_annotators": sorted(a["user"] for a in answers),
        "__drop": None,
        "__correction": None,
    }
    if n < policy.min_votes:
        return row
    top = max(counts.values())
    winners = sorted(v for v, c in counts.items() if c == top)
    decision = winners[0] if len(winners) == 1 else DECISION_DISPUTED
    row["review_decision"] = decision

    need = 1 if policy.problem_votes == "any" else n // 2 + 1
    flagged = [p for p in policy.drop_problems if flags.get(p, 0) >= need]
    if flagged:
        row["__drop"] = f"flagged {', '.join(flagged)} by {flags[flagged[0]]} of {n} annotators"
    elif decision == VOTE_BOTH_BAD:
        row["__drop"] = f"both responses bad ({counts[VOTE_BOTH_BAD]} of {n} votes)"
    elif decision == VOTE_TIE and policy.tie == "drop":
        row["__drop"] = f"tie ({counts[VOTE_TIE]} of {n} votes) and tie policy is drop"
    elif decision == DECISION_DISPUTED and policy.disagreement == "drop":
        row["__drop"] = f"annotators disagree ({_counts_text(counts)}) and disagreement policy is drop"
    if row["__drop"] is not None:
        return row

    row["review_swapped"] = decision == VOTE_REJECTED
    if policy.corrections:
        agreeing = decision not in (VOTE_CHOSEN, VOTE_REJECTED)
        pool = [a for a in answers if (a.get("corrected") or "").strip() and (agreeing or a["vote"] == decision)]
        if pool:
            best = max(pool, key=lambda a: (str(a.get("updated_at") or ""), a["user"]))
            row["__correction"] = best["corrected"].strip()
            row["review_corrected"] = True
    return row


def _counts_json(counts: Counter) -> str:
    import json

    return json.dumps({v: counts.get(v, 0) for v in VOTES}, sort_keys=False)


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{v} {counts[v]}" for v in VOTES if counts.get(v))


def resolve(responses: pl.DataFrame, policy: ResolvePolicy) -> pl.DataFrame:
    """Long responses (pair_id, user, status, vote, problems, rating, corrected, updated_at) → one decision
    row per pair that has any submitted answer."""
    sub = responses.filter(pl.col("status") == "submitted") if responses.height else responses
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in sub.sort("pair_id", "user").to_dicts() if sub.height else []:
        grouped.setdefault(r["pair_id"], []).append(r)
    rows = [{"pair_id": pid, **resolve_pair(answers, policy)} for pid, answers in sorted(grouped.items())]
    return pl.DataFrame(rows, schema=DECISION_COLUMNS) if rows else pl.DataFrame(schema=DECISION_COLUMNS)


@dataclass(frozen=True)
class Applied:
    kept: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, Any]


def apply_decisions(pairs: pl.DataFrame, decisions: pl.DataFrame, policy: ResolvePolicy) -> Applied:
    """Pairs + decisions → kept (swapped/corrected) and rejected pairs, checking rows in = kept + rejected."""
    joined = pairs.join(decisions, on="pair_id", how="left", maintain_order="left")
    joined = joined.with_columns(
        pl.col("review_votes").fill_null(0),
        pl.col("review_swapped").fill_null(False),
        pl.col("review_corrected").fill_null(False),
        pl.col("review_problems").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("review_annotators").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    )
    reviewed = pl.col("review_decision").is_not_null()
    dropped = pl.col("__drop").is_not_null()
    pending = ~reviewed & pl.lit(policy.only_reviewed)

    swap = pl.col("review_swapped")
    new_chosen = pl.when(swap).then(pl.col("rejected")).otherwise(pl.col("chosen"))
    new_rejected = pl.when(swap).then(pl.col("chosen")).otherwise(pl.col("rejected"))
    corrected = pl.col("review_corrected")
    kept = (
        joined.filter(~dropped & ~pending)
        .with_columns(
            pl.when(corrected).then(pl.col("__correction")).otherwise(new_chosen).alias("chosen"),
            new_rejected.alias("rejected"),
            pl.when(swap).then(pl.col("rejected_score")).otherwise(pl.col("chosen_score")).alias("chosen_score"),
            pl.when(swap).then(pl.col("chosen_score")).otherwise(pl.col("rejected_score")).alias("rejected_score"),
            pl.when(corrected).then(new_chosen).otherwise(pl.lit(None, dtype=pl.String)).alias("review_replaced"),
        )
        # a corrected chosen has no source score any more
        .with_columns(pl.when(corrected).then(None).otherwise(pl.col("chosen_score")).alias("chosen_score"))
        .drop("__drop", "__correction")
    )
    dropped_rows = reject(
        joined.filter(dropped).lazy().with_columns(pl.lit(None, dtype=pl.String).alias("review_replaced")),
        STAGE,
        REASON_REJECTED,
        pl.col("__drop"),
    ).drop("__drop", "__correction")
    pending_rows = reject(
        joined.filter(pending & ~dropped).lazy().with_columns(pl.lit(None, dtype=pl.String).alias("review_replaced")),
        STAGE,
        REASON_PENDING,
        pl.lit("not reviewed yet (only reviewed pairs were kept)"),
    ).drop("__drop", "__correction")
    rejects = pl.concat([dropped_rows, pending_rows]).collect()
    if pairs.height != kept.height + rejects.height:
        raise ConservationError(
            f"review: {pairs.height} pairs in but {kept.height} kept + {rejects.height} rejected"
        )
    decisions_count = Counter(kept["review_decision"].to_list() + rejects["review_decision"].to_list())
    stats = {
        "pairs_in": pairs.height,
        "kept": kept.height,
        "rejected": rejects.height,
        "reviewed": int(joined.select(reviewed.sum()).item()),
        "unreviewed": int(joined.select((~reviewed).sum()).item()),
        "swapped": int(kept["review_swapped"].sum()),
        "corrected": int(kept["review_corrected"].sum()),
        "decisions": {str(k): v for k, v in sorted(decisions_count.items(), key=lambda kv: str(kv[0])) if k is not None},
        "reasons": dict(sorted(Counter(rejects["reason"].to_list()).items())),
    }
    return Applied(kept=kept, rejects=rejects, stats=stats)
