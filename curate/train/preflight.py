"""Read a curate export for training and check it against the model before any GPU time is spent.

`load_export` opens EXPORT_DIR/hf (the DatasetDict the exporter saves), keeps only prompt/chosen/rejected and
applies the system-message policy. `check` renders every pair with the model's chat template (TRL's own
`apply_chat_template`, so the text is exactly what the trainer will tokenize), measures token lengths against
`max_length` and counts the pairs that would be truncated. The library returns data; the command prints it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.train import TrainError

COLUMNS = ("prompt", "chosen", "rejected")


def manifest_sha256(export_dir: str | Path) -> str:
    """sha256 of EXPORT_DIR/manifest.json's bytes: names the exact dataset a model was trained on."""
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{export_dir}: no manifest.json; is this a curate export folder?")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _system_policy(mode: str):
    def apply(row: dict[str, Any]) -> dict[str, Any]:
        prompt = list(row["prompt"])
        if prompt and prompt[0]["role"] == "system":
            system, rest = prompt[0]["content"], prompt[1:]
            if mode == "drop":
                prompt = rest
            elif rest and rest[0]["role"] == "user":
                prompt = [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
            else:
                prompt = [{"role": "user", "content": system}, *rest]
        return {"prompt": prompt}

    return apply


def load_export(export_dir: str | Path, spec: dict[str, Any]):
    """(train, eval or None) as datasets.Dataset with only the TRL columns, system messages per curate.system."""
    from datasets import DatasetDict, load_from_disk

    hf = Path(export_dir) / "hf"
    if not hf.is_dir():
        raise TrainError(f"{export_dir}: no hf/ folder; is this a curate export folder (curate run … / curate export)?")
    try:
        dd = load_from_disk(str(hf))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise TrainError(f"{hf}: can't load the dataset: {exc}") from None
    if not isinstance(dd, DatasetDict):
        raise TrainError(f"{hf}: expected a DatasetDict with train/test splits, found a single Dataset")
    cur = spec["curate"]
    if cur["train_split"] not in dd:
        raise TrainError(f"{hf}: no split {cur['train_split']!r} (splits: {', '.join(dd)})")
    out = []
    for name in (cur["train_split"], cur["eval_split"]):
        if name not in dd or len(dd[name]) == 0:
            out.append(None)
            continue
        ds = dd[name]
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise TrainError(f"{hf}[{name}]: missing column {missing[0]!r} (needs {', '.join(COLUMNS)})")
        ds = ds.select_columns(list(COLUMNS))
        if cur["system"] != "keep" and not isinstance(ds[0]["prompt"], str):
            ds = ds.map(_system_policy(cur["system"]), desc=f"system messages: {cur['system']}")
        out.append(ds)
    if out[0] is None:
        raise TrainError(f"{hf}: split {cur['train_split']!r} is empty")
    return out[0], out[1]


def dependency_warnings(spec: dict[str, Any]) -> list[str]:
    """Optional packages the configuration needs that this machine lacks (bitsandbytes, DeepSpeed, liger)."""
    warnings = []
    optim = spec["orpo"].get("optim", "")
    if ("paged" in optim or "8bit" in optim or spec["curate"]["method"] == "qlora") \
            and importlib.util.find_spec("bitsandbytes") is None:
        warnings.append(f"optim={optim!r} / method={spec['curate']['method']!r} needs bitsandbytes, "
                        "which is not installed (pip install bitsandbytes)")
    if spec["preset"]["num_processes"] > 1 and spec["preset"]["accelerate_config"].startswith("deepspeed") \
            and importlib.util.find_spec("deepspeed") is None:
        warnings.append(f"{spec['preset']['accelerate_config']} needs DeepSpeed, which is not installed "
                        "(pip install deepspeed)")
    if spec["curate"]["loss"] == "liger" and importlib.util.find_spec("liger_kernel") is None:
        warnings.append("curate.loss=liger needs liger-kernel, which is not installed (pip install 'curate[gpu]')")
    return warnings


@dataclass
class Preflight:
    """What the model will see: one rendered example, token lengths, truncation count, warnings."""

    pairs: int
    max_length: int
    example: str  # prompt + chosen reply of the first pair, chat template applied
    length_min: int
    length_median: float
    length_p95: int
    length_max: int
    truncated: int  # pairs whose prompt + longer reply exceeds max_length
    truncated_ids: list[int] = field(default_factory=list)  # row indexes, first 20
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def render(row: dict[str, Any], tokenizer) -> dict[str, str]:
    """TRL's own chat-template step for one preference row (prompt / chosen / rejected strings)."""
    from trl.data_utils import apply_chat_template

    if isinstance(row["prompt"], str):
        return {k: row[k] for k in COLUMNS}
    return apply_chat_template({k: row[k] for k in COLUMNS}, tokenizer)


def check(train, tokenizer, max_length: int, spec: dict[str, Any] | None = None) -> Preflight:
    """Render every pair, measure prompt + longest reply in tokens, count what max_length would truncate."""
    if getattr(tokenizer, "chat_template", None) is None and not isinstance(train[0]["prompt"], str):
        raise TrainError("the tokenizer has no chat template, and the export is conversational; "
                         "use an instruction-tuned model's tokenizer (e.g. gemma-2-9b-it)")
    prompts, chosen, rejected = [], [], []
    for i, row in enumerate(train):
        try:
            r = render(row, tokenizer)
        except Exception as exc:  # jinja raises TemplateError for roles a template refuses
            hint = " (set --set curate.system=merge to fold system prompts into the first user turn)" \
                if "system" in str(exc).lower() else ""
            raise TrainError(f"pair {i}: the model's chat template refused it: {exc}{hint}") from None
        prompts.append(r["prompt"])
        chosen.append(r["chosen"])
        rejected.append(r["rejected"])
    enc = lambda texts: [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    p, c, j = enc(prompts), enc(chosen), enc(rejected)
    bos = 0 if tokenizer.bos_token_id is None else 1
    # TRL adds BOS when the rendered prompt lacks it and EOS after each reply when missing: count both.
    lengths = [
        lp + max(lc, lj) + 1 + (bos if not pr.startswith(tokenizer.bos_token or "\0") else 0)
        for lp, lc, lj, pr in zip(p, c, j, prompts, strict=True)
    ]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    ordered = sorted(lengths)
    warnings = []
    if over:
        warnings.append(f"{len(over)} of {len(lengths)} pairs exceed max_length={max_length} tokens and will be "
                        f"truncated (replies cut first); raise orpo.max_length or drop long pairs")
    if spec is not None:
        warnings += dependency_warnings(spec)
    return Preflight(
        pairs=len(lengths),
        max_length=max_length,
        example=prompts[0] + chosen[0],
        length_min=ordered[0],
        length_median=float(statistics.median(ordered)),
        length_p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        length_max=ordered[-1],
        truncated=len(over),
        truncated_ids=over[:20],
        warnings=warnings,
    )
