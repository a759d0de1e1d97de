"""The pipeline runner: ingest → stages (from a pipeline file) → export, accounting for every row.

Each step writes into the run folder (layout in the README, "The run folder"): its kept rows, its rejects (with stage,
reason, detail) and its stats, then a done-marker. After every step the runner checks the conservation law
(rows in = rows kept + rows rejected) from the Parquet files it wrote. A re-run with the same inputs and
configuration skips steps whose done-marker matches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from curate import __version__
from curate.config import Pipeline
from curate.errors import ConfigError, ConservationError
from curate.io import ROW_GROUP, STREAM_CHUNK, atomic_path, atomic_write_text, count_rows, sha256_file
from curate.schema import PAIR_SCHEMA
from curate.stages import stage_module

Progress = Callable[[str], None]


def reasons_of(path: Path) -> dict[str, int]:
    if count_rows(path) == 0:
        return {}
    counts = pl.scan_parquet(path).group_by("reason").len().sort("reason").collect()
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))


def check_columns(pipeline: Pipeline) -> None:
    """Check the pipeline against the columns each stage declares it needs and adds, before data moves."""
    available = set(PAIR_SCHEMA.names())
    for name, _ in pipeline.stages:
        module = stage_module(name)
        missing = [c for c in getattr(module, "NEEDS", ()) if c not in available]
        if missing:
            raise ConfigError(
                f"stage {name!r} needs column(s) {', '.join(missing)}, which no earlier stage adds; reorder "
                f"[pipeline] stages"
            )
        available |= set(getattr(module, "ADDS", ()))


def _marker(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _done(step_dir: Path, marker: str) -> bool:
    done = step_dir / "DONE"
    return done.exists() and done.read_text().strip() == marker


def sink_result(kept: pl.LazyFrame, rejects: pl.LazyFrame, step_dir: Path) -> tuple[Path, Path]:
    """Stream a stage's kept rows and rejects to Parquet, atomically."""
    step_dir.mkdir(parents=True, exist_ok=True)
    kept_path, rejects_path = step_dir / "kept.parquet", step_dir / "rejects.parquet"
    # Both sinks in one pass, with small streaming morsels: Polars' default morsels held 938-1,079 MB at 1M pairs
    # (clean); 2,000-row morsels hold ~390 MB at the same speed (docs/BENCHMARKS.md).
    with atomic_path(kept_path) as tk, atomic_path(rejects_path) as tr, pl.Config(streaming_chunk_size=STREAM_CHUNK):
        pl.collect_all(
            [kept.sink_parquet(tk, lazy=True, row_group_size=ROW_GROUP),
             rejects.sink_parquet(tr, lazy=True, row_group_size=ROW_GROUP)],
            engine="streaming",
        )
    return kept_path, rejects_path


def input_files(inputs: Sequence[str | Path]) -> list[dict[str, str]]:
    """Every file the inputs name (folders walked in sorted order), with its SHA-256, for the manifest."""
    import glob

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            files += sorted(Path(g) for g in glob.glob(str(item), recursive=True) if Path(g).is_file())
    return [{"path": str(f), "sha256": sha256_file(f)} for f in files]


def run_pipeline(
    pipeline: Pipeline,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    mapping: dict[str, str] | None = None,
    progress: Progress | None = None,
    export: bool = True,
) -> dict[str, Any]:
    """Run ingest, the pipeline's stages and export into `out_dir`; return the run report.

    A run that stops on an error still writes report.json / report.html: the error, the step it stopped in and
    the steps that finished (with their rejects), then the error propagates unchanged."""
    state: dict[str, Any] = {}
    try:
        return _run_pipeline(pipeline, inputs, out_dir, mapping, progress, export, state)
    except Exception as exc:
        write_failed_report(pipeline, Path(out_dir), state.get("steps", []), exc)
        raise


