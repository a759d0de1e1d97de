"""Token lengths of pairs as the training run will see them (`over_max_tokens`).

Why here and not only in `curate train`: TRL never drops a pair that is too long, it truncates it (and chosen and
rejected are cut at different points), and a pair whose prompt alone fills `max_length` turns the ORPO loss NaN.
Dropping such pairs while curating keeps them visible (rejects.parquet, report.html) instead of silently cut.

How the count lines up with `curate train` (curate/train/preflight.py): with a tokenizer that has a chat template
(a transformers folder, or a train preset's model), each pair is rendered by `curate.train.preflight.render`
(TRL's `apply_chat_template`, exactly the text the trainer tokenizes), after the preset's system-message policy
(keep / merge / drop). Tokens = prompt (+ BOS when the rendered prompt lacks it) + the longer reply (+ EOS when it
lacks it), the same sum the trainer's pre-flight compares with `orpo.max_length`; a pair is over when that sum
exceeds `max_tokens`. With a bare `tokenizer.json` (no chat template) the count is system + turns + longer reply
without template tokens: a lower bound, a few tokens per turn short of the trained length.

Division of labour with training: `curate train`'s pre-flight drops only the pairs whose *prompt* alone fills
`max_length` (their replies would be cut to nothing and turn the loss NaN) and lets TRL truncate the replies of the
other over-long pairs. With `train_preset` (or the same tokenizer and `max_tokens = orpo.max_length`) the quality
stage rejects every pair over the budget, visibly (reason `over_max_tokens`, counted in report.html), so the
trainer then has nothing to drop or truncate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """What to count with and against: the tokenizer (path or name), the limit and the system-message policy."""

    tokenizer: str
    max_tokens: int
    system: str = "keep"
    source: str = ""  # where the values came from, for the report


def budget(tokenizer: str | None, preset: str | None, max_tokens: int | None, system: str | None) -> Budget | None:
    """The token budget from the stage's options; a train preset fills what they leave unset."""
    if preset is None and tokenizer is None:
        return None
    limits: dict[str, Any] = {}
    if preset is not None:
        limits = _preset_limits(preset, tokenizer)
    tok = tokenizer or limits.get("model") or ""
    limit = max_tokens if max_tokens is not None else limits.get("max_length")
    if not tok:
        raise ConfigError(f"[quality] train_preset {preset!r} names no model: set tokenizer = \"path/to/model\"")
    if limit is None:
        raise ConfigError("[quality] tokenizer needs max_tokens (or train_preset, whose orpo.max_length is used)")
    where = f"preset {preset}" if preset else "tokenizer"
    return Budget(str(tok), int(limit), system or limits.get("system", "keep"), where)


def _preset_limits(preset: str, model: str | None) -> dict[str, Any]:
    """model / max_length / system of a train preset, read by curate.train.spec (never parsed here)."""
    from curate.train import TrainError, spec

    try:
        return dict(spec.length_limits(preset, (), model))
    except TrainError as exc:
        raise ConfigError(f"[quality] train_preset: {exc}") from None


def apply_system(prompt: list[dict], mode: str) -> list[dict]:
    """The train system-message policy on one conversation (keep / merge into the first user turn / drop)."""
    from curate.train import preflight

    return preflight.apply_system(prompt, mode)


def counter(b: Budget) -> Callable[[list[dict[str, Any]]], list[int]]:
    """A function: rows {system, prompt, chosen, rejected} → tokens of prompt + longer reply, per row."""
    path = Path(b.tokenizer)
    try:
        if path.is_file():
            from tokenizers import Tokenizer

            raw = Tokenizer.from_file(str(path))
            return lambda rows: _raw_counts(raw, rows)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(b.tokenizer, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a config problem for the user
        raise ConfigError(
            f"[quality] tokenizer {b.tokenizer!r} can't be loaded offline: {str(exc).splitlines()[0]}"
        ) from None
    if getattr(tok, "chat_template", None) is None:
        return lambda rows: _raw_counts(tok.backend_tokenizer, rows)
    return lambda rows: _template_counts(tok, rows, b.system)


def _turns(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = [{"role": t["role"], "content": t["content"] or ""} for t in row.get("prompt") or []]
    if row.get("system"):
        turns = [{"role": "system", "content": row["system"]}, *turns]
    return turns


def _raw_counts(tok, rows: list[dict[str, Any]]) -> list[int]:
    def n(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    prompts = n(["\n".join(t["content"] for t in _turns(r)) for r in rows])
    chosen = n([r.get("chosen") or "" for r in rows])
    rejected = n([r.get("rejected") or "" for r in rows])
    return [p + max(c, j) for p, c, j in zip(prompts, chosen, rejected, strict=True)]


def _template_counts(tok, rows: list[dict[str, Any]], system: str) -> list[int]:
    from curate.train.preflight import render

    prompts, chosen, rejected = [], [], []
    for r in rows:
        example = {
            "prompt": apply_system(_turns(r), system),
            "chosen": [{"role": "assistant", "content": r.get("chosen") or ""}],
            "rejected": [{"role": "assistant", "content": r.get("rejected") or ""}],
        }
        try:
            out = render(example, tok)
        except Exception as exc:  # noqa: BLE001 - jinja raises TemplateError for roles a template refuses
            hint = " (set train_preset or system = \"merge\")" if "system" in str(exc).lower() else ""
            raise ConfigError(f"[quality] the tokenizer's chat template refused a pair: {exc}{hint}") from None
        prompts.append(out["prompt"])
        chosen.append(out["chosen"])
        rejected.append(out["rejected"])
    bos, eos = tok.bos_token_id, tok.eos_token_id

    def ids(texts: list[str]) -> list[list[int]]:
        return tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    p = [len(x) + (1 if bos is not None and (not x or x[0] != bos) else 0) for x in ids(prompts)]
    reply = [
        max(len(c) + (1 if not c or c[-1] != eos else 0), len(j) + (1 if not j or j[-1] != eos else 0))
        for c, j in zip(ids(chosen), ids(rejected), strict=True)
    ]
    return [a + b for a, b in zip(p, reply, strict=True)]
