"""Run TRL's ORPO trainer on a curate export and write everything a user needs next to the model.

OUT_DIR after a run:
    train_config.json   the effective configuration (preset + overrides + model), enough to reproduce the run
    preflight.json      rendered example, token length statistics, truncation count
    model/ or adapter/  the fine-tuned model (full) or the LoRA adapter, with the tokenizer and a model card
    metrics.json        per-step loss, NLL, log-odds ratio, chosen/rejected rewards, reward accuracy (+ eval)
    metrics.png         the same, plotted
    README.md           the model card (also inside model/ or adapter/), naming the export's manifest sha256
    checkpoints/        Trainer checkpoints, when orpo.save_strategy is not "no" (used by --resume)

Training itself is TRL's (`trl.experimental.orpo.ORPOTrainer`); curate adds loading, checks and outputs. With
curate.loss = "chunked" or "liger" the trainer is one of the small subclasses in curate.train.fused.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.io import atomic_path, atomic_write_text
from curate.train import TrainError, card, preflight
from curate.train import spec as specmod

# The ORPO metrics TRL logs, as curate names them in metrics.json (TRL's key → ours).
METRICS = {
    "loss": "loss",
    "nll_loss": "nll_loss",
    "log_odds_ratio": "log_odds_ratio",
    "log_odds_chosen": "log_odds_chosen",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    manifest_sha256: str
    global_step: int


def _quiet() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise TrainError(f"can't load the tokenizer of {model!r}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def run_preflight(export_dir: str | Path, spec: dict[str, Any], tokenizer=None) -> preflight.Preflight:
    """Load the export and the tokenizer and check lengths; no model weights are loaded."""
    _quiet()
    tokenizer = tokenizer or load_tokenizer(spec["preset"]["model"])
    train_ds, _ = preflight.load_export(export_dir, spec)
    return preflight.check(train_ds, tokenizer, int(spec["orpo"].get("max_length") or 1024), spec)


def load_model(spec: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM

    cur = spec["curate"]
    kwargs: dict[str, Any] = {}
    if cur["dtype"] != "auto":
        kwargs["dtype"] = getattr(torch, cur["dtype"])
    if cur["attn_implementation"]:
        kwargs["attn_implementation"] = cur["attn_implementation"]
    if cur["method"] == "qlora":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainError("curate.method=qlora needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    try:
        return AutoModelForCausalLM.from_pretrained(spec["preset"]["model"], **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainError(f"can't load model {spec['preset']['model']!r}: {str(exc).splitlines()[0]}") from None


def orpo_args(spec: dict[str, Any], out_dir: Path):
    from trl.experimental.orpo import ORPOConfig

    try:
        return ORPOConfig(output_dir=str(out_dir / "checkpoints"), **spec["orpo"])
    except (TypeError, ValueError) as exc:
        raise TrainError(f"[orpo]: {exc}") from None


def peft_config(spec: dict[str, Any]):
    if spec["curate"]["method"] == "full":
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(**spec["lora"])
    except (TypeError, ValueError) as exc:
        raise TrainError(f"[lora]: {exc}") from None


def build_trainer(export_dir: str | Path, out_dir: str | Path, spec: dict[str, Any]):
    """A ready ORPOTrainer (TRL's, or curate's fused subclass) for this export and configuration."""
    _quiet()
    out = Path(out_dir)
    tokenizer = load_tokenizer(spec["preset"]["model"])
    train_ds, eval_ds = preflight.load_export(export_dir, spec)
    args = orpo_args(spec, out)
    if args.eval_strategy == "no":
        eval_ds = None
    loss = spec["curate"]["loss"]
    if loss == "liger":
        from curate.train.fused import FusedORPOTrainer as Trainer

        Trainer.check_available(args)
    elif loss == "chunked":
        from curate.train.fused import ChunkedORPOTrainer as Trainer

        Trainer.chunk_tokens = spec["curate"]["loss_chunk_tokens"]
    else:
        from trl.experimental.orpo import ORPOTrainer as Trainer
    model = load_model(spec)
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config(spec),
    )


def last_checkpoint(out_dir: str | Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(out_dir) / "checkpoints"
    found = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if not found:
        raise TrainError(f"--resume: no checkpoint in {ckpt_dir} (set orpo.save_strategy=\"steps\" and "
                         "orpo.save_steps to write them)")
    return found


def collect_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Trainer log history → {"train": [per step], "eval": [...], "summary": {...}} with curate's metric names."""
    train, evals, summary = [], [], {}
    for entry in log_history:
        if "loss" in entry:
            row = {"step": entry.get("step"), "epoch": entry.get("epoch")}
            row.update({ours: entry[theirs] for theirs, ours in METRICS.items() if theirs in entry})
            train.append(row)
        elif "eval_loss" in entry:
            row = {"step": entry.get("step"), "epoch": entry.get("epoch")}
            for theirs, ours in METRICS.items():
                if f"eval_{theirs}" in entry:
                    row[ours] = entry[f"eval_{theirs}"]
            evals.append(row)
        elif "train_runtime" in entry:
            summary.update({k: v for k, v in entry.items() if k.startswith("train_") or k in ("step", "epoch")})
    if train:
        summary["final"] = {k: v for k, v in train[-1].items() if k not in ("step", "epoch")}
    return {"train": train, "eval": evals, "summary": summary}


def plot_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """Four panels: loss and NLL, log-odds ratio, chosen/rejected rewards, reward accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics["train"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    panels = [
        ("loss", [("loss", "ORPO loss"), ("nll_loss", "NLL (chosen)")]),
        ("log-odds ratio", [("log_odds_ratio", "log σ(log-odds)"), ("log_odds_chosen", "log-odds chosen")]),
        ("rewards", [("rewards_chosen", "chosen"), ("rewards_rejected", "rejected")]),
        ("reward accuracy", [("reward_accuracy", "accuracy")]),
    ]
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for key, label in series:
            ax.plot(steps, [r.get(key) for r in rows], marker=".", label=label)
        for r in metrics["eval"]:
            if series[0][0] in r:
                ax.scatter([r["step"]], [r[series[0][0]]], marker="x", color="black")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def train(export_dir: str | Path, out_dir: str | Path, spec: dict[str, Any], resume: bool = False) -> TrainResult:
    """Train, save the model (or adapter) with its tokenizer, metrics, plot and model card into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = preflight.manifest_sha256(export_dir)
    checkpoint = last_checkpoint(out) if resume else None
    import torch

    threads = torch.get_num_threads()
    if spec["curate"]["cpu_threads"] > 0:  # process-wide: restored below, so a caller's setting survives
        torch.set_num_threads(spec["curate"]["cpu_threads"])
    try:
        trainer = build_trainer(export_dir, out, spec)
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        torch.set_num_threads(threads)

    model_dir = out / ("model" if spec["curate"]["method"] == "full" else "adapter")
    trainer.save_model(str(model_dir))
    metrics = collect_metrics(trainer.state.log_history)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(model_dir))
        specmod.save(spec, out / "train_config.json")
        _write_json(out / "metrics.json", metrics)
        if metrics["train"]:
            plot_metrics(metrics, out / "metrics.png")
        text = card.model_card(spec, export_dir, sha, metrics, model_dir.name)
        for where in (out / "README.md", model_dir / "README.md"):
            atomic_write_text(where, text)
    return TrainResult(out, model_dir, metrics, sha, trainer.state.global_step)
