"""curate.loss=chunked: the token-chunked LM head gives TRL's ORPO loss and gradients, without the logits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from curate.train import spec as S
from curate.train.chunked_loss import token_logps


@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_token_logps_match_log_softmax(softcap, chunk):
    g = torch.Generator().manual_seed(0)
    n, hdim, vocab = 23, 16, 50
    h = torch.randn(n, hdim, dtype=torch.float64, generator=g, requires_grad=True)
    w = (3 * torch.randn(vocab, hdim, dtype=torch.float64, generator=g)).requires_grad_()
    b = torch.randn(vocab, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, vocab, (n,), generator=g)
    upstream = torch.randn(n, dtype=torch.float64, generator=g)

    z = h @ w.t() + b
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    ref = torch.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (h, w, b))

    got, zsum = token_logps(h, w, b, y, softcap, chunk)
    grads = torch.autograd.grad((got * upstream).sum(), (h, w, b))
    assert got.dtype == torch.float32  # log-probabilities always come back in fp32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zsum.double(), z.sum(-1), rtol=1e-5, atol=1e-4)
    for mine, theirs in zip(grads, ref_grads, strict=True):  # fp32 inside: compare as relative norms
        assert mine.dtype == theirs.dtype and (mine - theirs).norm() <= 1e-5 * theirs.norm()


def test_token_logps_rejects_bad_shapes():
    with pytest.raises(ValueError, match="hidden"):
        token_logps(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, torch.zeros(2, dtype=torch.long))


def _trainers(export, model_dir, tmp_path, *sets):
    from transformers import AutoModelForCausalLM
    from trl.experimental.orpo import ORPOTrainer

    from curate.train.fused import ChunkedORPOTrainer
    from curate.train.preflight import load_export
    from curate.train.trainer import load_tokenizer, orpo_args

    spec = S.resolve("tiny-cpu", ["orpo.per_device_train_batch_size=4", *sets], str(model_dir))
    tok = load_tokenizer(str(model_dir))
    train, _ = load_export(export, spec)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    ChunkedORPOTrainer.chunk_tokens = 5  # several chunks per batch, one ending mid-sequence
    ref = ORPOTrainer(model=model, args=orpo_args(spec, tmp_path), train_dataset=train, processing_class=tok)
    chunked = ChunkedORPOTrainer(model=model, args=orpo_args(spec, tmp_path), train_dataset=train,
                                 processing_class=tok)
    return model, ref, chunked


@pytest.mark.parametrize("softcap", [None, 0.01])
def test_same_loss_metrics_and_gradients_as_trl(fixture_export, tiny_model, tmp_path, softcap, one_thread):
    model, ref, chunked = _trainers(fixture_export, tiny_model, tmp_path)
    # Gemma-2 soft-caps final logits (30 by default; the tiny model's logits are ~0.01, so a cap of 0.01 is what
    # makes it bite here). TRL applies it inside the model's forward; the chunked loss must apply it itself.
    model.config.final_logit_softcapping = softcap
    batch = ref._prepare_inputs(next(iter(ref.get_train_dataloader())))
    assert (batch["chosen_attention_mask"] == 0).any()  # padding present: it must not count
    out = {}
    for name, trainer in (("trl", ref), ("chunked", chunked)):
        model.zero_grad(set_to_none=True)
        loss, metrics = trainer.get_batch_loss_metrics(model, batch)
        loss.backward()
        out[name] = loss.item(), metrics, {n: p.grad.clone() for n, p in model.named_parameters()}
    (l_ref, m_ref, g_ref), (l_ch, m_ch, g_ch) = out["trl"], out["chunked"]
    assert math.isfinite(l_ref) and abs(l_ch - l_ref) <= 1e-5 * abs(l_ref)
    if softcap is not None:  # the cap moves loss and gradients well beyond the tolerances: the checks have teeth
        model.config.final_logit_softcapping = None
        model.zero_grad(set_to_none=True)
        uncapped, _ = ref.get_batch_loss_metrics(model, batch)
        uncapped.backward()
        assert abs(uncapped.item() - l_ref) > 1e-4 * abs(l_ref)
        grad = model.model.embed_tokens.weight.grad
        ref_grad = g_ref["model.embed_tokens.weight"]
        assert (grad - ref_grad).norm() > 1e-2 * ref_grad.norm()
    for key in ("nll_loss", "log_odds_ratio", "log_odds_chosen", "rewards/chosen", "rewards/rejected",
                "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert m_ch[key] == pytest.approx(m_ref[key], rel=1e-5, abs=1e-7), key
    assert g_ch.keys() == g_ref.keys()
    for name, grad in g_ref.items():
        assert (g_ch[name] - grad).norm() <= 1e-4 * grad.norm() + 1e-9, name


def test_chunked_loss_trains_lora_with_checkpointing(fixture_export, tiny_model, tmp_path):
    from click.testing import CliRunner

    from curate.train.commands import train

    out = tmp_path / "run"
    result = CliRunner().invoke(train, [
        str(fixture_export), "--model", str(tiny_model), "--preset", "tiny-cpu", "--out", str(out),
        "--set", "curate.loss=chunked", "--set", "curate.loss_chunk_tokens=16", "--set", "curate.method=lora",
        "--set", "orpo.activation_checkpointing=true", "--set", "orpo.max_steps=3", "--set", "lora.r=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "loss chunked" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["train"]) == 3 and all(math.isfinite(r["loss"]) for r in metrics["train"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert "ORPO loss implementation: chunked" in (out / "README.md").read_text()
