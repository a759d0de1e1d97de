"""`curate stats`: a quick look at a pairs file or run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError


def compute(path: str | Path) -> dict[str, Any]:
    from curate.export import resolve_pairs
    from curate.runner import length_stats

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder")
    pairs_path, _ = resolve_pairs(p)
    try:
        lf = pl.scan_parquet(pairs_path)
        names = lf.collect_schema().names()
    except Exception as exc:  # noqa: BLE001 - polars raises several types for a bad file
        raise InputError(f"{pairs_path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("prompt_id", "source", "prompt", "chosen", "rejected") if c not in names]
    if missing:
        raise InputError(f"{pairs_path}: not a table of canonical pairs (missing {', '.join(missing)})")
    out: dict[str, Any] = {
        "path": str(pairs_path),
        "pairs": lf.select(pl.len()).collect().item(),
        "prompts": lf.select(pl.col("prompt_id").n_unique()).collect().item(),
        "by_source": dict(lf.group_by("source").len().sort("source").collect().iter_rows()),
    }
    if "lang" in names:
        out["by_lang"] = dict(lf.group_by("lang").len().sort("lang").collect().iter_rows())
    out["lengths"] = {k: {q: v for q, v in st.items() if q != "histogram"} for k, st in length_stats(lf).items()}
    return out
