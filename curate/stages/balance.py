"""Balance stage: reach a target language mix (e.g. 70% Chinese, 30% English) by downsampling, seeded.

Why: a bilingual chat model's builder chooses the mix instead of inheriting whatever the sources happened to
hold. Rows are only dropped (never duplicated) unless `upsample = true`.

How, in order:
1. Groups. Each pair's `lang` (from the language stage) maps to a quota group: zh-Hans and zh-Hant form `zh`
   unless the target names `zh-Hans` / `zh-Hant` separately; `en` is `en`. `mixed`, `other` and `mismatch`
   follow their policy: `keep` (kept, outside the quota), `drop` (rejected, reason `balance_language_dropped`)
   or `count` (a quota group of its own; the target must name it). A quota group the target doesn't name has
   target 0: all its rows are dropped.
2. Source caps (`max_per_source`, `source_caps`): a source over its cap loses rows, each language keeping its
   share within the source.
3. Quotas. The target is a goal. First the groups it can be balanced around: a target group the input lacks
   (no rows) or holds too few of (its share of the quota rows is below `scarce_below` times its target share,
   e.g. under 3% for a 30% target) is reported and left out, its rows kept, and the other target groups' shares
   are renormalised among themselves — so a Chinese-only folder keeps all its rows instead of being cut for an
   English share it can't have. Downsampling: the largest total the (renormalised) target allows is
   min(rows_g / target_g); each group's quota is that total times its target, rounded by largest remainder (so
   the achieved mix is within one row of the target), then capped by `max_rows` (counting rows kept outside the
   quota). If reaching the target would drop more than `max_drop_fraction` of the rows entering the stage, the
   stage keeps the closest reachable mix instead: it drops rows only from the groups furthest above their
   target share (a common "water level": each group keeps min(rows_g, L * target_g) with the smallest L the
   budget allows), so no group under its share loses a row and at most `max_drop_fraction` of the rows go; the
   stats and report.html say which mix was reached and what the target would have cost. `strict = true`
   instead fails (exit 2) with that reachable mix, and on a missing target group. Upsampling (`upsample =
   true`): the total is max(rows_g / target_g) (or `max_rows`); groups under their quota get copies of their
   rows, the rest are downsampled.
4. Which rows go: within a group, each (source, label) stratum keeps its share of the group (largest
   remainder), so every source keeps its share within its language and zh-Hans/zh-Hant keep theirs. Within a
   source, rows are dropped in this order: members of larger near-duplicate clusters first (`dup_cluster_size`,
   when the dedup stage ran), then lower score margins (chosen_score - rejected_score, when scores exist; a
   missing margin counts as the group's median), then a seeded random order. Copies (upsampling) are taken in
   the reverse order: smallest clusters, widest margins first.

Config: see `Config`. Input columns: lang, source (+ dup_cluster_size, chosen_score, rejected_score when
present). Output columns: balance_copy_of (null for original rows; for a copy, the row_id of the row it
copies — a copy keeps the original's pair_id, the content hash, and gets a fresh row_id derived from the
original's and the copy number, so row ids stay unique).
Reasons: `balance_downsampled` (detail names the quota or cap that dropped the row), `balance_language_dropped`.

Conservation with upsampling: rows out = rows kept + rows rejected − copies; `stats["copies"]` says how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from curate.errors import ConfigError, InputError
from curate.schema import derived_id
from curate.stage import StageResult, no_rejects, reject

NAME = "balance"
NEEDS = ("lang", "source")
ADDS = ("balance_copy_of",)

BALANCE_DOWNSAMPLED = "balance_downsampled"
BALANCE_LANGUAGE_DROPPED = "balance_language_dropped"
BALANCE_LENGTH_BIAS = "balance_length_bias"
REASONS = (BALANCE_DOWNSAMPLED, BALANCE_LANGUAGE_DROPPED, BALANCE_LENGTH_BIAS)

Policy = Literal["keep", "drop", "count"]
_QUOTA_KEYS = ("zh", "zh-Hans", "zh-Hant", "en", "mixed", "other", "mismatch")
_EPS = 1e-9


@dataclass(frozen=True)
class Config:
    target: dict[str, float] = field(
        default_factory=lambda: {"zh": 0.5, "en": 0.5},
        metadata={"help": "Target share per language group, summing to 1: zh (zh-Hans + zh-Hant) or zh-Hans and "
                  "zh-Hant separately, en, and mixed/other/mismatch when their policy is 'count'."},
    )
    mixed: Policy = field(
        default="keep",
        metadata={"help": "Pairs labelled mixed: 'keep' (outside the quota), 'drop', or 'count' as a group."},
    )
    other: Policy = field(default="keep", metadata={"help": "Pairs labelled other: keep / drop / count."})
    mismatch: Policy = field(
        default="drop", metadata={"help": "Pairs flagged mismatch by the language stage: keep / drop / count."}
    )
    upsample: bool = field(
        default=False,
        metadata={"help": "Reach the target by copying rows of under-represented groups instead of dropping "
                  "(copies are marked in balance_copy_of and get fresh pair ids)."},
    )
    max_rows: int | None = field(
        default=None, metadata={"help": "At most this many pairs leave the stage (quota rows + rows kept outside)."}
    )
    max_per_source: int | None = field(
        default=None, metadata={"help": "At most this many pairs from any one source (applied before the quota)."}
    )
    source_caps: dict[str, int] = field(
        default_factory=dict,
        metadata={"help": "Per-source caps by source or by file name, e.g. { \"big.jsonl\" = 1000 }; they override "
                  "max_per_source (caps that match no source are listed in the stats)."},
    )
    max_drop_fraction: float = field(
        default=0.5,
        metadata={"help": "Never drop more than this share of the rows entering the stage to reach the target: "
                  "when the target needs more, the closest mix within this budget is kept and reported "
                  "(strict = true: fail instead)."},
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Fail (exit 2, naming the reachable mix) when the target can't be met within "
                  "max_drop_fraction or names a group the input lacks, instead of keeping the closest mix."},
    )
    scarce_below: float = field(
        default=0.1,
        metadata={"help": "A target group whose share of the rows is below this fraction of its target share "
                  "(e.g. under 3% for a 30% target) is too scarce to balance around: it is reported, its rows "
                  "are kept, and the other groups are balanced among themselves (not applied when strict)."},
    )
    prefer_drop_duplicates: bool = field(
        default=True, metadata={"help": "Drop members of larger near-duplicate clusters first (dup_cluster_size)."}
    )
    prefer_drop_low_margin: bool = field(
        default=True, metadata={"help": "Then drop pairs with a lower chosen_score - rejected_score first."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random order among otherwise equal rows."})
    length_balance: float | None = field(
        default=None,
        metadata={"min": 0.5, "help": "Even out length bias before the quotas: per language, at most this share of "
                  "pairs (e.g. 0.6) may have the longer reply as chosen, and at most this share the shorter one; "
                  "pairs on the over-represented side go first by length ratio (reason balance_length_bias). "
                  "Unset: off."},
    )

    def validate(self) -> None:
        if not self.target:
            raise ValueError("target is empty; e.g. target = { zh = 0.7, en = 0.3 }")
        for key, share in self.target.items():
            if key not in _QUOTA_KEYS:
                raise ValueError(f"target: unknown group {key!r} (known: {', '.join(_QUOTA_KEYS)})")
            if share < 0:
                raise ValueError(f"target.{key}: share must be >= 0, got {share}")
        if "zh" in self.target and ("zh-Hans" in self.target or "zh-Hant" in self.target):
            raise ValueError("target: name either zh or zh-Hans/zh-Hant, not both")
        total = sum(self.target.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"target shares must sum to 1, they sum to {total:g}")
        for name in ("mixed", "other", "mismatch"):
            policy = getattr(self, name)
            if policy == "count" and name not in self.target:
                raise ValueError(f"{name} = 'count' needs a share for {name!r} in target")
            if policy != "count" and name in self.target:
                raise ValueError(f"target names {name!r} but {name} = {policy!r}; set {name} = 'count'")
        if not 0.0 <= self.max_drop_fraction <= 1.0:
            raise ValueError(f"max_drop_fraction must be within [0, 1], got {self.max_drop_fraction}")
        if not 0.0 <= self.scarce_below < 1.0:
            raise ValueError(f"scarce_below must be within [0, 1), got {self.scarce_below}")
        for name in ("max_rows", "max_per_source"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for src, cap in self.source_caps.items():
            if cap < 0:
                raise ValueError(f"source_caps.{src}: must be >= 0, got {cap}")
        if self.length_balance is not None and not 0.5 <= self.length_balance < 1.0:
            raise ValueError(f"length_balance must be within [0.5, 1), got {self.length_balance}")


def group_of(lang: str | None, cfg: Config) -> str | None:
    """Quota group of a pair label; None = kept outside the quota; "" = dropped by policy."""
    if lang in ("zh-Hans", "zh-Hant"):
        return lang if ("zh-Hans" in cfg.target or "zh-Hant" in cfg.target) else "zh"
    if lang == "en":
        return "en"
    policy = getattr(cfg, lang, "keep") if lang in ("mixed", "other", "mismatch") else "keep"
    if policy == "count":
        return lang
    return "" if policy == "drop" else None


def _largest_remainder(total: int, weights: dict[str, float], caps: dict[str, int] | None = None) -> dict[str, int]:
    """Split integer `total` in proportion to `weights` (largest remainder; ties by key), honouring caps.

    Hand-written because no installed library apportions with caps; it is ~20 lines.
    """
    keys = sorted(weights)
    wsum = sum(weights[k] for k in keys)
    if total <= 0 or wsum <= 0:
        return dict.fromkeys(keys, 0)
    exact = {k: total * weights[k] / wsum for k in keys}
    out = {k: math.floor(exact[k] + _EPS) for k in keys}
    if caps:
        out = {k: min(out[k], caps[k]) for k in keys}
    left = total - sum(out.values())
    order = sorted(keys, key=lambda k: (-(exact[k] - math.floor(exact[k] + _EPS)), k))
    while left > 0:
        progressed = False
        for k in order:
            if left == 0:
                break
            if caps is None or out[k] < caps[k]:
                out[k] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return out


def _round(x: float) -> int:
    """Round half up: a total of 142.86 rows gives the binding group all its rows (100 of 100 at 0.7)."""
    return math.floor(x + 0.5 + _EPS)


def _fmt_mix(mix: dict[str, float]) -> str:
    return " / ".join(f"{k} {v:.2f}" for k, v in mix.items())


def _fmt_target(mix: dict[str, float]) -> str:
    """A mix meant to be pasted back as a target: every digit it was rounded to (0.2468, not 0.25)."""
    return " / ".join(f"{k} {round(v, 6):g}" for k, v in mix.items())


def _fmt_share(x: float) -> str:
    """A share as a percentage, with a decimal only when it would otherwise read as 0% or 100%."""
    return f"{x:.0%}" if 0.01 <= x <= 0.99 or x in (0.0, 1.0) else f"{x:.1%}"


def _exact_quotas(counts: dict[str, int], goal: dict[str, float], keep_cap: int | None) -> dict[str, int]:
    """Quotas that meet `goal` exactly (within a row): the largest total min(rows_g / goal_g), at most keep_cap."""
    ratios = [counts.get(g, 0) / t for g, t in goal.items() if t > 0]
    total = _round(min(ratios)) if ratios else 0
    if keep_cap is not None:
        total = min(total, keep_cap)
    return _largest_remainder(total, goal, caps={g: counts.get(g, 0) for g in goal})


def water_level(counts: dict[str, int], goal: dict[str, float], allowed: int) -> dict[str, int]:
    """The closest mix to `goal` that drops at most `allowed` rows: rows go only from the groups furthest above
    their share. Groups the goal gives 0 lose rows first; then each group keeps min(rows_g, ceil(L * goal_g))
    with the smallest L whose drops fit the budget, so a group under its share never loses a row.

    Why not the straight line from the data's mix to the target: with three or more groups the line takes rows
    from an under-represented group too, spending budget that moves the mix away from the target for it.
    """
    zero = sorted(g for g, t in goal.items() if t <= 0 and counts.get(g, 0))
    z = sum(counts[g] for g in zero)
    if z >= allowed:
        cut = _largest_remainder(allowed, {g: float(counts[g]) for g in zero}, caps={g: counts[g] for g in zero})
        return {g: counts.get(g, 0) - cut.get(g, 0) for g in goal}
    left = allowed - z
    pos = {g: t for g, t in goal.items() if t > 0}

    def keep(level: float) -> dict[str, int]:
        return {g: min(counts.get(g, 0), math.ceil(level * t - _EPS)) for g, t in pos.items()}

    def dropped(level: float) -> int:
        return sum(counts.get(g, 0) - k for g, k in keep(level).items())

    lo, hi = 0.0, max([counts.get(g, 0) / t for g, t in pos.items()], default=0.0)  # at hi nothing is dropped
    for _ in range(100):
        mid = (lo + hi) / 2
        if dropped(mid) <= left:
            hi = mid
        else:
            lo = mid
    rest = {g: counts.get(g, 0) for g in goal if g not in pos and g not in zero}
    return {**keep(hi), **dict.fromkeys(zero, 0), **rest}


def _shares(quota: dict[str, int]) -> dict[str, float]:
    n = sum(quota.values())
    return {g: (q / n if n else 0.0) for g, q in sorted(quota.items())}


def suggest_target(counts: dict[str, int], quota: dict[str, int], budget: int) -> dict[str, float]:
    """The reached mix rounded so that, written as the target, it is reachable within `budget` (rounding a share
    up can cost rows the budget doesn't have; a suggestion that fails when pasted back is worse than none)."""
    shares = _shares(quota)
    for digits in (2, 3, 4, 6):
        scale = 10**digits
        units = _largest_remainder(scale, shares)
        cand = {g: units[g] / scale for g in shares}
        got = _exact_quotas(counts, cand, None)
        if sum(counts.get(g, 0) for g in cand) - sum(got.values()) <= budget:
            return cand
    return shares


def _balance_goal(counts: dict[str, int], target: dict[str, float], cfg: Config) -> tuple[
        dict[str, float], list[str], dict[str, float]]:
    """(goal, missing, scarce): the target renormalised over the target groups the data can be balanced around.

    A target group with no rows is `missing`; one whose share of the rows is below scarce_below x its target is
    `scarce` (its rows are kept, outside the goal). Groups the target gives 0 stay in the goal with 0 (dropped).
    When no positive-target group is left, the goal is empty: nothing to balance around, every row is kept.
    """
    n = sum(counts.values())
    missing = sorted(g for g, t in target.items() if t > 0 and counts.get(g, 0) == 0)
    if cfg.strict:
        return dict(target), missing, {}
    scarce = {
        g: counts[g] / n for g, t in target.items()
        if t > 0 and counts.get(g, 0) > 0 and counts[g] / n < cfg.scarce_below * t
    }
    live = {g: t for g, t in target.items() if t > 0 and g not in missing and g not in scarce}
    total = sum(live.values())
    if total <= 0:
        return {}, missing, scarce
    goal = {g: live[g] / total for g in live}
    goal.update({g: 0.0 for g, t in target.items() if t <= 0 and counts.get(g, 0)})
    return goal, missing, scarce


def _outcome_line(target: dict[str, float], goal: dict[str, float], missing: list[str], scarce: dict[str, float],
                  counts: dict[str, int], met: bool, needed: int, rows_in: int, quota: dict[str, int],
                  cfg: Config) -> str:
    """One line for the CLI and report.html saying how the target was adapted; "" when it was met as given."""
    parts: list[str] = []
    if missing:
        parts.append(f"the input has no {' / '.join(missing)} pairs")
    for g, share in sorted(scarce.items()):
        parts.append(f"{g} is only {_fmt_share(share)} of the pairs (target {_fmt_share(target[g])}): too few to "
                     f"balance around, its {counts[g]:,} pairs are kept")
    if not goal:
        parts.append("nothing to balance around, so every pair is kept")
    elif missing or scarce:
        dropped = sum(counts.get(g, 0) for g in goal) - sum(quota.get(g, 0) for g in goal)
        parts.append(f"balanced {_fmt_mix(goal)} among the rest ({dropped:,} dropped)" if len(goal) > 1 or dropped
                     else f"all {sum(counts.get(g, 0) for g in goal):,} {next(iter(goal))} pairs kept")
    if goal and not met:
        dropped = sum(counts.values()) - sum(quota.values())
        which = "it" if goal == {g: t for g, t in target.items() if t > 0 or counts.get(g, 0)} else _fmt_mix(goal)
        parts.append(
            f"{which} would drop {needed:,} of {rows_in:,} pairs ({needed / max(rows_in, 1):.0%}, over "
            f"max_drop_fraction {cfg.max_drop_fraction:g}); kept the closest mix within that: "
            f"{_fmt_mix(_shares({g: quota.get(g, 0) for g in sorted(set(goal) | set(scarce))}))} "
            f"({dropped:,} dropped)"
        )
    if not parts:
        return ""
    return f"target {_fmt_mix(target)} not met as given: " + "; ".join(parts) + " (balance.strict = true fails instead)"


def _priority(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """Add `__drop_rank`: 0 = dropped first. Larger clusters, lower margins, then seeded random order."""
    import random

    rng = random.Random(cfg.seed)  # stdlib: the same floats on every platform, no extra dependency
    keys: list[pl.Expr] = []
    desc: list[bool] = []
    df = df.with_columns(pl.Series("__rand", [rng.random() for _ in range(df.height)], dtype=pl.Float64))
    if cfg.prefer_drop_duplicates and "dup_cluster_size" in df.columns:
        keys.append(pl.col("dup_cluster_size").fill_null(1))
        desc.append(True)
    if cfg.prefer_drop_low_margin and {"chosen_score", "rejected_score"} <= set(df.columns):
        margin = pl.col("chosen_score") - pl.col("rejected_score")
        df = df.with_columns(margin.fill_null(margin.median().over("__group")).fill_null(0.0).alias("__margin"))
        keys.append(pl.col("__margin"))
        desc.append(False)
    keys += [pl.col("__rand"), pl.col("__row")]
    desc += [False, False]
    return df.sort(keys, descending=desc).with_columns(
        pl.int_range(pl.len()).over("__group", "source", "lang").alias("__drop_rank")
    )


def _select(part: pl.DataFrame, keep: int) -> tuple[list[int], list[int]]:
    """Rows (by __row) kept and dropped from one (group, source) part, sorted by drop rank."""
    ordered = part.sort("__drop_rank")["__row"].to_list()
    n_drop = len(ordered) - keep
    return ordered[n_drop:], ordered[:n_drop]


def plan(df: pl.DataFrame, cfg: Config) -> tuple[pl.DataFrame, list[tuple[int, int]], dict[str, Any]]:
    """Decide per row: (`__row`, reason or null, detail) for rejected rows, copies to make, and stats."""
    if "lang" not in df.columns:
        raise InputError("balance: the input has no `lang` column; run the language stage before balance")
    groups = [group_of(v, cfg) for v in df["lang"].to_list()]
    df = df.with_columns(pl.Series("__group", groups, dtype=pl.String))
    rows_in = df.height
    decisions: dict[int, tuple[str, str]] = {}

    # 1. policy drops
    for r, lang in df.filter(pl.col("__group") == "").select("__row", "lang").iter_rows():
        decisions[r] = (BALANCE_LANGUAGE_DROPPED, f"lang {lang} dropped by [balance] {lang} = 'drop'")
    live = df.filter(pl.col("__group").is_null() | (pl.col("__group") != ""))
    live = _priority(live, cfg)

    # 2. source caps (each language keeps its share within the source)
    cap_drops = 0
    caps = {}
    matched: set[str] = set()
    for (src,), part in live.group_by(["source"]):
        key = _cap_key(str(src), cfg.source_caps)
        if key is not None:
            matched.add(key)
        cap = cfg.source_caps[key] if key is not None else cfg.max_per_source
        if cap is None or part.height <= cap:
            continue
        caps[str(src)] = cap
        sizes = dict(part.group_by("lang").len().iter_rows())
        keep = _largest_remainder(cap, {str(k): float(v) for k, v in sizes.items()},
                                  caps={str(k): v for k, v in sizes.items()})
        for (lang,), sub in part.group_by(["lang"]):
            _, dropped = _select(sub, keep[str(lang)])
            for r in dropped:
                decisions[r] = (BALANCE_DOWNSAMPLED, f"source cap: {src} capped at {cap} of {part.height} pairs")
            cap_drops += len(dropped)
    live = live.filter(~pl.col("__row").is_in(list(decisions)))

    # 3. quotas: the target is a goal (see the module docstring); strict = true makes it a hard requirement
    quota_rows = live.filter(pl.col("__group").is_not_null())
    outside = live.height - quota_rows.height
    counts = {str(k): int(v) for k, v in quota_rows.group_by("__group").len().iter_rows()}
    target = {g: cfg.target.get(g, 0.0) for g in sorted(set(counts) | set(cfg.target))}
    n_quota = sum(counts.values())
    goal, missing, scarce = _balance_goal(counts, target, cfg)
    if cfg.strict and missing and n_quota:
        raise ConfigError(
            f"balance: target {_fmt_mix(target)} names {' / '.join(missing)} but the input has no such pairs "
            f"(balance.strict = true; without it the other groups are balanced among themselves)"
        )
    if cfg.max_rows is not None and outside > cfg.max_rows:
        raise ConfigError(
            f"balance: max_rows {cfg.max_rows} is below the {outside} pairs kept outside the quota "
            f"(mixed/other/mismatch = 'keep'); set those to 'drop' or 'count', or raise max_rows"
        )
    kept_aside = sum(counts.get(g, 0) for g in counts if g not in goal)  # scarce groups, or all when goal is empty
    keep_cap = None if cfg.max_rows is None else max(0, cfg.max_rows - outside - kept_aside)
    budget = math.floor(cfg.max_drop_fraction * rows_in + _EPS)
    in_goal = {g: counts.get(g, 0) for g in goal}
    quota = dict(counts)
    met, needed = True, 0
    if goal and cfg.upsample:
        ratios = [in_goal[g] / t for g, t in goal.items() if t > 0]
        total = _round(max(ratios)) if keep_cap is None else keep_cap
        quota.update(_largest_remainder(total, goal))
    elif goal:
        exact = _exact_quotas(in_goal, goal, keep_cap)
        needed = sum(in_goal.values()) - sum(exact.values())
        # max_rows drops are asked for
        allowed = max(budget, 0 if keep_cap is None else sum(in_goal.values()) - keep_cap)
        if needed <= allowed:
            quota.update(exact)
        else:
            reached = water_level(in_goal, goal, allowed)
            if cfg.strict:
                have = {g: counts.get(g, 0) / n_quota for g in target} if n_quota else {}
                raise ConfigError(
                    f"balance: reaching target {_fmt_mix(target)} would drop {needed} of {rows_in} pairs "
                    f"({needed / max(rows_in, 1):.0%}, max_drop_fraction {cfg.max_drop_fraction:g}); the data is "
                    f"{_fmt_mix(have)}; reachable within that budget: "
                    f"{_fmt_target(suggest_target(in_goal, reached, allowed))} "
                    f"(or raise max_drop_fraction, set upsample = true, or balance.strict = false to keep the "
                    f"closest mix)"
                )
            met = False
            quota.update(reached)
    outcome = _outcome_line(target, goal, missing, scarce, counts, met, needed, rows_in, quota, cfg)

    copies: list[tuple[int, int]] = []
    for g in sorted(counts):
        part = quota_rows.filter(pl.col("__group") == g)
        q, n = quota.get(g, 0), counts[g]
        note = ""
        if g in goal and abs(goal[g] - target.get(g, 0.0)) > _EPS:
            note = f", {goal[g]:.2f} among the groups present"
        if not met:
            note += f", closest mix within max_drop_fraction {cfg.max_drop_fraction:g}"
        # strata: (source, lang) — each source keeps its share of the group, and zh-Hans/zh-Hant theirs
        strata = {f"{src}\x1f{lang}": int(v) for src, lang, v in part.group_by("source", "lang").len().iter_rows()}
        weights = {k: float(v) for k, v in strata.items()}
        if q <= n:
            keep = _largest_remainder(q, weights, caps=strata)
            for (src, lang), part_src in part.group_by(["source", "lang"]):
                k = keep[f"{src}\x1f{lang}"]
                _, dropped = _select(part_src, k)
                for r in dropped:
                    decisions[r] = (
                        BALANCE_DOWNSAMPLED,
                        (f"quota {g}: kept {q} of {n} (target {target.get(g, 0.0):.2f}{note}); "
                         f"source {src}: kept {k} of {part_src.height} {lang}"),
                    )
        else:
            extra = _largest_remainder(q - n, weights)
            for (src, lang), part_src in part.group_by(["source", "lang"]):
                best_first = list(reversed(part_src.sort("__drop_rank")["__row"].to_list()))
                for i in range(extra[f"{src}\x1f{lang}"]):
                    copies.append((best_first[i % len(best_first)], i // len(best_first) + 1))
    copies.sort()

    kept_lang = df.filter(~pl.col("__row").is_in(list(decisions)))
    copy_langs = dict(df.select("__row", "lang").iter_rows())
    stats = {
        "rows_in": rows_in,
        "target": target,
        "policies": {"mixed": cfg.mixed, "other": cfg.other, "mismatch": cfg.mismatch},
        "groups": {g: {"rows": counts.get(g, 0), "quota": quota.get(g, 0), "target": target[g]} for g in target},
        # how the target was adapted (module docstring, step 3); `warnings` is the one line the CLI prints
        "goal": goal,
        "missing": missing,
        "scarce": {g: round(v, 4) for g, v in scarce.items()},
        "target_met": met and not missing and not scarce and bool(goal),
        "needed_drops": needed,
        "max_drops": budget,
        "reached": _shares({g: quota.get(g, 0) for g in target if counts.get(g, 0)}),
        "strict": cfg.strict,
        "warnings": [outcome] if outcome else [],
        "policy_rows": {p: {"policy": getattr(cfg, p), "rows": int((df["lang"] == p).sum())}
                        for p in ("mixed", "other", "mismatch")},
        "outside_quota": outside,
        "dropped": {
            "language_policy": sum(1 for v in decisions.values() if v[0] == BALANCE_LANGUAGE_DROPPED),
            "source_caps": cap_drops,
            "quota": sum(1 for v in decisions.values() if v[1].startswith("quota")),
        },
        "source_caps": caps,
        "source_caps_unmatched": sorted(set(cfg.source_caps) - matched),
        "copies": len(copies),
        "before": _mix(df),
        "after": _mix(kept_lang, extra=[(copy_langs[r], src) for r, src in
                                        _copy_sources(df, copies)]),
    }
    rejected = pl.DataFrame(
        {"__row": list(decisions), "reason": [v[0] for v in decisions.values()],
         "detail": [v[1] for v in decisions.values()]},
        schema={"__row": pl.UInt32, "reason": pl.String, "detail": pl.String},
    ).sort("__row")
    return rejected, copies, stats


def _cap_key(source: str, caps: dict[str, int]) -> str | None:
    """The source_caps key for a source: its full name, else its file name (sources are often paths)."""
    if source in caps:
        return source
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    return name if name in caps else None


def _copy_sources(df: pl.DataFrame, copies: list[tuple[int, int]]) -> list[tuple[int, str]]:
    src = dict(df.select("__row", "source").iter_rows())
    return [(r, src[r]) for r, _ in copies]


def _mix(df: pl.DataFrame, extra: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Pairs per language label, overall and per source."""
    frame = df.select(pl.col("lang").fill_null("none"), pl.col("source").cast(pl.String).fill_null("none"))
    if extra:
        frame = pl.concat([frame, pl.DataFrame(extra, schema=["lang", "source"], orient="row")])
    overall = {str(k): int(v) for k, v in frame.group_by("lang").len().sort("lang").iter_rows()}
    by_source: dict[str, dict[str, int]] = {}
    for src, lang, n in frame.group_by("source", "lang").len().sort("source", "lang").iter_rows():
        by_source.setdefault(str(src), {})[str(lang)] = int(n)
    return {"overall": overall, "by_source": by_source}


def length_balance(df: pl.DataFrame, max_share: float, seed: int) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rows to drop (`__row`, reason, detail) so that in each language (zh-Hans + zh-Hant = zh) at most
    `max_share` of the pairs have the longer reply as chosen and at most `max_share` the shorter one.

    Why: a preference set where chosen is mostly the longer reply teaches "longer is better" (the quality stage
    reports the share per source and language). Which rows go: on the over-represented side, the pairs whose
    length ratio is the most lopsided first (they carry the most length signal), ties in a seeded random order.
    Needs `__row`, `lang`, `__clen`, `__rlen` (character lengths of chosen and rejected).
    """
    import random

    fam = pl.when(pl.col("lang").str.starts_with("zh")).then(pl.lit("zh")).otherwise(pl.col("lang").fill_null("other"))
    ratio = (pl.col("__clen").cast(pl.Float64) + 1) / (pl.col("__rlen").cast(pl.Float64) + 1)
    rng = random.Random(seed)
    work = df.with_columns(
        fam.alias("__fam"), ratio.alias("__ratio"),
        pl.Series("__rand", [rng.random() for _ in range(df.height)], dtype=pl.Float64),
    )
    drops: list[tuple[int, str]] = []
    stats: dict[str, Any] = {"max_share": max_share, "by_lang": {}}
    for (lang,), part in sorted(work.group_by(["__fam"]), key=lambda kv: str(kv[0][0])):
        n = part.height
        longer = part.filter(pl.col("__clen") > pl.col("__rlen"))
        shorter = part.filter(pl.col("__clen") < pl.col("__rlen"))
        side, name, lopsided_first = (
            (longer, "longer", True) if longer.height >= shorter.height else (shorter, "shorter", False)
        )
        # dropping d rows of that side: (k - d) / (n - d) <= max_share  <=>  d >= (k - max_share * n) / (1 - max_share)
        need = max(0, math.ceil((side.height - max_share * n) / (1 - max_share) - _EPS))
        order = side.sort(["__ratio", "__rand", "__row"], descending=[lopsided_first, False, False])
        for r in order["__row"].head(need).to_list():
            why = (f"length balance: chosen was the {name} reply in {side.height / n:.1%} of {n:,} {lang} pairs "
                   f"(length_balance = {max_share:g})")
            drops.append((r, why))
        after = n - need
        stats["by_lang"][str(lang)] = {"pairs": n, f"chosen_{name}": side.height, "dropped": need,
                                       f"share_chosen_{name}_before": round(side.height / n, 4) if n else None,
                                       f"share_chosen_{name}_after":
                                           round((side.height - need) / after, 4) if after else None}
    stats["dropped"] = len(drops)
    rejected = pl.DataFrame(
        {"__row": [r for r, _ in drops], "reason": [BALANCE_LENGTH_BIAS] * len(drops), "detail": [d for _, d in drops]},
        schema={"__row": pl.UInt32, "reason": pl.String, "detail": pl.String},
    ).sort("__row")
    return rejected, stats


def _copy_id(row_id: str | None, k: int) -> str:
    return derived_id(row_id, f"copy{k}")


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    """Collect only the columns the decision needs, decide, and join the decisions back lazily."""
    lf = frame.lazy().with_row_index("__row")
    names = lf.collect_schema().names()
    missing = [c for c in NEEDS if c not in names]
    if missing:
        raise InputError(f"balance: the input lacks column {missing[0]!r}; run the language stage before balance")
    wanted = ["__row", "lang", "source"] + [
        c for c in ("dup_cluster_size", "chosen_score", "rejected_score") if c in names
    ]
    length_cols = [pl.col("chosen").str.len_chars().alias("__clen"), pl.col("rejected").str.len_chars().alias("__rlen")]
    small = lf.select(*wanted, *(length_cols if cfg.length_balance is not None else [])).collect()
    length_drops = None
    if cfg.length_balance is not None:  # before the quotas, which then balance what is left
        length_drops, length_stats = length_balance(small, cfg.length_balance, cfg.seed)
        small = small.filter(~pl.col("__row").is_in(length_drops["__row"].implode())).drop("__clen", "__rlen")
    rejected, copies, stats = plan(small, cfg)
    if length_drops is not None:
        rejected = pl.concat([length_drops, rejected]).sort("__row")
        stats["length_balance"] = length_stats
    out_cols = [n for n in names if n != "__row" and n not in ADDS] + list(ADDS)
    base = lf.with_columns(pl.lit(None, dtype=pl.String).alias("balance_copy_of"))
    # Row filters, not joins: the streaming engine keeps a join's left side to keep its order (~1.8 GB at 1M).
    dropped = pl.col("__row").is_in(rejected["__row"].implode())
    kept = base.filter(~dropped)
    if copies:
        plan_df = pl.DataFrame(
            {"__row": [r for r, _ in copies], "__copy": [k for _, k in copies], "__order": range(len(copies))},
            schema={"__row": pl.UInt32, "__copy": pl.Int64, "__order": pl.Int64},
        )
        dup = (
            base.join(plan_df.lazy(), on="__row", how="inner")
            .sort("__order")
            .with_columns(
                pl.col("row_id").alias("balance_copy_of"),
                pl.struct("row_id", "__copy")
                .map_batches(
                    lambda s: pl.Series(
                        [_copy_id(p, k)
                         for p, k in zip(s.struct.field("row_id"), s.struct.field("__copy"), strict=True)],
                        dtype=pl.String,
                    ),
                    return_dtype=pl.String,
                )
                .alias("row_id"),
            )
        )
        kept = pl.concat([kept.select(out_cols), dup.select(out_cols)])
    rej = base.filter(dropped).with_columns(
        pl.col("__row").replace_strict(rejected["__row"], rejected[c], return_dtype=rejected.schema[c]).alias(c)
        for c in rejected.columns if c != "__row"
    )
    rejects = reject(rej, NAME, pl.col("reason"), pl.col("detail")).select(
        out_cols + ["stage", "reason", "detail"]
    )
    if rejected.height == 0:
        rejects = no_rejects(base.select(out_cols))
    return StageResult(kept.select(out_cols), rejects, stats)


def html_section(stats: dict[str, Any]) -> str:
    """The language mix before and after balancing, overall and per source, and the quota per group."""
    from curate import langid, report

    before, after = stats.get("before", {}), stats.get("after", {})
    sources = sorted(set(before.get("by_source", {})) | set(after.get("by_source", {})))
    names = langid.short_sources(sources)
    per_source = {}
    for src in sources:
        per_source[f"{names[src]} (before)"] = langid.chart_mix(before.get("by_source", {}).get(src, {}))
        per_source[f"{names[src]} (after)"] = langid.chart_mix(after.get("by_source", {}).get(src, {}))
    return "\n".join(
        [
            report.stacked_bars(
                {"before": langid.chart_mix(before.get("overall", {})),
                 "after": langid.chart_mix(after.get("overall", {}))},
                "Language mix before and after balancing",
            ),
            report.stacked_bars(per_source, "Language mix per source, before and after"),
            report.table(
                [{"group": g, **v, "balanced around": _group_role(g, stats),
                  "share after": round(stats.get("reached", {}).get(g, 0.0), 4)}
                 for g, v in stats.get("groups", {}).items()],
                "Quota per language group (target met as given)" if stats.get("target_met")
                else "Quota per language group (target not met as given: see the line above)",
            ),
            report.table([{"label": k, **v} for k, v in stats.get("policy_rows", {}).items()],
                         "Pairs outside the zh/en groups, by policy"),
            report.table([{**stats.get("dropped", {}), "copies": stats.get("copies", 0)}], "Rows dropped, by cause"),
        ]
    )


def _group_role(group: str, stats: dict[str, Any]) -> str:
    if group in stats.get("missing", []):
        return "no: none in the input"
    if group in stats.get("scarce", {}):
        return "no: too few (kept as they are)"
    goal = stats.get("goal", {})
    if group in goal:
        return f"yes, share {goal[group]:.2f}"
    return "no"
