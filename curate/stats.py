"""`curate stats`: a quick look at anything curate writes — without running anything.

Reads run folders (the final pairs, plus the run's rejects), ingest and stage folders (`pairs.parquet` /
`kept.parquet` + `rejects.parquet`), export folders (the first of `trl/*.parquet`, `trl/*.jsonl`,
`llamafactory/*.jsonl`, `hf/` that is there), their `trl/`, `llamafactory/` and `hf/` subfolders, and single files:
canonical pairs or rejects (Parquet), TRL conversational records (Parquet / JSON Lines), LLaMA-Factory ShareGPT
ranking records (JSON Lines) and `save_to_disk` Arrow files. Each table is brought to the canonical text columns
(system, prompt turns, chosen, rejected) so counts and lengths mean the same thing whatever the format; raw input
files in other shapes are `curate ingest`'s job and get an error saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError

SPLIT_ORDER = ("train", "test")
DATA_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".arrow")
_MSG = pl.Struct({"role": pl.String, "content": pl.String})


def _split_files(folder: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(split, file) for the data files directly in `folder` with the first suffix that has any, train/test first."""
    for suffix in suffixes:
        files = [f for f in folder.iterdir() if f.is_file() and f.suffix == suffix and not f.name.startswith(".")]
        if files:
            rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
            files.sort(key=lambda f: (rank.get(f.stem, len(rank)), f.stem))
            return [(f.stem, f) for f in files]
    return []


def _hf_files(folder: Path) -> list[tuple[str, Path]]:
    """(split, arrow file) of a `save_to_disk` folder: a DatasetDict (dataset_dict.json) or one Dataset."""
    dd = folder / "dataset_dict.json"
    if dd.is_file():
        try:
            splits = json.loads(dd.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"{dd}: unreadable dataset_dict.json ({exc})") from None
        return [(s, f) for s in splits for f in sorted((folder / s).glob("*.arrow"))]
    return [(folder.name, f) for f in sorted(folder.glob("*.arrow"))]


def _is_hf(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def resolve(p: Path) -> tuple[str, list[tuple[str | None, Path]], Path | None]:
    """What `p` is (run, pairs, stage, export, trl, llamafactory, hf, file), the (split, file) tables to read, and the
    rejects file that goes with it, if any."""
    from curate.export import resolve_pairs

    if p.is_file():
        if p.suffix not in DATA_SUFFIXES:
            raise InputError(f"{p}: not a file curate writes (.parquet, .jsonl or .arrow)")
        return "file", [(None, p)], None
    if not p.is_dir():
        raise InputError(f"{p}: not a file or folder")
    if (p / "pairs.parquet").is_file() or (p / "review" / "pairs.parquet").is_file():
        pairs, _ = resolve_pairs(p)
        rejects = p / "rejects.parquet"
        kind = "run" if (p / "pipeline.json").is_file() else "pairs"
        return kind, [(None, pairs)], rejects if rejects.is_file() else None
    if (p / "kept.parquet").is_file():
        rejects = p / "rejects.parquet"
        return "stage", [(None, p / "kept.parquet")], rejects if rejects.is_file() else None
    for sub, suffixes in (("trl", (".parquet",)), ("trl", (".jsonl",)), ("llamafactory", (".jsonl",))):
        if (p / sub).is_dir() and (files := _split_files(p / sub, suffixes)):
            return "export", list(files), None
    if (p / "hf").is_dir() and _is_hf(p / "hf") and (files := _hf_files(p / "hf")):
        return "export", list(files), None
    if _is_hf(p) and (files := _hf_files(p)):
        return "hf", list(files), None
    if files := _split_files(p, DATA_SUFFIXES):
        return p.name if p.name in ("trl", "llamafactory") else "folder", list(files), None
    raise InputError(f"{p}: not a run, stage or export folder, and holds no .parquet, .jsonl or .arrow files")


def _scan(f: Path) -> pl.LazyFrame:
    try:
        if f.suffix == ".parquet":
            lf = pl.scan_parquet(f)
        elif f.suffix == ".arrow":  # datasets' save_to_disk writes Arrow IPC streams
            lf = pl.read_ipc_stream(f).lazy()
        elif f.stat().st_size == 0:  # an empty split
            return pl.LazyFrame()
        else:
            lf = pl.scan_ndjson(f, infer_schema_length=None)
        lf.collect_schema()
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a bad file
        raise InputError(f"{f}: not readable ({str(exc).splitlines()[0]})") from None
    return lf


def _is_messages(dtype: pl.DataType | None, keys: tuple[str, str]) -> bool:
    return isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct) and \
        set(keys) <= {fld.name for fld in dtype.inner.fields}


