"""Engines: how the runner's steps are executed. The stages and their results are the same under every engine.

    local   one process, Polars (the default: Ray's start-up and scheduling cost more than they save below a few
            hundred thousand pairs)
    ray     Ray Data on a local or remote Ray cluster (`curate run … --engine ray [--ray-address ADDR]`, or
            `[pipeline] engine = "ray"`); needs the `curate[ray]` extra. See docs/scaling.md.

An engine provides two things the runner calls, with the same contract as the local path:
    ingest(inputs, out_dir, mapping, binarize, seed) -> ingest report   (out_dir/pairs.parquet, rejects.parquet)
    run_stage(name, cfg, current, step_dir) -> stats      (writes step_dir/kept.parquet, rejects.parquet)
It never reaches into a stage: it calls the pieces the stage module exposes (`run`, and for stages it spreads,
`ROW_LOCAL` and `merge_stats`). Engines are imported only when chosen, so nothing Ray-related is imported by a
local run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from curate.errors import ConfigError

ENGINES: dict[str, str] = {"local": "curate.engines.local", "ray": "curate.engines.ray"}
DEFAULT = "local"


class Engine(Protocol):
    name: str

    def ingest(self, inputs: list[str], out_dir: Path, mapping: dict[str, str] | None, binarize: str,
               seed: int) -> dict[str, Any]: ...

    def run_stage(self, name: str, cfg: Any, current: Path, step_dir: Path) -> dict[str, Any]: ...

    def close(self) -> None: ...


def get(name: str | None = None, address: str | None = None) -> Engine:
    """The engine called `name` (default: local); `address` is the Ray cluster to join (ray only)."""
    name = name or DEFAULT
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r} (known engines: {', '.join(ENGINES)})")
    if address and name != "ray":
        raise ConfigError(f"--ray-address {address!r} needs --engine ray")
    module = importlib.import_module(ENGINES[name])
    return module.Engine(address=address) if name == "ray" else module.Engine()
