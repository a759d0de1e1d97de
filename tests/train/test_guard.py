"""The non-finite guard: a NaN/inf loss, metric, gradient norm or weight stops training, and no such model is saved."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from train_helpers import pair_rows, write_export

from curate.train import TrainError
from curate.train import spec as S
from curate.train.guard import (
    NonFiniteError,
    assert_finite_weights,
    fmt,
    non_finite_parameters,
    to_json,
)

LONG = "What is the capital of France? " * 10  # 80 tokens with the tiny tokenizer


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds a bare {name}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _red_pixels(png) -> int:
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    return int(((img[..., 0] > 0.9) & (img[..., 1] < 0.15) & (img[..., 2] < 0.15)).sum())


def test_absurd_learning_rate_stops_with_exit_2_and_saves_no_model(fixture_export, tiny_model, tmp_path):
    """Done-when: a forced NaN (an absurd learning rate) stops with exit 2 and saves no model."""
    from curate.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(fixture_export), "--model", str(tiny_model), "--preset",
                                       "tiny-cpu", "--out", str(out), "--set", "orpo.learning_rate=1e10"])
    assert result.exit_code == 2, result.output + repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith("error: training stopped at step 2: the ORPO loss is NaN; likely cause: the weights "
                                "diverged: the learning rate (1e+10) is likely too high")
    assert "no model was saved" in errors[0] and "Traceback" not in result.output
    assert not (out / "model").exists() and not (out / "README.md").exists()
    assert not any((out / "checkpoints").glob("checkpoint-*"))

    metrics = _strict_json(out / "metrics.json")  # valid JSON: NaN spelled as a string, never 0
    assert [r["step"] for r in metrics["train"]] == [1, 2]
    assert math.isfinite(metrics["train"][0]["loss"])
    stop = metrics["train"][-1]
    assert stop["loss"] == "NaN" and stop["rewards_chosen"] == "NaN" and stop["reward_accuracy"] == "NaN"
    assert metrics["summary"]["stopped"] == {"step": 2, "what": "the ORPO loss", "value": "NaN",
                                             "cause": metrics["summary"]["stopped"]["cause"]}
    assert float(stop["loss"]) != float(stop["loss"])  # Python's float() reads it back as NaN
    assert set(metrics["evaluation"]) >= {"before"} and "after" not in metrics["evaluation"]
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["lang"] for g in generations] == ["zh", "zh", "en", "en"]
    assert all("before" in g and "after" not in g for g in generations)
    assert _red_pixels(out / "metrics.png") > 50  # the NaN step is drawn, not left out


def test_a_healthy_run_has_no_red_in_its_plot(fixture_export, tiny_model, tmp_path):
    from curate.train.trainer import plot_metrics

    rows = [{"step": i, "loss": 1.0 / i, "nll_loss": 0.9 / i, "reward_accuracy": 0.5} for i in (1, 2, 3)]
    plot_metrics({"train": rows, "eval": [], "summary": {}}, tmp_path / "ok.png")
    rows[-1] = {**rows[-1], "loss": math.nan}
    plot_metrics({"train": rows, "eval": [], "summary": {}}, tmp_path / "nan.png")
    assert _red_pixels(tmp_path / "ok.png") == 0 and _red_pixels(tmp_path / "nan.png") > 50


def _overflowing_export(tmp_path):
    rows = pair_rows(4, system=None)
    for i, row in enumerate(rows):
        row["prompt"] = [{"role": "user", "content": f"{LONG} ({i})"}]
    return write_export(tmp_path / "export", rows, rows[:2])


def test_trl_alone_trains_to_nan_weights_and_the_guard_stops_it(tmp_path, tiny_model, one_thread):
    """What curate guards against is real: TRL's trainer on prompts that fill max_length exits normally with NaN
    weights. The same trainer with the guard stops at step 1 and names the cause."""
    from transformers import AutoModelForCausalLM
    from trl.experimental.orpo import ORPOTrainer

    from curate.train.preflight import load_export
    from curate.train.trainer import load_tokenizer, make_trainer, orpo_args

    export = _overflowing_export(tmp_path)
    spec = S.resolve("tiny-cpu", ["orpo.max_length=64", "orpo.max_steps=2"], str(tiny_model))
    raw, _ = load_export(export, spec)  # not fitted: what TRL would get without curate's pre-flight
    tok = load_tokenizer(str(tiny_model))

    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    ORPOTrainer(model=plain, args=orpo_args(spec, tmp_path / "plain"), train_dataset=raw,
                processing_class=tok).train()  # no exception: the run "succeeds"
    assert non_finite_parameters(plain)  # ... with NaN weights

    guarded = make_trainer(spec, AutoModelForCausalLM.from_pretrained(str(tiny_model)), tok, raw, None,
                           tmp_path / "guarded")
    with pytest.raises(NonFiniteError) as info:
        guarded.train()
    assert info.value.step == 1 and info.value.what == "the ORPO loss"
    assert "have no reply token left (the prompt fills max_length=64)" in info.value.cause
    assert "curate.prompt_overflow=drop" in info.value.cause
    assert non_finite_parameters(guarded.model) == []  # stopped before the backward pass reached the weights


def test_non_finite_gradient_stops_before_the_optimizer_step(fixture_export, tiny_model, tmp_path, one_thread):
    from curate.train.trainer import build_trainer

    spec = S.resolve("tiny-cpu", ["orpo.max_steps=2", "curate.evaluate=false"], str(tiny_model))
    trainer = build_trainer(fixture_export, tmp_path, spec)
    weight = trainer.model.model.layers[0].mlp.up_proj.weight
    before = weight.detach().clone()
    # failure injection: a NaN gradient under a finite loss (as a float16 overflow in backward would give)
    weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    assert (info.value.step, info.value.what) == (1, "the gradient norm")
    assert "gradients overflowed although the loss was finite" in str(info.value)
    assert torch.equal(weight.detach(), before) and non_finite_parameters(trainer.model) == []


def test_no_checkpoint_with_non_finite_weights(fixture_export, tiny_model, tmp_path, one_thread):
    from transformers import TrainerCallback

    from curate.train.trainer import build_trainer

    spec = S.resolve("tiny-cpu", ["orpo.max_steps=3", "orpo.save_strategy=steps", "orpo.save_steps=1",
                                  "curate.evaluate=false"], str(tiny_model))
    trainer = build_trainer(fixture_export, tmp_path, spec)

    class Poison(TrainerCallback):  # failure injection: a weight turns inf right after step 2's update
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    model.lm_head.weight[0, 0] = float("inf")

    trainer.add_callback(Poison())
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    assert (info.value.step, info.value.what, info.value.value) == (2, "a weight", math.inf)
    assert "e.g. model.embed_tokens.weight" in str(info.value)  # the tiny Gemma2 ties lm_head to the embeddings
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]


def test_assert_finite_weights_and_formatting():
    layer = torch.nn.Linear(2, 2)
    assert_finite_weights(layer, 3)
    with torch.no_grad():
        layer.bias[1] = float("nan")
    with pytest.raises(NonFiniteError, match="training stopped at step 3: a weight is NaN.*e.g. bias"):
        assert_finite_weights(layer, 3, 0.5)
    assert isinstance(NonFiniteError(1, "x", 1.0, "y"), TrainError)
    assert [fmt(math.nan), fmt(math.inf), fmt(-math.inf), fmt(0.123456), fmt(3)] == ["NaN", "inf", "-inf", "0.1235",
                                                                                      "3"]
    assert to_json({"a": [math.nan, 1.5, {"b": -math.inf}], "c": math.inf}) == \
        {"a": ["NaN", 1.5, {"b": "-Infinity"}], "c": "Infinity"}


def test_collect_metrics_and_card_show_nan_as_nan():
    from curate.train.card import model_card
    from curate.train.trainer import collect_metrics

    history = [{"loss": 1.0, "step": 1, "rewards/chosen": -1.0, "rewards/rejected": -2.0, "rewards/accuracies": 1.0},
               {"loss": math.nan, "step": 2, "rewards/chosen": math.nan, "rewards/rejected": math.nan,
                "rewards/accuracies": 0.0, "grad_norm": math.inf}]
    metrics = collect_metrics(history)
    assert metrics["train"][0]["reward_accuracy"] == 1.0
    last = metrics["train"][1]
    assert math.isnan(last["loss"]) and math.isnan(last["reward_accuracy"]) and last["grad_norm"] == math.inf
    card = model_card(S.resolve("tiny-cpu", [], "m"), ".", "0" * 64, metrics)
    assert "| loss | NaN |" in card and "| reward_accuracy | NaN |" in card and "| grad_norm | inf |" in card
    assert "| loss | 0 |" not in card


def test_transformers_nan_filter_is_off():
    from pathlib import Path

    from curate.train.trainer import orpo_args

    args = orpo_args(S.resolve("tiny-cpu", [], "m"), Path("/tmp/unused"))
    assert args.logging_nan_inf_filter is False
    assert orpo_args(S.resolve("tiny-cpu", ["orpo.logging_nan_inf_filter=true"], "m"),
                     Path("/tmp/unused")).logging_nan_inf_filter is True
