"""The stage contract: every stage module exposes `run(frame, cfg) -> StageResult`.

A stage module (see curate/stages/) defines:
    NAME: str                      the key of its table in pipeline files
    NEEDS: tuple[str, ...]         columns it reads
    ADDS: tuple[str, ...]          columns it adds to kept rows
    Config                         a frozen dataclass; each field documents itself with `metadata={"help": ...}`
    run(frame, cfg) -> StageResult
    html_section(stats) -> str     optional: extra HTML for report.html (use curate.report's chart helpers)
    ROW_LOCAL: bool                optional: True when each row's fate depends on that row alone, so an engine
                                   (curate/engines/) may run `run` on batches and concatenate the results in order
    merge_stats(parts) -> dict     with ROW_LOCAL and non-empty stats: the whole input's stats from the batches'

Frames are Polars LazyFrames so the runner can stream them to Parquet; a stage that needs global information
(dedup, balance) collects only the columns it needs and joins its decisions back lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from curate.schema import REJECT_COLUMNS

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then


@dataclass(frozen=True)
class StageResult:
    """What a stage hands back: rows kept, rows rejected (with stage/reason/detail) and a dict of stats."""

    kept: pl.LazyFrame
    rejects: pl.LazyFrame
    stats: dict[str, Any] = field(default_factory=dict)

    def collect(self) -> CollectedResult:
        kept, rejects = pl.collect_all([self.kept, self.rejects])
        return CollectedResult(kept=kept, rejects=rejects, stats=self.stats)


@dataclass(frozen=True)
class CollectedResult:
    """A StageResult with its frames materialised (tests, small data)."""

    kept: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, Any]

    @property
    def rows_in(self) -> int:
        return self.kept.height + self.rejects.height

    @property
    def kept_ratio(self) -> float:
        return self.kept.height / self.rows_in if self.rows_in else 1.0

    @property
    def rejected_ratio(self) -> float:
        return 1.0 - self.kept_ratio if self.rows_in else 0.0

    def reasons(self) -> dict[str, int]:
        if self.rejects.height == 0:
            return {}
        counts = self.rejects.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def reject(frame: pl.LazyFrame, stage: str, reason: str | pl.Expr, detail: str | pl.Expr) -> pl.LazyFrame:
    """Tag rows of `frame` as rejected: adds `stage`, `reason`, `detail` (a literal or an expression)."""
    return frame.with_columns(
        pl.lit(stage, dtype=pl.String).alias("stage"),
        _expr(reason).cast(pl.String).alias("reason"),
        _expr(detail).cast(pl.String).alias("detail"),
    )


def no_rejects(frame: pl.LazyFrame) -> pl.LazyFrame:
    """An empty rejects frame with the columns `frame` has plus stage/reason/detail."""
    return frame.clear().with_columns([pl.lit(None, dtype=t).alias(n) for n, t in REJECT_COLUMNS.items()])


def split(frame: pl.LazyFrame, stage: str, checks: list[tuple[str, pl.Expr, pl.Expr | str]]) -> StageResult:
    """Run row checks in order; the first failing check names the reason.

    `checks` is a list of (reason, failed_expr, detail). A row is kept when no check fails. Handy for stages
    whose checks are row-local (clean); it stays lazy and streams.
    """
    if not checks:
        return StageResult(frame, no_rejects(frame))
    reasons: Then | ChainedThen = pl.when(checks[0][1]).then(pl.lit(checks[0][0]))
    details: Then | ChainedThen = pl.when(checks[0][1]).then(_expr(checks[0][2]))
    for code, failed, text in checks[1:]:
        reasons = reasons.when(failed).then(pl.lit(code))
        details = details.when(failed).then(_expr(text))
    reason = reasons.otherwise(pl.lit(None, dtype=pl.String))
    detail = details.otherwise(pl.lit(None, dtype=pl.String))
    tagged = frame.with_columns(reason.alias("__reason"), detail.alias("__detail"))
    kept = tagged.filter(pl.col("__reason").is_null()).drop("__reason", "__detail")
    rejects = reject(
        tagged.filter(pl.col("__reason").is_not_null()), stage, pl.col("__reason"), pl.col("__detail")
    ).drop("__reason", "__detail")
    return StageResult(kept, rejects)


def _expr(v: pl.Expr | str) -> pl.Expr:
    return v if isinstance(v, pl.Expr) else pl.lit(v, dtype=pl.String)
