"""Training for real on CPU: a tiny Gemma2 with TRL's ORPO trainer, full and LoRA, resume, outputs, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner
from train_helpers import pair_rows, write_export

from curate.train import TrainError
from curate.train import spec as S
from curate.train.commands import train as train_cmd
from curate.train.trainer import train


def _cli(*args):
    return CliRunner().invoke(train_cmd, [str(a) for a in args], catch_exceptions=True)


def test_curate_train_on_a_pipeline_export(pipeline_export, pipeline_tiny_model, tmp_path):
    """`curate train` (through the real `curate` group) on what `curate run pipelines/default.toml` exported."""
    from curate.cli import main

    out = tmp_path / "run"
    args = [str(pipeline_export), "--model", str(pipeline_tiny_model), "--preset", "tiny-cpu", "--out", str(out)]
    result = CliRunner().invoke(main, ["train", *args, "--set", "orpo.max_steps=3"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    pairs = len(__import__("datasets").load_from_disk(str(pipeline_export / "hf"))["train"])
    assert f"pre-flight: {pairs} training pairs, max_length 1024" in result.output
    assert "pairs whose prompt alone fills max_length (no reply token left): 0 → 0 dropped" in result.output
    assert "pairs whose replies will be cut to fit max_length: 0" in result.output
    assert f"training on {pairs} of {pairs} pairs" in result.output
    assert "<start_of_turn>model\n" in result.output and "trained 3 steps" in result.output
    assert "evaluation on the test split" in result.output and "| zh |" in result.output

    config = json.loads((out / "train_config.json").read_text())
    assert config["orpo"]["max_steps"] == 3 and config["preset"]["model"] == str(pipeline_tiny_model)
    assert json.loads((out / "preflight.json").read_text())["pairs"] == pairs

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["step"] for r in metrics["train"]] == [1, 2, 3]
    for key in ("loss", "nll_loss", "log_odds_ratio", "rewards_chosen", "rewards_rejected", "reward_accuracy"):
        assert all(math.isfinite(r[key]) for r in metrics["train"]), key
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["data"]["train"] == {"pairs": pairs, "prompt_overflow": 0, "shortened": 0, "dropped": 0,
                                        "pairs_kept": pairs}
    assert set(metrics["evaluation"]) >= {"before", "after", "split", "pairs_kept"}
    assert {"all", "zh", "en"} <= set(metrics["evaluation"]["after"])
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert {g["lang"] for g in generations} == {"zh", "en"}
    assert all(g["row_id"] and g["pair_id"] and "before" in g and "after" in g for g in generations)

    sha = hashlib.sha256((pipeline_export / "manifest.json").read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    assert f"manifest sha256: `{sha}`" in card and "base_model:" in card
    assert f"training pairs: {pairs} of {pairs}" in card and "(before → after training)" in card
    assert "| zh |" in card and "| en |" in card
    assert (out / "model" / "README.md").read_text() == card

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    tok = AutoTokenizer.from_pretrained(str(out / "model"))
    assert tok.chat_template and model.config.vocab_size == len(tok)

    again = CliRunner().invoke(main, ["train", *args])
    assert again.exit_code == 2 and "already holds a training run" in again.output
    bad = CliRunner().invoke(main, ["train", *args[:-1], str(tmp_path / "other"), "--set", "orpo.betta=1"])
    assert bad.exit_code == 2
    assert "error: orpo.betta: unknown key (not a field of TRL's ORPOConfig)" in bad.output


def test_loss_falls_on_a_repeated_batch(tmp_path, tiny_model):
    rows = pair_rows(2, system=None)
    export = write_export(tmp_path / "export", rows, rows)
    spec = S.resolve("tiny-cpu", ["orpo.max_steps=25", "orpo.learning_rate=0.005"], str(tiny_model))
    result = train(export, tmp_path / "run", spec)  # batch 2 = the whole train split: the same batch every step
    losses = [r["loss"] for r in result.metrics["train"]]
    assert len(losses) == 25 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])
    assert result.metrics["train"][-1]["nll_loss"] < result.metrics["train"][0]["nll_loss"]


def test_lora_trains_an_adapter_and_leaves_the_base_alone(fixture_export, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = S.resolve("tiny-cpu", ["curate.method=lora", "orpo.max_steps=3", "orpo.learning_rate=0.01"],
                     str(tiny_model))
    result = train(fixture_export, tmp_path / "run", spec)
    adapter = tmp_path / "run" / "adapter"
    assert result.model_dir == adapter and (adapter / "adapter_config.json").is_file()
    assert not (tmp_path / "run" / "model").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert "library_name: peft" in (adapter / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(adapter))
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    merged = tuned.merge_and_unload()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], base.state_dict()[q])
    k = "model.layers.0.self_attn.k_proj.weight"  # not a LoRA target: unchanged
    assert torch.equal(merged.state_dict()[k], base.state_dict()[k])


def test_resume_from_checkpoint(fixture_export, tiny_model, tmp_path):
    out = tmp_path / "run"
    common = ["--model", tiny_model, "--preset", "tiny-cpu", "--out", out, "--set", "orpo.save_strategy=steps",
              "--set", "orpo.save_steps=2"]
    first = _cli(fixture_export, *common, "--set", "orpo.max_steps=4")
    assert first.exit_code == 0, repr(first.exception)
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-2", "checkpoint-4"]

    second = _cli(fixture_export, *common, "--set", "orpo.max_steps=6", "--resume")
    assert second.exit_code == 0, second.output + repr(second.exception)
    assert "trained 6 steps" in second.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["step"] for r in metrics["train"]] == [1, 2, 3, 4, 5, 6]  # history restored from checkpoint-4
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    assert json.loads((out / "train_config.json").read_text())["orpo"]["max_steps"] == 6


def test_resume_without_checkpoint_is_an_error(fixture_export, tiny_model, tmp_path):
    result = _cli(fixture_export, "--model", tiny_model, "--preset", "tiny-cpu", "--out", tmp_path / "r", "--resume")
    assert isinstance(result.exception, TrainError) and "no checkpoint in" in str(result.exception)


def test_dry_run_prints_the_multi_gpu_launch(fixture_export, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = _cli(fixture_export, "--model", tiny_model, "--preset", "gemma2-9b-chinese-chat", "--out", out,
                  "--dry-run")
    assert result.exit_code == 0, result.output + repr(result.exception)
    launch = [line for line in result.output.splitlines() if line.startswith("launch: ")]
    assert len(launch) == 1
    expected = (f"--config_file {S.ACCELERATE_DIR / 'deepspeed-zero3.yaml'} --num_processes 8 -m curate.train.launch "
                f"{out / 'train_config.json'} --export {fixture_export} --out {out}")
    assert launch[0].endswith(expected) and ("accelerate launch" in launch[0] or "accelerate.commands.launch"
                                              in launch[0])
    # pre-flight ran with the recipe's 8K context and its system policy (merge: no system turn left)
    assert "max_length 8192" in result.output and "You are a helpful assistant.\n\nWhat is" in result.output
    assert not out.exists()  # a dry run writes nothing

    fsdp = _cli(fixture_export, "--model", tiny_model, "--preset", "gemma2-9b-chinese-chat", "--out", out,
                "--dry-run", "--set", "preset.accelerate_config=fsdp.yaml", "--set", "preset.num_processes=4")
    assert f"--config_file {S.ACCELERATE_DIR / 'fsdp.yaml'} --num_processes 4 -m curate.train.launch" in fsdp.output


def test_launch_entry_point_trains_from_saved_config(fixture_export, tiny_model, tmp_path):
    from curate.train.launch import main

    out = tmp_path / "run"
    spec = S.resolve("tiny-cpu", ["orpo.max_steps=2"], str(tiny_model))
    S.save(spec, out / "train_config.json")
    assert main([str(out / "train_config.json"), "--export", str(fixture_export), "--out", str(out)]) == 0
    assert [r["step"] for r in json.loads((out / "metrics.json").read_text())["train"]] == [1, 2]
    assert main([str(out / "train_config.json"), "--export", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_liger_loss_on_cpu_is_a_clear_error(fixture_export, tiny_model, tmp_path):
    spec = S.resolve("tiny-cpu", ["curate.loss=liger"], str(tiny_model))
    with pytest.raises(TrainError, match="liger-kernel|CUDA GPU"):
        train(fixture_export, tmp_path / "run", spec)
    assert "liger_kernel" not in sys.modules


def test_command_module_imports_no_torch():
    code = ("import sys, curate.train.commands, curate.train.spec, curate.train.launch; "
            "print(sorted(m for m in ('torch', 'trl', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cpu_threads_setting_is_restored(fixture_export, tiny_model, tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # tiny-cpu trains on 1 thread (curate.cpu_threads = 1)
    try:
        train(fixture_export, tmp_path / "run", S.resolve("tiny-cpu", ["orpo.max_steps=1"], str(tiny_model)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_eval_split_is_evaluated_and_reported(fixture_export, tiny_model, tmp_path):
    spec = S.resolve("tiny-cpu", ["orpo.max_steps=2", "orpo.eval_strategy=steps", "orpo.eval_steps=1"],
                     str(tiny_model))
    result = train(fixture_export, tmp_path / "run", spec)
    evals = result.metrics["eval"]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(math.isfinite(r["nll_loss"]) and 0 <= r["reward_accuracy"] <= 1 for r in evals)
    # the export's test split has 4 pairs: TRL evaluated exactly those (eval metrics differ from train ones)
    assert evals[0]["nll_loss"] != result.metrics["train"][0]["nll_loss"]
