"""Pull annotators' answers from Argilla, keep them raw, resolve them and write the reviewed pairs.

Writes under RUN_DIR/review/ (each file atomically):
- responses.parquet: every response on the server, raw — one row per (record, user): the pair's key, record id,
  user, status (submitted / draft / discarded), the A/B answer, the unblinded vote, problems, rating,
  corrected text, the raw values as JSON, inserted_at/updated_at. Sorted by (key, user) for stable bytes.
- decisions.parquet: one row per reviewed pair (see apply.py for the rules).
- pairs.parquet: the kept pairs (swapped/corrected as decided, with review_* columns).
- rejects.parquet: the dropped pairs, stage "review", reason review_rejected / review_pending, detail.
- stats.json: dataset, workspace, api url, counts, agreement per question, per-annotator stats, the policy.

Pairs nobody reviewed yet are kept unchanged with review_decision = null (so pulling early never loses data);
`only_reviewed` rejects them as review_pending instead. Rows in = kept + rejected, checked.

The policy: the one push recorded for the dataset (the guidelines annotators read were written from it), with
any option given to pull on top; min_votes defaults to the dataset's min_submitted. stats.json records both and
whether they differ. Corrected replies go through the run's language stage (see apply.py, rule 5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError, ServiceError
from curate.io import atomic_path, atomic_write_text
from curate.review import settings as S
from curate.review.agreement import agreement_report, annotator_stats
from curate.review.apply import ResolvePolicy, apply_decisions, resolve
from curate.review.push import (
    LIST_PAGE,
    Connection,
    _first_line,
    find_dataset,
    read_pairs,
    read_push_meta,
)

KEY = S.RECORD_KEY

RESPONSES_SCHEMA = pl.Schema(
    {
        KEY: pl.String(),
        "record_id": pl.String(),
        "user": pl.String(),
        "status": pl.String(),
        "better": pl.String(),
        "vote": pl.String(),
        "problems": pl.List(pl.String),
        "rating": pl.Int64(),
        "corrected": pl.String(),
        "values": pl.String(),
        "inserted_at": pl.String(),
        "updated_at": pl.String(),
    }
)


@dataclass(frozen=True)
class PullResult:
    dataset: str
    responses: int
    stats: dict[str, Any]
    out_dir: Path


def fetch_raw(conn: Connection, dataset: Any) -> list[dict[str, Any]]:
    """Every record's external id, server id and responses, straight from the REST API (owner key)."""
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        try:
            resp = conn.client.http_client.get(
                f"/api/v1/datasets/{dataset.id}/records",
                params={"offset": offset, "limit": LIST_PAGE, "include": ["responses"]},
            )
            resp.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(f"Argilla at {conn.api_url}: fetching responses failed: {_first_line(exc)}") from None
        items = resp.json()["items"]
        records.extend(items)
        if len(items) < LIST_PAGE:
            return records
        offset += len(items)


def usernames(conn: Connection) -> dict[str, str]:
    """user id → username (responses carry ids only)."""
    try:
        return {str(u.id): u.username for u in conn.client.api.users.list()}
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"Argilla at {conn.api_url}: listing users failed: {_first_line(exc)}") from None


def _value(values: dict[str, Any] | None, name: str) -> Any:
    if not values or name not in values or values[name] is None:
        return None
    v = values[name]
    return v.get("value") if isinstance(v, dict) else v


