"""Shared helpers for the ingest tests (fixture paths, the shared real-data folder, small writers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "ingest"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
LLAMAFACTORY = SHARED_DATA / "llamafactory_dpo_demo"


def shared_data() -> Path:
    """The shared real samples; in CI they must be there (no skipping), elsewhere a missing folder skips."""
    if not LLAMAFACTORY.is_dir():
        if os.environ.get("CI"):
            raise AssertionError(f"shared sample data missing at {LLAMAFACTORY}")
        pytest.skip(f"shared sample data not at {LLAMAFACTORY} (not in CI)")
    return LLAMAFACTORY


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_out(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return pl.read_parquet(out / "pairs.parquet"), pl.read_parquet(out / "rejects.parquet"), report


GOOD = {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}