def canonical_view(lf: pl.LazyFrame, where: Path) -> tuple[str, pl.LazyFrame]:
    """(shape, frame with system / prompt / chosen / rejected as in the canonical schema, plus the other columns)."""
    schema = lf.collect_schema()
    names = schema.names()
    if not names:
        return "empty", pl.LazyFrame(schema={"system": pl.String, "prompt": pl.List(_MSG), "chosen": pl.String,
                                             "rejected": pl.String})
    rest = [pl.col(c) for c in names if c not in ("system", "prompt", "chosen", "rejected", "conversations")]
    if "prompt" in names and _is_messages(schema["prompt"], ("role", "content")) and "chosen" in names:
        if schema["chosen"] == pl.String and schema.get("rejected") == pl.String:
            shape = "rejects" if "reason" in names else "pairs"
            system = pl.col("system") if "system" in names else pl.lit(None, dtype=pl.String).alias("system")
            return shape, lf.select(system, pl.col("prompt").cast(pl.List(_MSG)), "chosen", "rejected", *rest)
        if (_is_messages(schema["chosen"], ("role", "content"))
                and _is_messages(schema.get("rejected"), ("role", "content"))):
            role = pl.element().struct.field("role")

            def content(c: str) -> pl.Expr:
                return pl.col(c).list.eval(pl.element().struct.field("content")).list.join("")

            system = pl.col("prompt").list.filter(role == "system").list.eval(
                pl.element().struct.field("content")).list.join("\n\n")
            return "trl", lf.select(
                pl.when(system != "").then(system).otherwise(None).alias("system"),
                pl.col("prompt").list.filter(role != "system").cast(pl.List(_MSG)).alias("prompt"),
                content("chosen").alias("chosen"), content("rejected").alias("rejected"), *rest,
            )
    if "conversations" in names and _is_messages(schema["conversations"], ("from", "value")) and "chosen" in names:
        frm = pl.element().struct.field("from")
        turns = pl.col("conversations").list.filter(frm != "system").list.eval(pl.struct(
            pl.when(frm == "human").then(pl.lit("user")).otherwise(pl.lit("assistant")).alias("role"),
            pl.element().struct.field("value").alias("content"),
        ))

        def value(c: str) -> pl.Expr:
            return pl.col(c).struct.field("value") if isinstance(schema[c], pl.Struct) else pl.col(c)

        system = pl.col("system") if "system" in names else pl.lit(None, dtype=pl.String)
        return "llamafactory", lf.select(
            pl.when(system != "").then(system).otherwise(None).alias("system"), turns.alias("prompt"),
            value("chosen").alias("chosen"), value("rejected").alias("rejected"), *rest,
        )
    raise InputError(f"{where}: not a table curate writes (columns {', '.join(names)}); to read a raw preference "
                     f"file use `curate ingest`")


def _counts(lf: pl.LazyFrame, col: str) -> dict[str, int]:
    rows = lf.group_by(col).len().sort(col, nulls_last=True).collect().iter_rows()
    return {"(none)" if k is None else str(k): v for k, v in rows}


def compute(path: str | Path) -> dict[str, Any]:
    """Counts (pairs, prompts, by split / source / language / reason) and length percentiles of `path`."""
    from curate.runner import length_stats

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder")
    kind, tables, rejects_file = resolve(p)
    frames, shapes = [], []
    for split, f in tables:
        shape, lf = canonical_view(_scan(f), f)
        shapes.append(shape)
        frames.append(lf.with_columns(pl.lit(split, dtype=pl.String).alias("__split")) if split else lf)
    lf = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    names = lf.collect_schema().names()
    shape = next((s for s in shapes if s != "empty"), "empty")
    key = pl.col("prompt_id") if "prompt_id" in names else pl.concat_str(
        [pl.col("system").fill_null(""),
         pl.col("prompt").list.eval(pl.element().struct.field("content")).list.join("\x1e").fill_null("")],
        separator="\x1f")
    out: dict[str, Any] = {
        "path": str(tables[0][1]) if kind in ("file", "run", "pairs", "stage") else str(p),
        "kind": kind,
        "format": shape,
        "files": [str(f) for _, f in tables],
        "pairs": lf.select(pl.len()).collect().item(),
        "prompts": lf.select(key.n_unique()).collect().item(),
    }
    if "__split" in names:
        out["by_split"] = _counts(lf, "__split")
    if "source" in names:
        out["by_source"] = _counts(lf, "source")
    if "lang" in names:
        out["by_lang"] = _counts(lf, "lang")
    for col in ("stage", "reason"):
        if shape == "rejects" and col in names:
            out[f"by_{col}"] = _counts(lf, col)
    if rejects_file is not None:
        rej = _scan(rejects_file)
        out["rejected"] = rej.select(pl.len()).collect().item()
        if "reason" in rej.collect_schema().names():
            out["rejects_by_reason"] = _counts(rej, "reason")
    texts = lf.filter(pl.col("prompt").is_not_null() & pl.col("chosen").is_not_null()
                      & pl.col("rejected").is_not_null())  # ingest rejects may have no text
    out["lengths"] = {k: {q: v for q, v in st.items() if q != "histogram"} for k, st in length_stats(texts).items()}
    return out
