"""Run TRL's ORPO trainer on a curate export and write everything a user needs next to the model.

OUT_DIR after a run:
    train_config.json   the effective configuration (preset + overrides + model), enough to reproduce the run
    preflight.json      rendered example, token lengths, what max_length does to the pairs (dropped, shortened, cut)
    model/ or adapter/  the fine-tuned model (full) or the LoRA adapter, with the tokenizer and a model card
    metrics.json        per-step loss, NLL, log-odds ratio, chosen/rejected rewards, reward accuracy (+ TRL's eval),
                        the data counts, and the test split's per-language evaluation before and after training
    metrics.png         the per-step metrics, plotted (NaN/inf steps marked in red)
    generations.jsonl   a few zh and en test prompts answered before and after training
    README.md           the model card (also inside model/ or adapter/), naming the export's manifest sha256
    checkpoints/        Trainer checkpoints, when orpo.save_strategy is not "no" (used by --resume)

A run that goes non-finite stops at that step (curate.train.guard) and leaves train_config.json, preflight.json,
metrics.json (with a "stopped" entry), metrics.png and generations.jsonl, and no model.

Training itself is TRL's (`trl.experimental.orpo.ORPOTrainer`); curate adds loading, checks and outputs. The trainer
class is TRL's (or, with curate.loss = "chunked" or "liger", one of the small subclasses in curate.train.fused) with
two mixins in front: guard.NonFiniteGuard and evaluate.PairEval.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.io import atomic_path, atomic_write_text
from curate.train import TrainError, card, preflight
from curate.train import spec as specmod
from curate.train.guard import NonFiniteError, assert_finite_weights, to_json

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


def _limit_eval(eval_ds, spec: dict[str, Any]):
    n = spec["curate"]["eval_max_pairs"]
    return eval_ds.select(range(n)) if eval_ds is not None and n and len(eval_ds) > n else eval_ds


def run_preflight(export_dir: str | Path, spec: dict[str, Any], tokenizer=None) -> preflight.Preflight:
    """Load the export and the tokenizer, fit the pairs to max_length and report; no model weights are loaded."""
    _quiet()
    tokenizer = tokenizer or load_tokenizer(spec["preset"]["model"])
    train_ds, eval_ds = preflight.load_export(export_dir, spec)
    return preflight.check(train_ds, tokenizer, specmod.max_length(spec), spec, _limit_eval(eval_ds, spec))


def fit_train(train_ds, tokenizer, spec: dict[str, Any], fitted: preflight.Fitted | None = None) -> preflight.Fitted:
    """The training split fitted to max_length; TrainError when too little is left (preflight.refusal)."""
    cur = spec["curate"]
    if fitted is None:
        fitted = preflight.fit(train_ds, tokenizer, specmod.max_length(spec), cur["system"], cur["prompt_overflow"])
    why = preflight.refusal(fitted, spec)
    if why:
        raise TrainError(why)
    return fitted


def fit_eval(export_dir: str | Path, eval_ds, tokenizer, spec: dict[str, Any],
             fitted: preflight.Fitted | None = None):
    """(the eval split fitted to max_length, pair_id + language of each kept row)."""
    cur = spec["curate"]
    if fitted is None:
        fitted = preflight.fit(_limit_eval(eval_ds, spec), tokenizer, specmod.max_length(spec), cur["system"],
                               cur["prompt_overflow"], "eval pair")
    meta = preflight.split_meta(export_dir, cur["eval_split"])
    return fitted, [meta[i] for i in fitted.keep]


def load_model(spec: dict[str, Any], path: str | None = None):
    """The model to train or evaluate; a folder with adapter_config.json is loaded on its base and merged."""
    import torch
    from transformers import AutoModelForCausalLM

    path = path or spec["preset"]["model"]
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
    adapter = Path(path) / "adapter_config.json"
    base = path
    if adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path") or path
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainError(f"can't load model {base!r}: {str(exc).splitlines()[0]}") from None
    if adapter.is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model


def orpo_args(spec: dict[str, Any], out_dir: Path):
    from trl.experimental.orpo import ORPOConfig

    # transformers would log a NaN/inf step's loss as the running average (reads as "loss 0"): show it as it is
    kwargs = {"logging_nan_inf_filter": False, **spec["orpo"]}
    try:
        return ORPOConfig(output_dir=str(out_dir / "checkpoints"), **kwargs)
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


def trainer_class(spec: dict[str, Any], args=None):
    """TRL's ORPOTrainer, or curate's chunked/fused subclass, with the non-finite guard and the pair evaluation."""
    from curate.train.evaluate import PairEval
    from curate.train.guard import NonFiniteGuard

    loss = spec["curate"]["loss"]
    Base: type
    if loss == "liger":
        from curate.train.fused import FusedORPOTrainer

        FusedORPOTrainer.check_available(args)
        Base = FusedORPOTrainer
    elif loss == "chunked":
        from curate.train.fused import ChunkedORPOTrainer

        ChunkedORPOTrainer.chunk_tokens = spec["curate"]["loss_chunk_tokens"]
        Base = ChunkedORPOTrainer
    else:
        from trl.experimental.orpo import ORPOTrainer

        Base = ORPOTrainer
    return type(f"Curate{Base.__name__}", (NonFiniteGuard, PairEval, Base), {})


def make_trainer(spec: dict[str, Any], model, tokenizer, train_ds, eval_ds, out: Path, peft: bool = True):
    args = orpo_args(spec, out)
    Trainer = trainer_class(spec, args)
    with preflight.no_dataset_cache():  # TRL's tokenization maps: never cache files inside the export
        return Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=peft_config(spec) if peft else None,
        )


def build_trainer(export_dir: str | Path, out_dir: str | Path, spec: dict[str, Any],
                  pre: preflight.Preflight | None = None):
    """A ready trainer for this export and configuration, on the pairs that fit max_length.

    `pre`: this export's pre-flight with the same configuration, whose fitted splits are reused (rendering and
    tokenizing every pair costs ~3 ms of CPU per pair). `trainer.curate_data` holds what fitting did:
    {"train": Fitted, "eval": Fitted | None, "eval_meta": [...]}."""
    _quiet()
    out = Path(out_dir)
    tokenizer = load_tokenizer(spec["preset"]["model"])
    train_raw, eval_raw = preflight.load_export(export_dir, spec)
    fitted = fit_train(train_raw, tokenizer, spec, pre.train_fit if pre is not None else None)
    wants_eval = spec["curate"]["evaluate"] or spec["orpo"].get("eval_strategy", "no") != "no"
    fitted_eval, meta = fit_eval(export_dir, eval_raw, tokenizer, spec, pre.eval_fit if pre is not None else None) \
        if wants_eval and eval_raw is not None else (None, [])
    if fitted_eval is not None and not fitted_eval.keep:
        fitted_eval, meta = None, []
    trainer = make_trainer(spec, load_model(spec), tokenizer, fitted.dataset,
                           fitted_eval.dataset if fitted_eval is not None else None, out)
    trainer.curate_data = {"train": fitted, "eval": fitted_eval, "eval_meta": meta}
    return trainer


def last_checkpoint(out_dir: str | Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(out_dir) / "checkpoints"
    found = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if not found:
        raise TrainError(f"--resume: no checkpoint in {ckpt_dir} (set orpo.save_strategy=\"steps\" and "
                         "orpo.save_steps to write them)")
    return found


def _ours(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    row = {ours: entry[f"{prefix}{theirs}"] for theirs, ours in METRICS.items() if f"{prefix}{theirs}" in entry}
    if "reward_accuracy" in row and (_bad(row.get("rewards_chosen")) or _bad(row.get("rewards_rejected"))):
        row["reward_accuracy"] = math.nan  # TRL counts NaN > NaN as a wrong pair: 0, which reads as a real value
    return row


def collect_metrics(log_history: list[dict[str, Any]], stopped: NonFiniteError | None = None) -> dict[str, Any]:
    """Trainer log history → {"train": [per step], "eval": [...], "summary": {...}} with curate's metric names.

    A run stopped by the guard gets the stopping step as its last train row (values as they were, NaN included)
    and summary["stopped"] = {step, what, value, cause}."""
    train, evals, summary = [], [], {}
    for entry in log_history:
        if "loss" in entry:
            train.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **_ours(entry)})
        elif "eval_loss" in entry:
            evals.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **_ours(entry, "eval_")})
        elif "train_runtime" in entry:
            summary.update({k: v for k, v in entry.items() if k.startswith("train_") or k in ("step", "epoch")})
    if stopped is not None:
        train = [r for r in train if (r["step"] or 0) < stopped.step]
        train.append({"step": stopped.step, **_ours(stopped.metrics)})
        summary["stopped"] = {"step": stopped.step, "what": stopped.what, "value": stopped.value,
                              "cause": stopped.cause}
    if train:
        summary["final"] = {k: v for k, v in train[-1].items() if k not in ("step", "epoch")}
    return {"train": train, "eval": evals, "summary": summary}


def _bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def plot_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """Four panels: loss and NLL, log-odds ratio, chosen/rejected rewards, reward accuracy.

    matplotlib leaves NaN/inf points out of a line without a trace; each such step gets a red dotted line and a
    "NaN"/"inf" label instead, so a plot never shows a run as healthier than it was."""
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
        marked: set[int] = set()
        for key, label in series:
            values = [r.get(key) for r in rows]
            ax.plot(steps, [float("nan") if v is None or _bad(v) else v for v in values], marker=".", label=label)
            for step, v in zip(steps, values, strict=True):
                if _bad(v) and step not in marked:
                    marked.add(step)
                    ax.axvline(step, color="red", linestyle=":", linewidth=2)
                    ax.annotate("NaN" if math.isnan(v) else "inf", (step, 0.95), xycoords=("data", "axes fraction"),
                                color="red", ha="center", va="top", fontsize=9, fontweight="bold")
        for r in metrics["eval"]:
            if series[0][0] in r and not _bad(r[series[0][0]]):
                ax.scatter([r["step"]], [r[series[0][0]]], marker="x", color="black")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    stopped = metrics.get("summary", {}).get("stopped")
    if stopped:
        fig.suptitle(f"training stopped at step {stopped['step']}: {stopped['what']} is not finite", color="red")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_json(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


class _Evaluation:
    """The test split's evaluation around trainer.train(): "before" from on_train_begin, "after" once it returns.

    Run as a callback so the "before" pass happens inside train(), after DeepSpeed/FSDP have wrapped the model,
    on every process (evaluation and generation are collective there)."""

    def __init__(self, trainer, spec: dict[str, Any]):
        from curate.train.evaluate import pick_prompts

        self.trainer, self.spec = trainer, spec
        data = trainer.curate_data
        self.fitted, self.meta = data["eval"], data["eval_meta"]
        self.beta = float(spec["orpo"].get("beta", 0.1))
        cur = spec["curate"]
        self.samples = pick_prompts(self.fitted.dataset, self.meta, cur["eval_generations"]) \
            if self.fitted is not None else []
        self.result: dict[str, Any] = {}
        self.answers: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return self.fitted is not None and self.spec["curate"]["evaluate"]

    def run(self, when: str) -> None:
        from curate.train.evaluate import generate, summarize

        if not self.active:
            return
        t = self.trainer
        try:
            stats = t.pair_stats()
            self.result[when] = summarize(stats, [m["lang"] for m in self.meta], self.beta)
            synced = t.accelerator.num_processes > 1 and (t.is_deepspeed_enabled or t.is_fsdp_enabled)
            self.answers[when] = generate(t.accelerator.unwrap_model(t.model), t.processing_class, self.samples,
                                          self.spec["curate"]["eval_max_new_tokens"], synced)
        except Exception as exc:  # noqa: BLE001 - evaluation is a report: it must never cost the training or model
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.errors[when] = f"{type(exc).__name__}: {first}"
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def callback(self):
        from transformers import TrainerCallback

        evaluation = self

        class BeforeTraining(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                evaluation.run("before")

        return BeforeTraining()

    def as_dict(self, resumed_from: str | None) -> dict[str, Any] | None:
        if not self.active:
            return None
        out = {"split": self.spec["curate"]["eval_split"], **preflight.split_counts(self.fitted), **self.result}
        if self.errors:
            out["errors"] = dict(self.errors)
        if resumed_from:
            out["before_is"] = f"the checkpoint training resumed from ({Path(resumed_from).name})"
        return out


def _data_counts(trainer) -> dict[str, Any]:
    data = trainer.curate_data
    out = {"train": preflight.split_counts(data["train"])}
    if data["eval"] is not None:
        out["eval"] = preflight.split_counts(data["eval"])
    return out


def train(export_dir: str | Path, out_dir: str | Path, spec: dict[str, Any], resume: bool = False,
          pre: preflight.Preflight | None = None) -> TrainResult:
    """Train, save the model (or adapter) with its tokenizer, metrics, plot, evaluation and model card into `out_dir`.

    `pre`: the pre-flight of this export and spec (run_preflight), reused instead of fitting the pairs again.
    A non-finite loss, metric, gradient norm or weight stops training (NonFiniteError): metrics.json and metrics.png
    are written with the stopping step, and no model is saved."""
    from curate.train.evaluate import write_generations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = preflight.manifest_sha256(export_dir)
    checkpoint = last_checkpoint(out) if resume else None
    import torch

    threads = torch.get_num_threads()
    if spec["curate"]["cpu_threads"] > 0:  # process-wide: restored below, so a caller's setting survives
        torch.set_num_threads(spec["curate"]["cpu_threads"])
    try:
        trainer = build_trainer(export_dir, out, spec, pre)
        evaluation = _Evaluation(trainer, spec)
        if evaluation.active:
            trainer.add_callback(evaluation.callback())

        def record(stopped: NonFiniteError | None = None) -> dict[str, Any]:
            metrics = collect_metrics(trainer.state.log_history, stopped)
            metrics["data"] = _data_counts(trainer)
            result = evaluation.as_dict(checkpoint)
            if result is not None:
                metrics["evaluation"] = result
            if trainer.is_world_process_zero():
                specmod.save(spec, out / "train_config.json")
                _write_json(out / "metrics.json", metrics)
                if metrics["train"]:
                    plot_metrics(metrics, out / "metrics.png")
                if evaluation.samples and evaluation.answers:
                    write_generations(out / "generations.jsonl", evaluation.samples, evaluation.answers)
            return metrics

        try:
            trainer.train(resume_from_checkpoint=checkpoint)
            assert_finite_weights(trainer.model, int(trainer.state.global_step), trainer._guard_lr())
        except NonFiniteError as exc:
            record(exc)
            raise
        model_dir = out / ("model" if spec["curate"]["method"] == "full" else "adapter")
        trainer.save_model(str(model_dir))  # before the evaluation: nothing after training may cost the model
        if trainer.is_world_process_zero():
            trainer.processing_class.save_pretrained(str(model_dir))
        evaluation.run("after")
    finally:
        torch.set_num_threads(threads)

    metrics = record()
    if trainer.is_world_process_zero():
        text = card.model_card(spec, export_dir, sha, metrics, model_dir.name)
        for where in (out / "README.md", model_dir / "README.md"):
            atomic_write_text(where, text)
    return TrainResult(out, model_dir, metrics, sha, trainer.state.global_step)
