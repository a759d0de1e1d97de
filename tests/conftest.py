"""Shared fixtures: build small canonical pair tables in code; locate the repo and ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_pairs(rows: list[dict]) -> pl.DataFrame:
    """Canonical pairs from short dicts: prompt may be a string (one user turn) or a list of messages."""
    from curate.schema import conform, row_ids, with_ids

    full = []
    for i, r in enumerate(rows):
        prompt = r.get("prompt", f"prompt {i}")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        full.append(
            {
                "source": r.get("source", "test.jsonl"),
                "source_row": r.get("source_row", i),
                "system": r.get("system"),
                "prompt": prompt,
                "chosen": r.get("chosen", f"chosen {i}"),
                "rejected": r.get("rejected", f"rejected {i}"),
                "chosen_score": r.get("chosen_score"),
                "rejected_score": r.get("rejected_score"),
                "meta": json.dumps(r.get("meta", {})),
                **{k: v for k, v in r.items() if k not in {"source", "source_row", "system", "prompt", "chosen",
                                                       "rejected", "chosen_score", "rejected_score", "meta"}},
            }
        )
    df = pl.DataFrame(full)
    if "row_id" not in df.columns:  # as ingest does: unique per row, from the source and the row index
        df = df.with_columns(pl.Series("row_id", [row_ids(s, [r])[0] for s, r in zip(df["source"], df["source_row"])]))
    return df.pipe(lambda d: conform(with_ids(d)).collect())


@pytest.fixture
def pairs_factory():
    return make_pairs


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips only outside CI when the folder is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing in CI")
        pytest.skip(f"{path} not present (outside CI)")
    return path