def write_failed_report(pipeline: Pipeline, out: Path, steps: list[dict[str, Any]], exc: BaseException) -> None:
    """report.json / report.html for a run that stopped; never raises (the original error is what matters)."""
    from curate import report as report_mod
    from curate.errors import CurateError

    names = ["ingest", *(n for n, _ in pipeline.stages), "export"]
    failed = names[min(len(steps), len(names) - 1)]
    error = str(exc) if isinstance(exc, CurateError) else f"internal error: {type(exc).__name__}: {exc}"
    run = {
        "status": "failed", "error": error.splitlines()[0] if error else type(exc).__name__, "failed_step": failed,
        "curate_version": __version__, "pipeline": pipeline.raw.get("pipeline", {}), "pipeline_file": pipeline.path,
        "steps": steps,
        "funnel": [{"stage": s["stage"], "rows_in": s["rows_in"], "kept": s["kept"], "rejected": s["rejected"]}
                   for s in steps],
    }
    try:
        if not out.is_dir():
            return
        run["examples"] = report_mod.reject_examples(out, steps)
        report_mod.write_json(out / "report.json", run)
        atomic_write_text(out / "report.html", report_mod.render(run))
    except Exception:  # noqa: BLE001, S110 - a report that can't be written must not hide the run's own error
        pass


def _run_pipeline(
    pipeline: Pipeline,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    mapping: dict[str, str] | None,
    progress: Progress | None,
    export: bool,
    state: dict[str, Any],
) -> dict[str, Any]:
    from curate import report as report_mod
    from curate.ingest import ingest

    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_columns(pipeline)
    report_mod.write_json(out / "pipeline.json", pipeline.raw)
    files = input_files(inputs)
    report_mod.write_json(out / "inputs.json", {"inputs": [str(i) for i in inputs], "files": files, "map": mapping})

    # Step 0: ingest.
    ingest_dir = out / "00-ingest"
    ingest_cfg = pipeline.ingest
    binarize = (ingest_cfg.binarize, ingest_cfg.seed) if ingest_cfg is not None else ("best-worst", pipeline.seed)
    marker = _marker("ingest", __version__, files, mapping, *binarize)
    if _done(ingest_dir, marker):
        say("ingest: unchanged, skipped")
        ingest_report = json.loads((ingest_dir / "report.json").read_text())
    else:
        say("ingest")
        if ingest_dir.exists():
            shutil.rmtree(ingest_dir)
        ingest_report = ingest([str(i) for i in inputs], ingest_dir, mapping=mapping, binarize=binarize[0],
                               seed=binarize[1])
        # A row of rated responses may yield several pairs: rows in + extra pairs = kept + rejected.
        _check_conservation("ingest", ingest_report["input_rows"] + ingest_report.get("extra_pairs", 0),
                            ingest_dir / "pairs.parquet", ingest_dir / "rejects.parquet")
        atomic_write_text(ingest_dir / "DONE", marker)

    steps: list[dict[str, Any]] = [
        {
            "stage": "ingest",
            "rows_in": ingest_report["input_rows"],
            "kept": ingest_report["kept_rows"],
            "rejected": ingest_report["rejected_rows"],
            "copies": ingest_report.get("extra_pairs", 0),  # extra pairs from rated rows: counted like copies
            "rejects_by_reason": ingest_report.get("rejects_by_reason", {}),
            "stats": {"sources": ingest_report.get("sources", {})},
            "rejects_path": str((ingest_dir / "rejects.parquet").relative_to(out)),
        }
    ]
    state["steps"] = steps  # finished steps, for the report of a run that stops later
    current = ingest_dir / "pairs.parquet"
    for i, (name, cfg) in enumerate(pipeline.stages, start=1):
        module = stage_module(name)
        step_dir = out / f"{i:02d}-{name}"
        marker = _marker(name, __version__, asdict(cfg), marker)
        rows_in = count_rows(current)
        if _done(step_dir, marker):
            say(f"{name}: unchanged, skipped")
            stats = json.loads((step_dir / "stats.json").read_text())
        else:
            say(f"{name}: {rows_in:,} pairs")
            result = module.run(pl.scan_parquet(current), cfg)
            sink_result(result.kept, result.rejects, step_dir)
            stats = result.stats
            report_mod.write_json(step_dir / "stats.json", stats)
            # A stage that adds rows on purpose (balance with upsample = true) reports them as stats["copies"].
            copies = int(stats.get("copies", 0) or 0)
            _check_conservation(name, rows_in + copies, step_dir / "kept.parquet", step_dir / "rejects.parquet")
            atomic_write_text(step_dir / "DONE", marker)
        kept_path, rejects_path = step_dir / "kept.parquet", step_dir / "rejects.parquet"
        steps.append(
            {
                "stage": name,
                "rows_in": rows_in,
                "kept": count_rows(kept_path),
                "rejected": count_rows(rejects_path),
                "copies": int(stats.get("copies", 0) or 0),
                "rejects_by_reason": reasons_of(rejects_path),
                "stats": stats,
                "rejects_path": str(rejects_path.relative_to(out)),
            }
        )
        current = kept_path

    with atomic_path(out / "pairs.parquet") as tmp:
        shutil.copyfile(current, tmp)
    reject_files = [out / s["rejects_path"] for s in steps]
    with atomic_path(out / "rejects.parquet") as tmp:
        pl.concat([pl.scan_parquet(p) for p in reject_files], how="diagonal_relaxed").sink_parquet(
            tmp, row_group_size=ROW_GROUP
        )

    run_report = build_report(pipeline, out, steps, ingest_report, files)
    if export:
        from curate.export import export as do_export

        say("export")
        run_report["export"] = do_export(out, out / "export", pipeline.export, pipeline=pipeline)
    report_mod.write_json(out / "report.json", run_report)
    atomic_write_text(out / "report.html", report_mod.render(run_report))
    return run_report


