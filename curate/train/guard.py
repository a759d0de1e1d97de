"""Stop training at the first NaN/inf, before it reaches the weights, and never save non-finite weights.

Why: a NaN loss does not stop transformers' Trainer. It logs the step's loss as the running average instead
(`logging_nan_inf_filter`, which reads as "loss 0" at logging_steps=1), the optimizer writes NaN into every weight,
and the run exits 0 with a model that is all NaN. `NonFiniteGuard` is mixed in front of the ORPO trainer class
(TRL's or curate's chunked/fused one) and checks, at every step:

- the loss and every ORPO metric of each micro-batch (TRL's `get_batch_loss_metrics`), before the backward pass;
- the gradient norm of each optimizer step, before `optimizer.step()` (the weights are still finite then);
- the weights before every checkpoint, and `assert_finite_weights` before the final save.

Each failure is a `NonFiniteError` (a TrainError: one line, exit code 2) naming the step, the value and the likely
cause. In a multi-process run the ORPO metrics are gathered across processes and the gradients all-reduced, so every
process sees the same non-finite value at the same step and they stop together.

`to_json` writes non-finite floats as the strings "NaN", "Infinity", "-Infinity": valid JSON that Python's
`float()` reads back, and never 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from curate.train import TrainError

if TYPE_CHECKING:  # the mixin's type-checking base: what the trainer class it goes in front of provides
    from trl.experimental.orpo import ORPOTrainer as _TrainerBase
else:
    _TrainerBase = object


class NonFiniteError(TrainError):
    """Training produced NaN/inf: the step, what was non-finite, its value, the likely cause."""

    def __init__(self, step: int, what: str, value: float, cause: str, metrics: dict[str, float] | None = None):
        self.step, self.what, self.value, self.cause = step, what, value, cause
        self.metrics = dict(metrics or {})
        super().__init__(f"training stopped at step {step}: {what} is {fmt(value)}; likely cause: {cause}; "
                         "no model was saved")


def fmt(value: Any) -> str:
    """A number for people: NaN and inf spelled out, never hidden."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def to_json(obj: Any) -> Any:
    """A copy of `obj` with non-finite floats as "NaN" / "Infinity" / "-Infinity" (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters (this process's copy or shard) that hold a NaN or inf."""
    import torch

    bad = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() and not bool(torch.isfinite(param).all()):
                bad.append(name)
    return bad


def assert_finite_weights(model, step: int, learning_rate: float | None = None) -> None:
    import torch

    bad = non_finite_parameters(model)
    if bad:
        first = dict(model.named_parameters())[bad[0]]
        value = math.nan if bool(torch.isnan(first).any()) else math.inf
        cause = _diverged(learning_rate) + f" ({len(bad)} parameter tensors affected, e.g. {bad[0]})"
        raise NonFiniteError(step, "a weight", value, cause)


def _diverged(learning_rate: float | None) -> str:
    lr = f" ({learning_rate:g})" if learning_rate is not None else ""
    return (f"the weights diverged: the learning rate{lr} is likely too high (lower orpo.learning_rate, keep "
            "orpo.max_grad_norm > 0), or float16 overflowed (use bf16 or float32)")


class NonFiniteGuard(_TrainerBase):
    """Mixin in front of an ORPOTrainer class: raises NonFiniteError at the first non-finite loss/metric/grad norm."""

    def _guard_step(self) -> int:
        return int(self.state.global_step) + 1  # the optimizer step being computed

    def _guard_lr(self) -> float | None:
        try:
            return float(self._get_learning_rate())
        except Exception:  # noqa: BLE001 - no scheduler yet: the configured rate
            return float(self.args.learning_rate)

    def _guard_cause(self, batch: dict[str, Any]) -> str:
        """Why this batch went non-finite, as far as the batch and the step can tell."""
        empty = 0
        for key in ("chosen_labels", "rejected_labels"):
            labels = batch.get(key)
            if labels is not None:
                empty += int(((labels != -100).sum(-1) == 0).sum())
        if empty:
            return (f"{empty} sequence(s) in this batch have no reply token left (the prompt fills max_length="
                    f"{self.max_length}); curate.prompt_overflow=drop leaves such pairs out")
        if self.state.global_step == 0:
            return ("non-finite from the first step, before any update: check the model's dtype (float16 "
                    "overflows; use bf16 or float32) and its weights")
        return _diverged(self._guard_lr())

    def get_batch_loss_metrics(self, model, batch, train_eval="train"):
        loss, metrics = super().get_batch_loss_metrics(model, batch, train_eval)
        if train_eval == "train":
            value = float(loss.detach().float().item())
            bad = [("the ORPO loss", value)] if not math.isfinite(value) else []
            bad += [(f"metric {k}", v) for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                what, val = bad[0]
                raise NonFiniteError(self._guard_step(), what, val, self._guard_cause(batch),
                                     {"loss": value, **metrics})
        return loss, metrics

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm.item() if hasattr(norm, "item") else norm) if norm is not None else 0.0
        # fp16 AMP: an inf gradient is the loss scaler's normal signal to skip the step and lower the scale
        if not math.isfinite(value) and not self.args.fp16:
            cause = ("the gradients overflowed although the loss was finite: the learning rate "
                     f"({self._guard_lr():g}) is likely too high, or float16 overflowed (use bf16 or float32)")
            raise NonFiniteError(self._guard_step(), "the gradient norm", value, cause, {"grad_norm": value})
        return norm

    def _save_checkpoint(self, model, trial):
        assert_finite_weights(self.model, int(self.state.global_step), self._guard_lr())
        return super()._save_checkpoint(model, trial)
