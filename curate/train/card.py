"""Model card (README.md) for a curate-trained model: base model, recipe, metrics, and the dataset's manifest hash.

The manifest hash (sha256 of EXPORT_DIR/manifest.json) ties the model to the exact export it was trained on: the
manifest lists the export's files and their hashes, so two models with the same hash saw the same data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.train.guard import fmt

# Hyperparameters worth a line in the card, in this order, when the configuration sets them.
SHOWN = ("beta", "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps",
         "max_length", "per_device_train_batch_size", "gradient_accumulation_steps", "optim", "bf16",
         "activation_checkpointing", "seed")


def _fmt(value: Any) -> str:
    return fmt(value)  # NaN and inf spelled out, never 0


def model_card(spec: dict[str, Any], export_dir: str | Path, manifest_sha256: str, metrics: dict[str, Any],
               kind: str = "model") -> str:
    pre, cur, orpo = spec["preset"], spec["curate"], spec["orpo"]
    base = pre["model"]
    processes = pre.get("num_processes", 1)
    batch = orpo.get("per_device_train_batch_size", 8) * orpo.get("gradient_accumulation_steps", 1) * processes
    tags = ["curate", "trl", "orpo"] + (["peft", "lora"] if cur["method"] != "full" else [])
    lines = [
        "---",
        f"base_model: {json.dumps(base)}",
        "library_name: " + ("peft" if cur["method"] != "full" else "transformers"),
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# ORPO fine-tune of {base}",
        "",
        f"Trained with `curate train` (TRL ORPO) using preset `{pre['name']}`"
        + (f": {pre['description']}" if pre.get("description") else "") + ".",
        "",
        "## Dataset",
        "",
        f"- export: `{Path(export_dir).resolve()}`",
        f"- manifest sha256: `{manifest_sha256}`",
        *_data_lines(metrics.get("data", {}), orpo.get("max_length", 1024), cur.get("prompt_overflow", "drop")),
        "",
        "## Training",
        "",
        f"- method: {cur['method']}" + (" (LoRA adapter in this folder; load it on top of the base model)"
                                        if cur["method"] != "full" else ""),
        f"- processes: {processes}; global batch: {batch}",
        f"- ORPO loss implementation: {cur['loss']}",
        f"- system messages: {cur['system']}",
    ]
    lines += [f"- {k}: {_fmt(orpo[k])}" for k in SHOWN if k in orpo]
    if spec.get("lora") and cur["method"] != "full":
        lines.append("- lora: " + ", ".join(f"{k}={v}" for k, v in sorted(spec["lora"].items())))
    final = metrics.get("summary", {}).get("final", {})
    if final:
        lines += ["", "## Final training metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in final.items()]
    evaluation = metrics.get("evaluation")
    for when, error in ((evaluation or {}).get("errors") or {}).items():
        lines += ["", f"Evaluation {when} training failed: {error}"]
    if evaluation and (evaluation.get("before") or evaluation.get("after")):
        from curate.train.evaluate import table

        both = evaluation.get("before") and evaluation.get("after")
        lines += ["", f"## Evaluation on the `{evaluation['split']}` split"
                  + (" (before → after training)" if both else ""), "",
                  f"{evaluation['pairs_kept']} held-out pairs"
                  + (f" ({evaluation['dropped']} more left out: prompt fills max_length)" if evaluation["dropped"]
                     else "")
                  + ". Reward accuracy: share of pairs whose chosen reply has the higher mean log-probability; "
                    "reward margin: β × the mean difference. Answers to a few zh and en test prompts: "
                    "`generations.jsonl` in the run folder.", "", *table(evaluation)]
    steps = metrics.get("summary", {}).get("step") or (metrics["train"][-1]["step"] if metrics.get("train") else 0)
    lines += ["", (f"Steps: {steps}. Full per-step metrics: `metrics.json`, `metrics.png`; "
                   "configuration: `train_config.json` in the run folder."), ""]
    return "\n".join(lines)


def _data_lines(data: dict[str, Any], max_length: Any, policy: str) -> list[str]:
    train = data.get("train")
    if not train:
        return []
    lines = [f"- training pairs: {train['pairs_kept']} of {train['pairs']} in the export's train split"]
    if train["prompt_overflow"]:
        lines.append(f"- {train['prompt_overflow']} training pairs had a prompt that alone fills max_length="
                     f"{max_length} tokens (curate.prompt_overflow={policy}); {train['dropped']} left out")
    if train["shortened"]:
        lines.append(f"- {train['shortened']} training prompts shortened by whole turns from the left, so that "
                     "prompt and reply fit")
    return lines
