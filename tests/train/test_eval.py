"""Evaluation on the export's test split: per-language ORPO loss, reward accuracy and margin, and generations."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from train_helpers import pair_rows, write_export

from curate.train import spec as S
from curate.train.evaluate import summarize
from curate.train.preflight import cjk_lang, coarse_lang, split_meta


@pytest.mark.parametrize("loss", ["trl", "chunked"])
def test_pair_eval_is_trls_eval(fixture_export, tiny_model, tmp_path, loss, one_thread):
    """On one batch holding the whole test split, curate's "all" numbers are TRL's own eval metrics."""
    from curate.train.trainer import build_trainer

    spec = S.resolve("tiny-cpu", ["orpo.per_device_eval_batch_size=4", f"curate.loss={loss}"], str(tiny_model))
    trainer = build_trainer(fixture_export, tmp_path, spec)
    theirs = trainer.evaluate()
    stats = trainer.pair_stats()
    assert stats.shape == (4, 6)
    meta = trainer.curate_data["eval_meta"]
    assert [m["lang"] for m in meta] == ["en", "en", "zh", "zh"]
    ours = summarize(stats, [m["lang"] for m in meta], 0.1)
    assert list(ours) == ["all", "zh", "en"] and ours["zh"]["pairs"] == ours["en"]["pairs"] == 2
    a = ours["all"]
    assert a["orpo_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-5)
    assert a["nll_loss"] == pytest.approx(theirs["eval_nll_loss"], rel=1e-5)
    assert a["log_odds_ratio"] == pytest.approx(theirs["eval_log_odds_ratio"], rel=1e-5)
    assert a["reward_accuracy"] == pytest.approx(theirs["eval_rewards/accuracies"])
    assert a["reward_margin"] == pytest.approx(theirs["eval_rewards/margins"], rel=1e-4, abs=1e-9)
    assert a["logp_chosen"] == pytest.approx(theirs["eval_logps/chosen"], rel=1e-5)
    # per language: the pairs' own numbers, not copies of "all"
    assert ours["zh"]["logp_chosen"] != ours["en"]["logp_chosen"]
    assert a["logp_chosen"] == pytest.approx((ours["zh"]["logp_chosen"] + ours["en"]["logp_chosen"]) / 2)


def test_summarize_by_hand():
    lp = math.log
    # pair 0: chosen mean logp log(0.5) > rejected log(0.25); pair 1: a tie (counts as wrong)
    stats = [[2 * lp(0.5), 2, 3 * lp(0.25), 3, 6.0, 4], [lp(0.2), 1, lp(0.2), 1, 2.0, 4]]
    out = summarize(stats, ["en", "zh"], beta=0.5)
    assert out["all"]["reward_accuracy"] == 0.5 and out["en"]["reward_accuracy"] == 1.0
    assert out["zh"]["reward_accuracy"] == 0.0 and out["zh"]["reward_margin"] == 0.0
    assert out["all"]["nll_loss"] == pytest.approx(8.0 / 8)  # token-weighted
    odds = (lp(0.5) - lp(0.25)) - (lp(0.5) - lp(0.75))  # log-odds(chosen) − log-odds(rejected)
    assert out["en"]["log_odds_ratio"] == pytest.approx(-math.log1p(math.exp(-odds)))
    assert out["en"]["orpo_loss"] == pytest.approx(6.0 / 4 - 0.5 * out["en"]["log_odds_ratio"])
    assert out["en"]["reward_margin"] == pytest.approx(0.5 * (lp(0.5) - lp(0.25)))
    assert out["en"]["logp_margin"] == pytest.approx(lp(0.5) - lp(0.25))
    broken = summarize([[math.nan, 1, -1.0, 1, 1.0, 1]], ["en"], 0.1)
    assert math.isnan(broken["en"]["reward_accuracy"]) and math.isnan(broken["en"]["orpo_loss"])


def test_language_from_the_export_or_the_han_share(tmp_path, fixture_export):
    assert [m["lang"] for m in split_meta(fixture_export, "test")] == ["en", "en", "zh", "zh"]
    assert [coarse_lang(x) for x in ("zh-Hans", "zh-Hant", "en", "mixed", None)] == ["zh", "zh", "en", "mixed",
                                                                                     "other"]
    rows = pair_rows(8, system=None)
    for row in rows:
        del row["lang"]  # an export made without the language stage
    export = write_export(tmp_path / "nolang", rows, rows)
    meta = split_meta(export, "test")
    assert [m["lang"] for m in meta] == ["en"] * 4 + ["zh"] * 4
    assert [m["pair_id"] for m in meta] == [r["pair_id"] for r in rows]
    system_only_english = [{"role": "system", "content": "You are a helpful assistant."},
                           {"role": "user", "content": "一年有几个月？"}]
    assert cjk_lang(system_only_english, [{"role": "assistant", "content": "十二个月。"}]) == "zh"
    assert cjk_lang("Translate to Chinese: good morning", "早上好") == "en"
    assert cjk_lang("把这句话翻译成英文：早上好", "Good morning") == "zh"


def test_curate_eval_on_a_tiny_model_gives_per_language_reward_accuracy(fixture_export, tiny_model, tmp_path):
    """Done-when: `curate eval` on a tiny model gives per-language reward accuracy."""
    from curate.cli import main

    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["eval", str(fixture_export), "--model", str(tiny_model), "--preset",
                                       "tiny-cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "4 of 4 pairs evaluated" in result.output
    rows = {line.split("|")[1].strip(): line for line in result.output.splitlines() if line.startswith("| ")}
    assert {"all", "zh", "en"} <= set(rows)
    report = json.loads((out / "eval.json").read_text())
    for lang in ("zh", "en"):
        m = report["metrics"][lang]
        assert m["pairs"] == 2 and m["reward_accuracy"] in (0.0, 0.5, 1.0)
        assert math.isfinite(m["orpo_loss"]) and m["orpo_loss"] > 0 and math.isfinite(m["reward_margin"])
    assert report["split"] == "test" and report["pairs_kept"] == 4 and len(report["manifest_sha256"]) == 64
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["lang"] for g in generations] == ["zh", "zh", "en", "en"]
    assert all(isinstance(g["answer"], str) and g["prompt"][-1]["role"] == "user" for g in generations)

    outside = CliRunner().invoke(main, ["eval", str(fixture_export), "--model", str(tiny_model)])
    assert outside.exit_code == 2 and "not inside a curate training run" in outside.output
    assert "pass --preset" in outside.output


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_evaluates_before_and_after_and_curate_eval_agrees(fixture_export, tiny_model, tmp_path, method):
    from curate.cli import main
    from curate.train.trainer import train

    spec = S.resolve("tiny-cpu", ["orpo.max_steps=3", "orpo.learning_rate=0.01", f"curate.method={method}"],
                     str(tiny_model))
    run = tmp_path / "run"
    result = train(fixture_export, run, spec)
    evaluation = result.metrics["evaluation"]
    assert evaluation["pairs_kept"] == 4 and set(evaluation["before"]) == {"all", "zh", "en"}
    assert evaluation["after"]["all"]["orpo_loss"] != evaluation["before"]["all"]["orpo_loss"]  # it trained
    saved = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert saved["after"]["zh"]["reward_accuracy"] == evaluation["after"]["zh"]["reward_accuracy"]
    generations = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4 and all({"before", "after", "chosen", "pair_id"} <= set(g) for g in generations)
    card = (run / "README.md").read_text()
    assert "## Evaluation on the `test` split (before → after training)" in card and "| zh | 2 |" in card

    # the saved model, evaluated alone with the run's own configuration (no --preset), gives the same numbers
    model_dir = run / ("model" if method == "full" else "adapter")
    alone = CliRunner().invoke(main, ["eval", str(fixture_export), "--model", str(model_dir), "--out",
                                      str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output + repr(alone.exception)
    again = json.loads((tmp_path / "alone" / "eval.json").read_text())["metrics"]
    for lang in ("all", "zh", "en"):
        for key in ("orpo_loss", "reward_accuracy", "reward_margin"):
            assert again[lang][key] == pytest.approx(evaluation["after"][lang][key], rel=1e-4, abs=1e-7), (lang, key)


def test_a_failing_evaluation_never_costs_the_model(fixture_export, tiny_model, tmp_path, monkeypatch):
    """Evaluation is a report: when it fails after training (e.g. out of GPU memory), the model is still saved."""
    from curate.train import evaluate
    from curate.train.commands import train as train_cmd

    real = evaluate.PairEval.pair_stats
    calls = []

    def after_fails(self, dataset=None):  # failure injection: the second pass (after training) runs out of memory
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB\nmore detail")
        return real(self, dataset)

    monkeypatch.setattr(evaluate.PairEval, "pair_stats", after_fails)
    out = tmp_path / "run"
    result = CliRunner().invoke(train_cmd, [str(fixture_export), "--model", str(tiny_model), "--preset", "tiny-cpu",
                                            "--out", str(out), "--set", "orpo.max_steps=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "warning: evaluation after training failed: RuntimeError: CUDA out of memory. Tried to allocate 8.00 GiB" \
        in result.output
    assert (out / "model" / "config.json").is_file()
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert "before" in evaluation and "after" not in evaluation
    assert evaluation["errors"] == {"after": "RuntimeError: CUDA out of memory. Tried to allocate 8.00 GiB"}
    assert "Evaluation after training failed: RuntimeError" in (out / "README.md").read_text()
