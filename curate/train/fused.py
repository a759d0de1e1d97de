"""Opt-in ORPO losses that never hold full-vocabulary logits: two small ORPOTrainer subclasses.

- `curate.loss = "liger"` → FusedORPOTrainer: liger-kernel's `LigerFusedLinearORPOLoss` (GPU).
- `curate.loss = "chunked"` → ChunkedORPOTrainer: curate's token-chunked LM head (curate/train/chunked_loss.py), any
  device, with Gemma-2's final-logit soft-capping; the ORPO maths after the log-probabilities is TRL's own
  `odds_ratio_loss`.

Both take the final hidden states from the model's own forward (a forward hook on the decoder; `logits_to_keep=1` so
the model computes logits for one position only), so DDP, peft and gradient checkpointing behave as usual.

Why: TRL's ORPO trainer materialises the full-vocabulary logits of chosen *and* rejected sequences
(2 × 8192 × 256k values for one 8K Gemma-2 pair: 8 GiB in bf16, and log-softmax copies on top). Both losses here
multiply the final hidden states by the LM head a piece at a time and keep only per-token log-probabilities.
liger ships its own LigerORPOTrainer, but it imports `trl.trainer.ORPOTrainer`, which TRL 1.x moved to
`trl.experimental.orpo`; hence these subclasses.

What they compute is TRL's ORPO loss, term for term:
    loss = NLL(chosen, prompt + reply tokens, mean) − β · mean(log σ(log-odds(chosen) − log-odds(rejected)))
with log-probabilities averaged over reply tokens, as in TRL's `concatenated_forward`/`odds_ratio_loss`.
tests/train/test_chunked.py checks the chunked trainer's loss and gradients against TRL on CPU;
bench/bench_train_gpu.py checks both on the GPU (rel. diff ≤ 1e-3, fp32).

Limits (each is a TrainError at start, not a silent difference):
- both need the whole LM head in this process: not with DeepSpeed ZeRO-3 or FSDP (they shard it). They are for
  one-GPU (the LoRA/QLoRA preset, where memory is tightest) and DDP runs;
- liger needs CUDA and liger-kernel (`pip install 'curate[gpu]'`); liger patches Triton kernels into the
  process, so it is imported only inside FusedORPOTrainer, only for curate.loss=liger;
- liger computes logits = h·Wᵀ with no final-logit soft-capping, which Gemma-2 applies (30·tanh(z/30)). Switching
  the cap off would train a different model from the one that is served, so liger refuses soft-capped models:
  use curate.loss=chunked for Gemma-2 (the GPU benchmark compares liger on an uncapped Gemma-2-2B shape);
- liger chunks by pairs, so at batch 1 one whole pair's logits (in fp32) still exist at once; the chunked loss
  splits by tokens (curate.loss_chunk_tokens).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

import torch

from curate.train import TrainError

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from transformers import PreTrainedModel
from trl.experimental.orpo import ORPOTrainer


def _base_model(model: torch.nn.Module | None) -> PreTrainedModel:
    """The plain *ForCausalLM under DDP/accelerate and peft wrappers."""
    inner = getattr(model, "module", None)
    while isinstance(inner, torch.nn.Module):
        model, inner = inner, getattr(inner, "module", None)
    get_base_model = getattr(model, "get_base_model", None)
    if get_base_model is not None:
        model = get_base_model()
    if not isinstance(model, PreTrainedModel):  # the hidden-state losses call its get_decoder/get_output_embeddings
        raise TrainError(f"this ORPO loss needs a transformers model, got {type(model).__name__}")
    return model


class _HiddenStateORPOTrainer(ORPOTrainer):
    """Shared plumbing: final hidden states + LM head instead of logits, and TRL's metric names."""

    loss_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if getattr(self, "is_fsdp_enabled", False) or (plugin is not None and getattr(plugin, "zero_stage", 0) == 3):
            raise TrainError(f"curate.loss={self.loss_name} needs the whole LM head in each process: not with FSDP "
                             "or DeepSpeed ZeRO-3; use curate.loss=trl there")

    def _hidden_and_head(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Final hidden states through the model's own forward, logits for the last position only; plus the head."""
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

    def _inputs(self, batch: dict[str, Any]):
        if self.is_encoder_decoder:
            raise TrainError("this ORPO loss supports decoder-only models only")
        b = self.concatenated_inputs(
            batch, is_encoder_decoder=False, padding_value=self.padding_value, device=self.accelerator.device
        )
        return b["concatenated_input_ids"], b["concatenated_attention_mask"], b["concatenated_labels"]

    def _metrics(self, train_eval: str, chosen_logps, rejected_logps, chosen_rewards, rejected_rewards,
                 chosen_logits_mean, rejected_logits_mean, nll_loss, log_odds_ratio, log_odds_chosen):
        gather = self.accelerator.gather_for_metrics
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
        prefix = "eval_" if train_eval == "eval" else ""
        return {f"{prefix}{k}": v.item() for k, v in metrics.items()}


class FusedORPOTrainer(_HiddenStateORPOTrainer):
    """TRL's ORPOTrainer with the loss computed by liger-kernel's fused linear ORPO loss (GPU)."""

    loss_name = "liger"
    compiled: bool = True  # liger compiles the per-chunk forward/backward with torch.compile
    chunk_size: int = 1  # pairs per chunk: logits of 2 × chunk_size sequences exist at a time

    @staticmethod
    def check_available(args: Any = None) -> None:
        """Raise TrainError unless this process can run liger's fused loss."""
        if importlib.util.find_spec("liger_kernel") is None:
            raise TrainError("curate.loss=liger needs liger-kernel: pip install 'curate[gpu]' (GPU machines only)")
        if not torch.cuda.is_available() or (args is not None and getattr(args, "use_cpu", False)):
            raise TrainError("curate.loss=liger needs a CUDA GPU (liger-kernel's Triton kernels don't run on CPU); "
                             "curate.loss=chunked runs anywhere")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = getattr(_base_model(self.model).config, "final_logit_softcapping", None)
        if cap is not None:
            raise TrainError(f"curate.loss=liger: this model applies final-logit soft-capping ({cap}), which "
                             "liger's fused ORPO loss does not; use curate.loss=chunked")
        from liger_kernel.chunked_loss import LigerFusedLinearORPOLoss

        self.fused_loss = LigerFusedLinearORPOLoss(
            ignore_index=-100, beta=self.beta, compute_nll_loss=True, compiled=self.compiled,
            chunk_size=self.chunk_size,
        )

    def get_batch_loss_metrics(self, model, batch, train_eval: Literal["train", "eval"] = "train"):
        input_ids, attention_mask, labels = self._inputs(batch)
        # As TRL: the NLL term covers prompt + reply (every attended token), the odds ratio only reply tokens.
        nll_target = torch.where(attention_mask == 1, input_ids, -100)
        hidden, head, outputs = self._hidden_and_head(model, input_ids, attention_mask)
        loss, aux = self.fused_loss(head.weight, hidden[:, :-1], labels[:, 1:], head.bias,
                                    nll_target=nll_target[:, 1:])
        (chosen_logps, rejected_logps, chosen_logits_mean, rejected_logits_mean, nll_loss,
         chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen) = aux[:9]
        if self.aux_loss_enabled:
            loss = loss + self.aux_loss_coef * outputs.aux_loss
        return loss, self._metrics(train_eval, chosen_logps, rejected_logps, chosen_rewards, rejected_rewards,
                                   chosen_logits_mean, rejected_logits_mean, nll_loss, log_odds_ratio,
                                   log_odds_chosen)


class ChunkedORPOTrainer(_HiddenStateORPOTrainer):
    """TRL's ORPOTrainer with the LM head applied chunk by chunk of tokens (curate.train.chunked_loss)."""

    loss_name = "chunked"
    chunk_tokens: int = 1024  # tokens per LM-head chunk: chunk × vocab fp32 buffers exist at a time

    def get_batch_loss_metrics(self, model, batch, train_eval: Literal["train", "eval"] = "train"):
        from curate.train.chunked_loss import token_logps

        input_ids, attention_mask, labels = self._inputs(batch)
        hidden, head, outputs = self._hidden_and_head(model, input_ids, attention_mask)
        rows, length = input_ids.shape[0], input_ids.shape[1] - 1
        n_chosen = rows // 2
        targets = input_ids[:, 1:]
        # As TRL's concatenated_forward: NLL over every attended token of the chosen rows (prompt + reply), mean;
        # log-probabilities for the odds ratio averaged over reply tokens (labels != -100) of every row.
        nll_mask = attention_mask[:, 1:] == 1
        nll_mask[n_chosen:] = False
        pref_mask = labels[:, 1:] != -100
        flat = (nll_mask | pref_mask).reshape(-1).nonzero().squeeze(1)  # padding never reaches the LM head
        h = hidden[:, :-1].reshape(rows * length, -1).index_select(0, flat)
        cap = getattr(_base_model(model).config, "final_logit_softcapping", None)
        logps, zsum = token_logps(h, head.weight, head.bias, targets.reshape(-1).index_select(0, flat), cap,
                                  self.chunk_tokens)
        per_token = logps.new_zeros(rows * length).index_put((flat,), logps).view(rows, length)
        nll_loss = -(per_token * nll_mask).sum() / nll_mask.sum().clamp_min(1)
        avg = (per_token * pref_mask).sum(-1) / pref_mask.sum(-1).clamp_min(1)
        chosen_logps, rejected_logps = avg[:n_chosen], avg[n_chosen:]
        losses, chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen = self.odds_ratio_loss(
            chosen_logps, rejected_logps)
        loss = nll_loss - losses.mean()
        if self.aux_loss_enabled:
            loss = loss + self.aux_loss_coef * outputs.aux_loss
        # logits/* metrics: mean logit over non-padding positions (TRL's mean also counts padding positions)
        row_of = flat // length
        vocab = head.weight.shape[0]
        chosen_sel = row_of < n_chosen
        logits_chosen = zsum[chosen_sel].sum() / (chosen_sel.sum().clamp_min(1) * vocab)
        logits_rejected = zsum[~chosen_sel].sum() / ((~chosen_sel).sum().clamp_min(1) * vocab)
        return loss, self._metrics(train_eval, chosen_logps, rejected_logps, chosen_rewards, rejected_rewards,
                                   logits_chosen, logits_rejected, nll_loss, log_odds_ratio, log_odds_chosen)
