"""The local engine: every step in this process, with Polars (the behaviour curate always had)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


class Engine:
    name = "local"

    def ingest(self, inputs: list[str], out_dir: Path, mapping: dict[str, str] | None, binarize: str,
               seed: int) -> dict[str, Any]:
        from curate.ingest import ingest

        return ingest(inputs, out_dir, mapping=mapping, binarize=binarize, seed=seed)

    def run_stage(self, name: str, cfg: Any, current: Path, step_dir: Path) -> dict[str, Any]:
        from curate.runner import sink_result
        from curate.stages import stage_module

        result = stage_module(name).run(pl.scan_parquet(current), cfg)
        sink_result(result.kept, result.rejects, step_dir)
        return result.stats

    def close(self) -> None:
        pass
