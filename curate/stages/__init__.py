"""Stage registry: pipeline files name stages by these keys; modules are imported only when used."""

from __future__ import annotations

import importlib
from types import ModuleType

# Order here is the recommended pipeline order.
STAGES: dict[str, str] = {
    "clean": "curate.stages.clean",
    "quality": "curate.stages.quality",
    "language": "curate.stages.language",
    "dedup": "curate.stages.dedup",
    "balance": "curate.stages.balance",
}


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(STAGES[name])
