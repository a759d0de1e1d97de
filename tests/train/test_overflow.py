"""Pairs whose prompt fills max_length: dropped and counted (or shortened from the left), refused when too many.

TRL cuts such a pair's replies to nothing, so its loss is NaN and the weights follow (test_guard.py shows that on the
real trainer); these tests show curate never hands it such a pair, and says what it did instead.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from train_helpers import pair_rows, write_export

from curate.train import spec as S
from curate.train.preflight import check, fit, load_export, refusal

LONG = "What is the capital of France? " * 10  # 80 tokens with the tiny tokenizer; a normal pair is ≤ 42
LIMIT = 64


def _tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _export(tmp_path, long_ids, n=16, multi_turn=False, name="export"):
    rows = pair_rows(n)
    for i in long_ids:
        if multi_turn:  # a long first exchange, then a short question: the last turns fit on their own
            rows[i]["prompt"] = [{"role": "system", "content": "Be brief."}, _user(LONG), _assistant(LONG),
                                 _user(f"And in one word? ({i})")]
        else:
            rows[i]["prompt"] = [_user(f"{LONG} ({i})")]
    test = pair_rows(4)
    test[1]["prompt"] = [_user(LONG)]  # one test pair overflows too
    return write_export(tmp_path / name, rows, test)


def _spec(model, *sets):
    return S.resolve("tiny-cpu", [f"orpo.max_length={LIMIT}", *sets], str(model))


def test_drop_counts_and_leaves_out_only_overflowing_prompts(tmp_path, tiny_model):
    export = _export(tmp_path, [1, 4, 9])
    train, _ = load_export(export, _spec(tiny_model))
    fitted = fit(train, _tok(tiny_model), LIMIT)
    assert fitted.overflow == fitted.dropped == [1, 4, 9] and fitted.shortened == []
    assert fitted.keep == [i for i in range(16) if i not in (1, 4, 9)] and len(fitted.dataset) == 13
    assert all(n < LIMIT for n in fitted.prompt_tokens) and min(fitted.prompt_tokens_in[i] for i in (1, 4, 9)) >= LIMIT
    assert [r["chosen"] for r in fitted.dataset] == [train[i]["chosen"] for i in fitted.keep]  # order kept
    pre = check(train, _tok(tiny_model), LIMIT, _spec(tiny_model))
    assert (pre.prompt_overflow, pre.dropped, pre.pairs_kept, pre.dropped_ids) == (3, 3, 13, [1, 4, 9])
    assert pre.refusal is None and pre.prompt_max >= LIMIT
    assert pre.warnings[0] == ("3 of 16 training pairs have a prompt that alone fills max_length=64 tokens (no reply "
                               "token would be left); 3 dropped (curate.prompt_overflow=drop)")


def test_truncate_left_keeps_the_system_message_and_the_last_turns(tmp_path, tiny_model):
    export = _export(tmp_path, [2, 5], multi_turn=True)
    train, _ = load_export(export, _spec(tiny_model))
    rows = [r for r in pair_rows(16)]
    # a single long turn can't be shortened by turns: dropped even with truncate_left
    train = train.add_item({"prompt": [_user(LONG)], "chosen": rows[0]["chosen"], "rejected": rows[0]["rejected"]})
    fitted = fit(train, _tok(tiny_model), LIMIT, policy="truncate_left")
    assert fitted.overflow == [2, 5, 16] and fitted.shortened == [2, 5] and fitted.dropped == [16]
    assert len(fitted.dataset) == 16
    assert fitted.dataset[2]["prompt"] == [{"role": "system", "content": "Be brief."}, _user("And in one word? (2)")]
    assert fitted.dataset[0]["prompt"] == train[0]["prompt"]  # pairs that fit are untouched
    assert all(n <= LIMIT for n in fitted.pair_tokens)
    # the default policy drops the same multi-turn pairs instead
    assert fit(train, _tok(tiny_model), LIMIT).dropped == [2, 5, 16]


def test_truncate_left_with_merged_system_keeps_the_system_text(tmp_path, tiny_model):
    export = _export(tmp_path, [2], multi_turn=True)
    train, _ = load_export(export, _spec(tiny_model))
    fitted = fit(train, _tok(tiny_model), LIMIT, system="merge", policy="truncate_left")
    assert fitted.shortened == [2]
    assert fitted.dataset[2]["prompt"] == [_user("Be brief.\n\nAnd in one word? (2)")]


def test_refusal_names_the_numbers_and_the_fixes(tmp_path, tiny_model):
    export = _export(tmp_path, list(range(6)))
    train, _ = load_export(export, _spec(tiny_model))
    fitted = fit(train, _tok(tiny_model), LIMIT)
    why = refusal(fitted, _spec(tiny_model))
    assert why.startswith("6 of 16 training pairs (38%) have a prompt that alone fills max_length=64 tokens, more "
                          "than curate.max_dropped_share=0.25 allows to drop (prompts: p95 ")
    assert "raise orpo.max_length or set curate.prompt_overflow=truncate_left" in why and "\n" not in why
    assert refusal(fitted, _spec(tiny_model, "curate.max_dropped_share=0.5")) is None
    few = refusal(fitted, _spec(tiny_model, "curate.max_dropped_share=0.5", "curate.min_train_pairs=11"))
    assert few.startswith("only 10 of 16 training pairs are left after dropping 6 whose prompt alone fills "
                          "max_length=64 tokens; curate.min_train_pairs needs 11")
    batch = refusal(fitted, _spec(tiny_model, "curate.max_dropped_share=0.5",
                                  "orpo.per_device_train_batch_size=4", "orpo.gradient_accumulation_steps=3"))
    assert "one global batch needs 12" in batch


def test_export_with_long_prompts_trains_finite_with_the_drops_counted(tmp_path, tiny_model, monkeypatch):
    """Done-when: an export with prompts longer than max_length trains to finite, non-zero losses, drops counted."""
    from curate.cli import main
    from curate.train import preflight

    calls = []
    real_fit = preflight.fit
    monkeypatch.setattr(preflight, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))  # a spy: counts
    export = _export(tmp_path, [1, 4, 9])
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(export), "--model", str(tiny_model), "--preset", "tiny-cpu",
                                       "--out", str(out), "--set", f"orpo.max_length={LIMIT}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pairs whose prompt alone fills max_length (no reply token left): 3 → 3 dropped" in result.output
    assert "training on 13 of 16 pairs" in result.output
    assert "test split: 3 of 4 pairs evaluated (1 dropped" in result.output
    assert len(calls) == 2  # train + test split rendered once each: training reuses the pre-flight's fit
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [r["loss"] for r in metrics["train"]]
    assert len(losses) == 4 and all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in losses)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in metrics["train"])
    assert metrics["data"]["train"] == {"pairs": 16, "prompt_overflow": 3, "shortened": 0, "dropped": 3,
                                        "pairs_kept": 13}
    assert metrics["data"]["eval"]["dropped"] == 1 and metrics["evaluation"]["pairs_kept"] == 3
    pre = json.loads((out / "preflight.json").read_text())
    assert (pre["dropped"], pre["dropped_ids"], pre["pairs_kept"]) == (3, [1, 4, 9], 13)
    card = (out / "README.md").read_text()
    assert "- training pairs: 13 of 16 in the export's train split" in card
    assert "3 training pairs had a prompt that alone fills max_length=64 tokens" in card
    from transformers import AutoModelForCausalLM

    from curate.train.guard import non_finite_parameters

    assert non_finite_parameters(AutoModelForCausalLM.from_pretrained(str(out / "model"))) == []


def test_truncate_left_trains_on_the_shortened_prompts(tmp_path, tiny_model):
    from curate.cli import main

    export = _export(tmp_path, [2, 5], multi_turn=True)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(export), "--model", str(tiny_model), "--preset", "tiny-cpu",
                                       "--out", str(out), "--set", f"orpo.max_length={LIMIT}", "--set",
                                       "curate.prompt_overflow=truncate_left", "--set", "orpo.max_steps=2",
                                       "--set", "curate.evaluate=false"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "2 → 0 dropped, 2 prompts shortened from the left" in result.output
    assert "training on 16 of 16 pairs" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["train"]["shortened"] == 2 and "evaluation" not in metrics
    assert all(math.isfinite(r["loss"]) for r in metrics["train"])


@pytest.mark.parametrize("dry_run", [False, True])
def test_too_many_overflowing_prompts_is_refused_with_exit_2(tmp_path, tiny_model, dry_run):
    """Done-when: ... or is refused with exit 2 — never exit 0 with NaN."""
    from curate.cli import main

    export = _export(tmp_path, list(range(8)))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(export), "--model", str(tiny_model), "--preset", "tiny-cpu",
                                       "--out", str(out), "--set", f"orpo.max_length={LIMIT}",
                                       *(["--dry-run"] if dry_run else [])])
    assert "pairs whose prompt alone fills max_length (no reply token left): 8 → 8 dropped" in result.output
    assert "pairs left for training: 8 of 16 (too few" in result.output and "training on" not in result.output
    if dry_run:
        assert result.exit_code == 0 and "warning: training would be refused: 8 of 16 training pairs" in result.output
        assert not out.exists()
        return
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and errors[0].startswith("error: 8 of 16 training pairs (50%) have a prompt that "
                                                          "alone fills max_length=64 tokens")
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
