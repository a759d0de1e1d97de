"""Opt-in fused ORPO loss (GPU): liger-kernel's `LigerFusedLinearORPOLoss` inside a small ORPOTrainer subclass.

Why: TRL's ORPO trainer materialises the full-vocabulary logits of chosen *and* rejected sequences
(batch × 2 × seq × vocab floats: 2 × 8192 × 256k × 4 bytes = 16 GiB for one 8K pair on Gemma-2). The fused loss
multiplies the final hidden states by the LM head one chunk of rows at a time and folds log-softmax, the NLL term
and the odds-ratio term into that pass, so those logits never exist at once. liger ships its own LigerORPOTrainer,
but it imports `trl.trainer.ORPOTrainer`, which TRL 1.x moved to `trl.experimental.orpo`; hence this subclass.

What it computes is TRL's ORPO loss, term for term:
    loss = NLL(chosen, prompt + reply tokens, mean) − β · mean(log σ(log-odds(chosen) − log-odds(rejected)))
with log-probabilities averaged over reply tokens, as in TRL's `concatenated_forward`/`odds_ratio_loss`.
bench/bench_train_gpu.py checks loss and gradients against TRL on the same batch (rel. diff ≤ 1e-3, fp32).

Limits (each is a TrainError at start, not a silent difference):
- needs CUDA and liger-kernel (`pip install 'curate[gpu]'`); liger patches Triton kernels into the process, so it
  is imported only here, only when fused_loss is on;
- the model must have no final-logit soft-capping: liger's chunked loss computes logits = h·Wᵀ, while Gemma-2
  applies 30·tanh(logits/30). Switching the cap off for training would train a different model from the one that
  is served, so we refuse instead: train Gemma-2 without fused_loss (the GPU benchmark uses an uncapped
  Gemma-2-2B-shaped model for both trainers);
- DeepSpeed ZeRO-3 shards the LM head outside its forward, so the weight isn't whole here: use DDP or FSDP-free
  single-GPU runs (the LoRA preset) with fused_loss.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

import torch

from curate.train import TrainError

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.orpo import ORPOTrainer  # noqa: E402  (this module is imported only for fused runs)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain *ForCausalLM under DDP/accelerate and peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


class FusedORPOTrainer(ORPOTrainer):
    """TRL's ORPOTrainer with the loss computed by liger-kernel's fused linear ORPO loss."""

    compiled: bool = True  # liger compiles the per-chunk forward/backward with torch.compile
    chunk_size: int = 1  # pairs per chunk: logits of 2 × chunk_size sequences exist at a time

    @staticmethod
    def check_available(args: Any = None) -> None:
        """Raise TrainError unless this process can run the fused loss."""
        if importlib.util.find_spec("liger_kernel") is None:
            raise TrainError("curate.fused_loss needs liger-kernel: pip install 'curate[gpu]' (GPU machines only)")
        if not torch.cuda.is_available() or (args is not None and getattr(args, "use_cpu", False)):
            raise TrainError("curate.fused_loss needs a CUDA GPU (liger-kernel's Triton kernels don't run on CPU)")
        plugin = getattr(args, "deepspeed_plugin", None) if args is not None else None
        if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
            raise TrainError("curate.fused_loss does not work with DeepSpeed ZeRO-3 (the LM head is sharded); "
                             "use it on one GPU or with DDP")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_encoder_decoder:
            raise TrainError("curate.fused_loss supports decoder-only models only")
        cap = getattr(_base_model(self.model).config, "final_logit_softcapping", None)
        if cap is not None:
            raise TrainError(f"curate.fused_loss: this model applies final-logit soft-capping ({cap}), which "
                             "liger's fused ORPO loss does not; train it without curate.fused_loss")
        from liger_kernel.chunked_loss import LigerFusedLinearORPOLoss

        self.fused_loss = LigerFusedLinearORPOLoss(
            ignore_index=-100, beta=self.beta, compute_nll_loss=True, compiled=self.compiled,
            chunk_size=self.chunk_size,
        )

    def _hidden_and_head(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Final hidden states through the model's own forward (so DDP, peft and gradient checkpointing behave),
        with logits computed for the last position only (`logits_to_keep=1`); plus the LM head."""
        base = _base_model(model)
        captured: dict[str, Any] = {}

        def grab(_module, _inputs, output):
            captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

        handle = base.get_decoder().register_forward_hook(grab)
        try:
            outputs = model(input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1,
                            **({"output_router_logits": True} if self.aux_loss_enabled else {}))
        finally:
            handle.remove()
        return captured["hidden"], base.get_output_embeddings(), outputs

    def get_batch_loss_metrics(
        self,
        model: torch.nn.Module,
        batch: dict[str, Any],
        train_eval: Literal["train", "eval"] = "train",
    ):
        batch_in = self.concatenated_inputs(
            batch, is_encoder_decoder=False, padding_value=self.padding_value, device=self.accelerator.device
        )
        input_ids = batch_in["concatenated_input_ids"]
        attention_mask = batch_in["concatenated_attention_mask"]
        # As TRL: the NLL term covers prompt + reply (every attended token), the odds ratio only reply tokens.
        nll_target = torch.where(attention_mask == 1, input_ids, -100)
        hidden, head, outputs = self._hidden_and_head(model, input_ids, attention_mask)
        loss, aux = self.fused_loss(
            head.weight, hidden[:, :-1], batch_in["concatenated_labels"][:, 1:], head.bias,
            nll_target=nll_target[:, 1:],
        )
        (chosen_logps, rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss,
         chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen) = aux[:9]
        if self.aux_loss_enabled:
            loss = loss + self.aux_loss_coef * outputs.aux_loss

        gather = self.accelerator.gather_for_metrics
        prefix = "eval_" if train_eval == "eval" else ""
        metrics = {
            "rewards/chosen": gather(chosen_rewards).mean(),
            "rewards/rejected": gather(rejected_rewards).mean(),
            "rewards/accuracies": gather((chosen_rewards > rejected_rewards).float()).mean(),
            "rewards/margins": gather(chosen_rewards - rejected_rewards).mean(),
            "logps/rejected": gather(rejected_logps.detach()).mean(),
            "logps/chosen": gather(chosen_logps.detach()).mean(),
            "logits/rejected": gather(rejected_logits_mean.detach()).mean(),
            "logits/chosen": gather(chosen_logits_mean.detach()).mean(),
            "nll_loss": gather(nll_loss.detach()).mean(),
            "log_odds_ratio": gather(log_odds_ratio.detach()).mean(),
            "log_odds_chosen": gather(log_odds_chosen.detach()).mean(),
        }
        return loss, {f"{prefix}{k}": v.item() for k, v in metrics.items()}
