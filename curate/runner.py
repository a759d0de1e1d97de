"""The pipeline runner: ingest → stages (from a pipeline file) → export, accounting for every row.

Each step writes into the run folder (layout in the README, "The run folder"): its kept rows, its rejects (with stage,
reason, detail) and its stats, then a done-marker. After every step the runner checks the conservation law
(rows in = rows kept + rows rejected) from the Parquet files it wrote. A re-run with the same inputs and
configuration skips steps whose done-marker matches and whose outputs still have the sizes and SHA-256 the
marker recorded.

A run folder is a unit (docs/reliability.md): one run at a time holds its lock (`.curate.lock`, with the holder's
pid); leftovers of a killed run (temp files, half-built exports) are removed when the next run starts;
report.json is removed first and written last, so a folder with a report.json is a finished, consistent run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import polars as pl

from curate import __version__
from curate.config import Pipeline
from curate.errors import ConfigError, ConservationError, InputError, OutputError, RunLockedError
from curate.io import ROW_GROUP, STREAM_CHUNK, atomic_path, atomic_write_text, count_rows, sha256_file, writing
from curate.schema import PAIR_SCHEMA
from curate.stages import stage_module

Progress = Callable[[str], None]


def reasons_of(path: Path) -> dict[str, int]:
    if count_rows(path) == 0:
        return {}
    counts = pl.scan_parquet(path).group_by("reason").len().sort("reason").collect()
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


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
    """True when the step's DONE marker matches and every output it lists still has its size and SHA-256 (a
    deleted or truncated output means the step runs again)."""
    try:
        done = json.loads((step_dir / "DONE").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(done, dict) or done.get("marker") != marker or not done.get("outputs"):
        return False
    for name, want in done["outputs"].items():
        path = step_dir / name
        try:
            if path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def _write_done(step_dir: Path, marker: str, outputs: Sequence[str]) -> None:
    record = {"marker": marker, "outputs": {n: {"size": (step_dir / n).stat().st_size,
                                                  "sha256": sha256_file(step_dir / n)} for n in outputs}}
    atomic_write_text(step_dir / "DONE", json.dumps(record, indent=2, sort_keys=True) + "\n")


LOCK = ".curate.lock"


@contextmanager
def run_lock(out: Path) -> Iterator[dict[str, Any] | None]:
    """Hold the run folder's exclusive lock; yield what a previous holder that died left in the lock file (a
    stale lock), else None. The lock is an flock on `.curate.lock`, which records the holder's pid: the kernel
    releases it when the holder ends however it ends (kill -9 too), so a stale file never blocks; a live
    holder makes this raise RunLockedError naming it."""
    import fcntl
    import socket
    import time

    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{out}: can't create the run lock ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "a process that is starting"
            raise RunLockedError(f"{out}: another curate run is using this run folder ({who}); wait for it to "
                                 f"finish or choose another --out") from None
        except OSError as e:  # a file system without locks (some network mounts)
            os.close(fd)
            raise OutputError(
                f"{out}: can't lock the run folder ({e.strerror}); use a local folder for --out"
            ) from None
        try:  # the previous holder may have removed the file between our open and our flock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time())}).encode(), 0)
    try:
        yield stale
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


LEFTOVERS = (".*.tmp", ".curate-export-*", "curate-export-*")


def clean_leftovers(out: Path) -> list[str]:
    """Remove what an interrupted run left behind in a run folder: atomic-write temp files (`.NAME.*.tmp`) in
    the folder, its step folders and its export, and half-built exports (`.curate-export-*`). Only run under
    the lock. Returns what was removed (relative paths, sorted)."""
    dirs = [out, out / "export"] + sorted(d for d in out.glob("[0-9][0-9]-*") if d.is_dir())
    removed = []
    for d in dirs:
        for pattern in LEFTOVERS:
            for p in sorted(d.glob(pattern)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.relative_to(out).as_posix())
    return sorted(removed)


def make_out_dir(out: Path, flag: str = "--out") -> None:
    """Create the output folder, or say in one line why it can't be (a file in the way, no permission)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{flag} {out}: is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputError(f"{flag} {out}: a part of this path is a file, not a folder") from None
    except PermissionError:
        raise OutputError(f"{flag} {out}: permission denied (can't create the folder)") from None
    except OSError as e:
        raise OutputError(f"{flag} {out}: can't create the folder ({e.strerror})") from None
    if not out.is_dir():
        raise OutputError(f"{flag} {out}: is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: not writable (permission denied or a read-only file system)")


def sink_result(kept: pl.LazyFrame, rejects: pl.LazyFrame, step_dir: Path) -> tuple[Path, Path]:
    """Stream a stage's kept rows and rejects to Parquet, atomically."""
    from curate.io import STAGE_CODEC, STAGE_CODEC_LEVEL  # here, so this hunk stays apart from the imports

    step_dir.mkdir(parents=True, exist_ok=True)
    kept_path, rejects_path = step_dir / "kept.parquet", step_dir / "rejects.parquet"
    # Both sinks in one pass, with small streaming morsels: Polars' default morsels held 938-1,079 MB at 1M pairs
    # (clean); 2,000-row morsels hold ~390 MB at the same speed (docs/BENCHMARKS.md).
    with writing(step_dir), atomic_path(kept_path) as tk, atomic_path(rejects_path) as tr, \
            pl.Config(streaming_chunk_size=STREAM_CHUNK):
        pl.collect_all(
            [kept.sink_parquet(tk, lazy=True, row_group_size=ROW_GROUP, compression=STAGE_CODEC,
                               compression_level=STAGE_CODEC_LEVEL),
             rejects.sink_parquet(tr, lazy=True, row_group_size=ROW_GROUP, compression=STAGE_CODEC,
                                  compression_level=STAGE_CODEC_LEVEL)],
            engine="streaming",
        )
    return kept_path, rejects_path


