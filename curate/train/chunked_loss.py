"""Per-token log-probabilities under the LM head without materialising the logits: token-chunked, any device.

Why this exists next to liger-kernel's fused ORPO loss (curate/train/fused.py): liger's chunked preference loss
splits the batch by *pairs*, so one 8K pair still builds 2 × 8192 × 256k fp32 logits (16 GiB) in one piece, and it
computes logits = h·Wᵀ with no final-logit soft-capping, which Gemma-2 uses (30·tanh(z/30)). This function splits
by *tokens* (a few thousand at a time, whatever the batch), applies the soft-cap, and is plain PyTorch, so it runs
and is tested on CPU. Everything after the per-token log-probabilities (masking, averaging, NLL, TRL's odds-ratio
loss) is ordinary autograd in the trainer, so the ORPO maths stays TRL's.

Forward, per chunk of tokens: z = cap·tanh(h·Wᵀ/cap) in fp32, logp = z[y] − logsumexp(z); only logp (one float per
token) and logsumexp are kept. Backward recomputes z per chunk: ∂logp/∂z = onehot(y) − softmax(z), times the soft-cap
derivative 1 − tanh², then ∂h = G·W and ∂W += Gᵀ·h. Peak extra memory: a few chunk × vocab fp32 buffers.
"""

from __future__ import annotations

import torch


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None):
    """fp32 logits of one chunk, and tanh(x/cap) when soft-capped (reused by the backward for the derivative)."""
    x = (h @ weight.t()).float()
    if bias is not None:
        x = x + bias.float()
    if softcap is None:
        return x, None
    t = torch.tanh(x / softcap)
    return t * softcap, t


class _TokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, softcap, chunk):
        w = weight.to(hidden.dtype)
        b = bias.to(hidden.dtype) if bias is not None else None
        n = hidden.shape[0]
        logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        zsum = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            z, _ = _logits(hidden[s:s + chunk], w, b, softcap)
            lse[s:s + chunk] = torch.logsumexp(z, dim=-1)
            logps[s:s + chunk] = z.gather(1, targets[s:s + chunk, None]).squeeze(1) - lse[s:s + chunk]
            zsum[s:s + chunk] = z.sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.softcap, ctx.chunk = softcap, chunk
        ctx.mark_non_differentiable(zsum)
        return logps, zsum

    @staticmethod
    def backward(ctx, grad_logps, _grad_zsum):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        softcap, chunk = ctx.softcap, ctx.chunk
        w = weight.to(hidden.dtype)
        b = bias.to(hidden.dtype) if bias is not None else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) \
            if (need_b and bias is not None) else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk]
            z, t = _logits(h, w, b, softcap)
            g = grad_logps[s:s + chunk, None].float()
            # d logp / d z = onehot(y) − softmax(z); scaled by the upstream gradient of each token
            dz = torch.exp(z - lse[s:s + chunk, None]).mul_(-g)
            dz.scatter_add_(1, targets[s:s + chunk, None], g)
            if t is not None:  # z = cap·tanh(x/cap)  ⇒  dz/dx = 1 − tanh²
                dz.mul_(1 - t * t)
            if grad_h is not None:
                grad_h[s:s + chunk] = (dz.to(w.dtype) @ w).to(hidden.dtype)
            if grad_w is not None:  # matmul in the model's dtype (as TRL's lm_head backward), accumulated in fp32
                grad_w.add_(dz.to(h.dtype).t() @ h)
            if grad_b is not None:
                grad_b.add_(dz.sum(0))
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None, None, None, None)


def token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                softcap: float | None = None, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(targets[i] | hidden[i]) for rows of `hidden` (N × H) under the LM head (`weight` V × H), in fp32.

    Also returns each row's sum of logits over the vocabulary (no gradient), for TRL's `logits/*` metrics.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError("token_logps expects hidden (N, H) and targets (N,)")
    return _TokenLogps.apply(hidden, weight, bias, targets, softcap, max(1, int(chunk)))
