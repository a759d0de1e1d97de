"""Reference sets for decontamination: prompts that must not appear (or nearly appear) in the training data.

Accepted files:
- `.txt`: one prompt per non-empty line;
- `.jsonl` / `.json` / `.parquet` with a `prompt` column: a string, or a list of {role, content} messages (the
  canonical pair format; the contents are joined with newlines, as the dedup key does);
- `.jsonl` / `.json` of plain strings;
- anything else, or a preference file without a `prompt` column: read with `curate.ingest` when it is available.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curate.errors import InputError


@dataclass(frozen=True)
class Reference:
    """Reference prompts and where each came from (for the reject detail)."""

    texts: list[str]
    labels: list[str]  # e.g. "mmlu.txt line 12"


def _prompt_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for m in value:
            if isinstance(m, dict):
                if m.get("role", "user") in ("user", "assistant", "human", "gpt", None):
                    parts.append(str(m.get("content") or m.get("value") or ""))
            elif isinstance(m, str):
                parts.append(m)
        return "\n".join(parts)
    return str(value)


def _from_records(records: list, name: str, unit: str) -> Reference | None:
    texts: list[str] = []
    labels: list[str] = []
    for k, rec in enumerate(records):
        text = rec if isinstance(rec, str) else rec.get("prompt") if isinstance(rec, dict) else None
        text = _prompt_text(text)
        if text is None:
            return None
        texts.append(text)
        labels.append(f"{name} {unit} {k + 1}")
    return Reference(texts, labels)


def load(path: str | Path) -> Reference:
    """Read one reference file; an unreadable one is an InputError naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"reference set {p}: file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".txt":
            lines = p.read_text(encoding="utf-8").splitlines()
            pairs = [(f"{p.name} line {k + 1}", line) for k, line in enumerate(lines) if line.strip()]
            return Reference([t for _, t in pairs], [lab for lab, _ in pairs])
        if suffix == ".jsonl":
            recs = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
            ref = _from_records(recs, p.name, "line")
        elif suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            ref = _from_records(data, p.name, "item") if isinstance(data, list) else None
        elif suffix == ".parquet":
            df = pl.read_parquet(p)
            ref = _from_records(df.select("prompt").to_dicts(), p.name, "row") if "prompt" in df.columns else None
        else:
            ref = None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"reference set {p}: can't read it ({type(exc).__name__}: {exc})") from None
    if ref is not None:
        return ref
    return _via_ingest(p)


def _via_ingest(p: Path) -> Reference:
    try:
        from curate.ingest import ingest  # written alongside; optional here
    except ImportError:
        raise InputError(
            f"reference set {p}: expected a .txt list of prompts, or .jsonl/.json/.parquet with a 'prompt' column"
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        ingest([str(p)], tmp, None)
        df = pl.read_parquet(Path(tmp) / "pairs.parquet", columns=["prompt", "source_row"])
    ref = _from_records(df.select("prompt").to_dicts(), p.name, "row")
    if ref is None:  # pragma: no cover — ingest always writes canonical prompts
        raise InputError(f"reference set {p}: no prompts found")
    return ref


def load_all(paths: tuple[str, ...] | list[str]) -> Reference:
    texts: list[str] = []
    labels: list[str] = []
    for path in paths:
        ref = load(path)
        texts += ref.texts
        labels += ref.labels
    return Reference(texts, labels)