def _check_conservation(stage: str, rows_in: int, kept: Path, rejects: Path) -> None:
    """Rows in (plus deliberate copies) = rows kept + rows rejected, counted from the files written."""
    k, r = count_rows(kept), count_rows(rejects)
    if rows_in != k + r:
        raise ConservationError(f"stage {stage!r}: {rows_in} rows in but {k} kept + {r} rejected = {k + r}")


def length_stats(pairs: pl.LazyFrame) -> dict[str, Any]:
    """Character-length percentiles and histogram counts of prompt, chosen and rejected."""
    from curate.report import histogram_counts

    lengths = pairs.select(
        (
            pl.col("prompt").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
            + pl.col("system").str.len_chars().fill_null(0)
        ).alias("prompt"),
        pl.col("chosen").str.len_chars().alias("chosen"),
        pl.col("rejected").str.len_chars().alias("rejected"),
    ).collect()
    out: dict[str, Any] = {}
    for col in lengths.columns:
        s = lengths[col]
        if s.len() == 0:
            out[col] = {}
            continue
        pct = {f"p{q}": int(s.quantile(q / 100, "nearest")) for q in (5, 25, 50, 75, 95, 99)}
        edges, counts = histogram_counts(s.to_list(), 30)
        out[col] = {"min": int(s.min()), "max": int(s.max()), "mean": round(float(s.mean()), 1), **pct,
                    "histogram": {"edges": [round(e, 1) for e in edges], "counts": counts}}
    return out


def build_report(
    pipeline: Pipeline, out: Path, steps: list[dict[str, Any]], ingest_report: dict, files: list[dict]
) -> dict[str, Any]:
    from curate import report as report_mod

    final = pl.scan_parquet(out / "pairs.parquet")
    kept_by_source = dict(final.group_by("source").len().sort("source").collect().iter_rows())
    rejects = pl.scan_parquet(out / "rejects.parquet")
    rej = rejects.group_by("source", "stage").len().collect()
    per_source = []
    for src, info in sorted(ingest_report.get("sources", {}).items()):
        row = {"source": src, "format": info.get("format"), "rows_in": info.get("rows_in", 0)}
        for step in steps:
            row[f"rejected_{step['stage']}"] = int(
                rej.filter((pl.col("source") == src) & (pl.col("stage") == step["stage"]))["len"].sum()
            )
        row["kept"] = int(kept_by_source.get(src, 0))
        per_source.append(row)
    return {
        "curate_version": __version__,
        "pipeline": pipeline.raw["pipeline"],
        "pipeline_file": pipeline.path,
        "input_rows": steps[0]["rows_in"],
        "kept_rows": steps[-1]["kept"],
        "rejected_rows": sum(s["rejected"] for s in steps),
        "copied_rows": sum(s.get("copies", 0) for s in steps),  # upsampling copies: in + copied = kept + rejected
        "funnel": [{"stage": s["stage"], "rows_in": s["rows_in"], "kept": s["kept"], "rejected": s["rejected"]}
                   for s in steps],
        "rejects_by_reason": _merge_reasons(steps),
        "steps": steps,
        "sources": per_source,
        "lengths": length_stats(final),
        "inputs": files,
        "examples": report_mod.reject_examples(out, steps),  # the first rows of every reject reason
    }


def _merge_reasons(steps: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for s in steps:
        for reason, n in s["rejects_by_reason"].items():
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items()))