def responses_frame(raw: list[dict[str, Any]], names: dict[str, str], mapping: dict[str, bool]) -> pl.DataFrame:
    """Raw records → the long responses table, unblinded with `mapping` (key → a_is_chosen)."""
    rows = []
    for rec in raw:
        pid = rec.get("external_id")
        if pid is None:
            continue
        pid = str(pid)
        for r in rec.get("responses") or []:
            values = r.get("values") or {}
            better = _value(values, S.Q_BETTER)
            problems = _value(values, S.Q_PROBLEMS)
            rating = _value(values, S.Q_RATING)
            corrected = _value(values, S.Q_CORRECTED)
            vote = S.unblind(better, mapping[pid]) if better is not None and pid in mapping else None
            rows.append(
                {
                    KEY: pid,
                    "record_id": str(rec.get("id")),
                    "user": names.get(str(r.get("user_id")), str(r.get("user_id"))),
                    "status": r.get("status"),
                    "better": better,
                    "vote": vote,
                    "problems": sorted(problems) if isinstance(problems, list) else [],
                    "rating": int(rating) if rating is not None else None,
                    "corrected": corrected if isinstance(corrected, str) and corrected.strip() else None,
                    "values": json.dumps(values, sort_keys=True, ensure_ascii=False),
                    "inserted_at": r.get("inserted_at"),
                    "updated_at": r.get("updated_at"),
                }
            )
    frame = pl.DataFrame(rows, schema=RESPONSES_SCHEMA) if rows else pl.DataFrame(schema=RESPONSES_SCHEMA)
    return frame.sort(KEY, "user")


def pushed_key(run_dir: Path, dataset: str) -> str:
    """The column whose values are the dataset's record ids: row_id, or pair_id for a push by an older curate."""
    meta = read_push_meta(run_dir)["datasets"].get(dataset)
    return KEY if meta is None else meta.get("key", S.LEGACY_KEY)


def load_mapping(run_dir: Path, pairs: pl.DataFrame, dataset: str, seed: int | None) -> dict[str, bool]:
    """The blind mapping push wrote for `dataset`, by record id; rebuilt from a seed (`seed`, or push.json's)
    when needed."""
    path = run_dir / "review" / "mapping.parquet"
    key = pushed_key(run_dir, dataset)
    if seed is None and path.is_file():
        m = pl.read_parquet(path)
        if key in m.columns:
            m = m.filter(pl.col("dataset") == dataset)
            if m.height:
                return dict(zip(m[key].to_list(), m["a_is_chosen"].to_list(), strict=True))
    if seed is None:
        pushed = read_push_meta(run_dir)["datasets"].get(dataset)
        if pushed is None:
            raise InputError(
                f"no blind mapping for dataset {dataset!r} in {run_dir / 'review'}: pull the run folder it was "
                "pushed from, or pass --seed with the seed used for push"
            )
        seed = int(pushed["seed"])
    m = S.mapping_frame(pairs[key], seed)
    return dict(zip(m[KEY].to_list(), m["a_is_chosen"].to_list(), strict=True))


def recorded_policy(run_dir: Path, dataset: str) -> ResolvePolicy | None:
    """The policy push recorded for `dataset` (its guidelines were written from it), or None."""
    from curate.config import build

    raw = read_push_meta(run_dir)["datasets"].get(dataset, {}).get("policy")
    return None if raw is None else build(ResolvePolicy, raw, f"{run_dir / 'review' / 'push.json'} policy")


def run_language_config(run_dir: Path) -> Any:
    """The run's language stage Config (pipeline.json), or None when the run had no language stage."""
    from curate.config import build
    from curate.stages import language

    try:
        raw = json.loads((run_dir / "pipeline.json").read_text())
    except (OSError, ValueError):
        return None
    if "language" not in ((raw.get("pipeline") or {}).get("stages") or []):
        return None
    return build(language.Config, raw.get("language") or {}, "pipeline.json [language]")


def _policy_dict(policy: ResolvePolicy) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(policy).items()}