def input_files(inputs: Sequence[str | Path]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The sources ingest reads (canonical names, sorted; readers.expand) with their SHA-256, for the manifest
    and the ingest marker; and the folder entries that are not read."""
    from curate.ingest import readers, source_keys

    sources, not_read = readers.expand(list(inputs))
    keys = source_keys(sources)
    return [{"path": s.name, "sha256": k.split("#")[0]} for s, k in zip(sources, keys, strict=True)], not_read


def run_pipeline(
    pipeline: Pipeline,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    mapping: dict[str, str] | None = None,
    progress: Progress | None = None,
    export: bool = True,
    strict_inputs: bool = False,
    engine: str | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run ingest, the pipeline's stages and export into `out_dir`; return the run report. The run folder is
    locked for the run (a second run into it raises RunLockedError naming the holder).

    A run that stops on an error inside its run folder still writes report.json / report.html: the error, the
    step it stopped in and the steps that finished (with their rejects); then the error propagates unchanged.

    `engine` ('local' or 'ray'; default: the pipeline's [pipeline] engine) executes ingest and the stages
    (curate/engines/); the files written, and so the export, are the same under every engine."""
    from curate import engines
    from curate.ingest import readers

    eng = engines.get(engine or pipeline.engine, ray_address or pipeline.ray_address)

    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    check_columns(pipeline)
    files, not_read = input_files(inputs)  # inputs checked and hashed before anything is written
    if stray := readers.worth_warning(not_read):  # a README or a script beside the data is only listed
        if strict_inputs:
            raise InputError(f"--strict-inputs: {readers.describe_not_read(stray)}")
        say(f"warning: {readers.describe_not_read(stray)} (--strict-inputs makes this an error)")
    make_out_dir(out)
    with run_lock(out) as stale:
        if stale:
            say(f"a previous run (pid {stale.get('pid')}) did not finish; its leftovers are removed")
        clean_leftovers(out)
        (out / "report.json").unlink(missing_ok=True)  # written last: present only when the run finished
        state: dict[str, Any] = {}
        try:
            with writing(out):
                report = _run(pipeline, inputs, out, files, not_read, mapping, say, export, state, eng)
        except Exception as exc:
            write_failed_report(pipeline, out, state.get("steps", []), exc)
            raise
    return report


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


def _run(pipeline: Pipeline, inputs: Sequence[str | Path], out: Path, files: list[dict[str, str]],
         not_read: list[dict[str, str]], mapping: dict[str, str] | None, say: Progress, export: bool,
         state: dict[str, Any], eng: Any) -> dict[str, Any]:
    from curate import report as report_mod

    report_mod.write_json(out / "pipeline.json", pipeline.raw)
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
        ingest_report = eng.ingest([str(i) for i in inputs], ingest_dir, mapping, binarize[0], binarize[1])
        # A row of rated responses may yield several pairs: rows in + extra pairs = kept + rejected.
        _check_conservation("ingest", ingest_report["input_rows"] + ingest_report.get("extra_pairs", 0),
                            ingest_dir / "pairs.parquet", ingest_dir / "rejects.parquet")
        _write_done(ingest_dir, marker, ("pairs.parquet", "rejects.parquet", "report.json"))

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
        step_dir = out / f"{i:02d}-{name}"
        marker = _marker(name, __version__, asdict(cfg), marker)
        rows_in = count_rows(current)
        if _done(step_dir, marker):
            say(f"{name}: unchanged, skipped")
            stats = json.loads((step_dir / "stats.json").read_text())
        else:
            say(f"{name}: {rows_in:,} pairs")
            stats = eng.run_stage(name, cfg, current, step_dir)
            report_mod.write_json(step_dir / "stats.json", stats)
            # A stage that adds rows on purpose (balance with upsample = true) reports them as stats["copies"].
            copies = int(stats.get("copies", 0) or 0)
            _check_conservation(name, rows_in + copies, step_dir / "kept.parquet", step_dir / "rejects.parquet")
            _write_done(step_dir, marker, ("kept.parquet", "rejects.parquet", "stats.json"))
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
    run_report["not_read"] = not_read
    if export:
        from curate.export import export as do_export

        say("export")
        run_report["export"] = do_export(out, out / "export", pipeline.export, pipeline=pipeline)
    atomic_write_text(out / "report.html", report_mod.render(run_report))
    report_mod.write_json(out / "report.json", run_report)  # last: its presence means the run finished
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
        s = lengths[col].drop_nulls()
        if s.len() == 0:
            out[col] = {}
            continue
        # Non-empty, null-free lengths: every aggregate below is a number (Polars types them as any scalar or None).
        pct = {f"p{q}": int(cast(float, s.quantile(q / 100, "nearest"))) for q in (5, 25, 50, 75, 95, 99)}
        edges, counts = histogram_counts(s.to_list(), 30)
        out[col] = {"min": int(cast(int, s.min())), "max": int(cast(int, s.max())),
                    "mean": round(float(cast(float, s.mean())), 1), **pct,
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
