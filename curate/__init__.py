"""curate: raw preference data → clean, deduplicated, balanced, reviewed, ORPO-ready datasets."""

from __future__ import annotations

__version__ = "0.1.0"