def pull(
    run_dir: str | Path,
    conn: Connection,
    dataset_name: str,
    policy: ResolvePolicy | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> PullResult:
    """Fetch, keep raw, resolve, apply, write RUN_DIR/review/*. See the module docstring.

    `policy`: the whole policy (None: the one push recorded, else the defaults); `overrides`: fields to change
    on top of it (what the CLI options given say)."""
    from dataclasses import replace

    run_dir = Path(run_dir)
    guideline_policy = recorded_policy(run_dir, dataset_name)
    policy = policy or guideline_policy or ResolvePolicy()
    if overrides:
        policy = replace(policy, **overrides)
    policy.validate()
    pairs = read_pairs(run_dir)
    dataset = find_dataset(conn, dataset_name)
    if dataset is None:
        raise InputError(f"dataset {dataset_name!r} not found in workspace {conn.workspace!r} at {conn.api_url}")
    S.check_compatible(dataset)
    min_submitted = int(dataset.settings.distribution.min_submitted or 1)
    applied_policy = policy.resolved(min_submitted)
    mapping = load_mapping(run_dir, pairs, dataset_name, seed)
    raw = fetch_raw(conn, dataset)
    responses = responses_frame(raw, usernames(conn), mapping)
    key = pushed_key(run_dir, dataset_name)
    if key != KEY:  # pushed by an older curate: record ids are pair_ids, unique in the runs it accepted
        to_row = dict(zip(pairs[key].to_list(), pairs[KEY].to_list(), strict=True))
        responses = responses.with_columns(pl.col(KEY).replace(to_row)).sort(KEY, "user")
        raw = [{**r, "external_id": to_row.get(str(r.get("external_id")), r.get("external_id"))} for r in raw]
    on_server = {str(r["external_id"]) for r in raw if r.get("external_id") is not None}
    # answers to records that aren't pairs of this run can't be applied; count them, don't use them
    foreign = responses.filter(~pl.col(KEY).is_in(pairs[KEY].to_list()))
    ours = responses.filter(pl.col(KEY).is_in(pairs[KEY].to_list()))

    decisions = resolve(ours, applied_policy)
    applied = apply_decisions(pairs, decisions, applied_policy, language=run_language_config(run_dir))

    status_counts = ours.group_by("status").len().sort("status") if ours.height else None
    pushed_seed = read_push_meta(run_dir)["datasets"].get(dataset_name, {}).get("seed")
    resolved_guidelines = None if guideline_policy is None else _policy_dict(guideline_policy.resolved(min_submitted))
    stats: dict[str, Any] = {
        "dataset": dataset_name,
        "workspace": conn.workspace,
        "api_url": conn.api_url,
        "blind_seed": seed if seed is not None else pushed_seed,
        "records_on_server": len(on_server),
        "pairs_on_server": int(pairs[KEY].is_in(list(on_server)).sum()),
        "responses": (
            dict(zip(status_counts["status"], status_counts["len"], strict=True)) if status_counts is not None else {}
        ),
        "responses_for_other_records": foreign.height,
        "responses_until": ours["updated_at"].drop_nulls().max() if ours.height else None,
        **applied.stats,
        "agreement": agreement_report(ours),
        "annotators": annotator_stats(ours, decisions),
        "policy": _policy_dict(applied_policy),
        "min_submitted": min_submitted,
        "guidelines_policy": resolved_guidelines,
        "policy_differs_from_guidelines": sorted(
            k for k, v in _policy_dict(applied_policy).items()
            if guideline_policy is not None and _policy_dict(guideline_policy.resolved(min_submitted))[k] != v
        ),
    }

    out = run_dir / "review"
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (
        ("responses.parquet", responses),
        ("decisions.parquet", decisions.drop("__drop", "__correction")),
        ("pairs.parquet", applied.kept),
        ("rejects.parquet", applied.rejects),
    ):
        with atomic_path(out / name) as tmp:
            frame.write_parquet(tmp)
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return PullResult(dataset=dataset_name, responses=responses.height, stats=stats, out_dir=out)


def progress(conn: Connection, dataset_name: str) -> dict[str, Any]:
    """Dataset progress (total/completed/pending) and per-annotator response counts by status."""
    dataset = find_dataset(conn, dataset_name)
    if dataset is None:
        raise InputError(f"dataset {dataset_name!r} not found in workspace {conn.workspace!r} at {conn.api_url}")
    try:
        return dataset.progress(with_users_distribution=True)
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"Argilla at {conn.api_url}: progress failed: {_first_line(exc)}") from None


def list_datasets(conn: Connection) -> list[str]:
    """Names of the datasets in the connection's workspace."""
    try:
        ws = conn.client.workspaces(name=conn.workspace)
        return sorted(d.name for d in ws.datasets) if ws is not None else []
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"Argilla at {conn.api_url}: listing datasets failed: {_first_line(exc)}") from None
