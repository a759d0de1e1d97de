"""Pre-flight: loading an export, system-message policy, lengths and truncation count, the tiny model builder."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from train_helpers import pair_rows, write_export

from curate.train import TrainError
from curate.train import spec as S
from curate.train.preflight import check, fit, load_export, manifest_sha256


def _spec(model, *sets):
    return S.resolve("tiny-cpu", list(sets), str(model))


def _tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_tiny_tokenizer_and_model(tiny_model):
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model)
    assert 500 < len(tok) <= 1000
    ids = tok("中国的首都是北京。", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == "中国的首都是北京。"
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nS\n\nQ<end_of_turn>\n<start_of_turn>model\n"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    assert type(model).__name__ == "Gemma2ForCausalLM" and sum(p.numel() for p in model.parameters()) < 300_000


def test_load_export_keeps_only_trl_columns(fixture_export, tiny_model):
    train, test = load_export(fixture_export, _spec(tiny_model))
    assert train.column_names == ["prompt", "chosen", "rejected"] and (len(train), len(test)) == (16, 4)
    assert train[0]["prompt"][0]["role"] == "system"


def test_system_merge_and_drop(fixture_export, tiny_model):
    train, _ = load_export(fixture_export, _spec(tiny_model))
    merged = fit(train, _tok(tiny_model), 1024, system="merge").dataset
    dropped = fit(train, _tok(tiny_model), 1024, system="drop").dataset
    assert len(merged) == len(dropped) == len(train)
    assert merged[0]["prompt"] == [{"role": "user", "content": "You are a helpful assistant.\n\n"
                                    "What is the capital of France?"}]
    assert dropped[0]["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert merged[1]["prompt"] == dropped[1]["prompt"]  # rows without a system message are untouched


def test_template_refusing_system_names_the_fix(fixture_export, tiny_model):
    tok = _tok(tiny_model)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    train, _ = load_export(fixture_export, _spec(tiny_model))
    with pytest.raises(TrainError, match="pair 0: the model's chat template refused it.*curate.system=merge"):
        check(train, tok, 256)


def test_lengths_match_what_trl_tokenizes(fixture_export, tiny_model, tmp_path, one_thread):
    """Pre-flight's per-pair length is the length TRL's ORPOTrainer actually builds (no truncation at 4096)."""
    from curate.train.trainer import build_trainer

    spec = _spec(tiny_model, "orpo.max_length=4096")
    train, _ = load_export(fixture_export, spec)
    pre = check(train, _tok(tiny_model), 4096)
    trainer = build_trainer(fixture_export, tmp_path, spec)
    built = sorted(max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) for r in trainer.train_dataset)
    assert (pre.length_min, pre.length_max, pre.length_median) == (built[0], built[-1], float(
        (built[7] + built[8]) / 2))
    assert pre.truncated == 0 and pre.warnings == [] and pre.prompt_overflow == pre.dropped == 0
    assert pre.pairs_kept == pre.pairs == len(trainer.train_dataset) == 16


def test_truncation_count_and_warning(tmp_path, tiny_model):
    rows = pair_rows(8, system=None)
    long_ids = [2, 5, 6]
    for i in long_ids:
        rows[i]["chosen"] = [{"role": "assistant", "content": "The capital of France is Paris. " * 40}]
    export = write_export(tmp_path / "export", rows, rows[:2])
    spec = _spec(tiny_model, "orpo.max_length=64")
    train, _ = load_export(export, spec)
    pre = check(train, _tok(tiny_model), 64, spec)
    assert pre.truncated == 3 and pre.truncated_ids == long_ids
    assert pre.length_max > 64 and pre.pairs == pre.pairs_kept == 8 and pre.prompt_overflow == 0
    assert pre.warnings == [("3 of 8 training pairs exceed max_length=64 tokens and their replies will be cut to "
                             "fit; raise orpo.max_length to keep them whole")]
    assert pre.example.startswith("<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
                                  "<start_of_turn>model\nThe capital of France is Paris.")


def test_not_an_export(tmp_path, fixture_export, tiny_model):
    spec = _spec(tiny_model)
    with pytest.raises(TrainError, match="no manifest.json"):
        manifest_sha256(tmp_path)
    with pytest.raises(TrainError, match="no hf/ folder"):
        load_export(tmp_path, spec)
    broken = tmp_path / "broken"
    rows = [{k: v for k, v in r.items() if k != "rejected"} for r in pair_rows(4)]
    write_export(broken, rows, rows)
    with pytest.raises(TrainError, match="missing column 'rejected'"):
        load_export(broken, spec)
    copy = tmp_path / "copy"
    shutil.copytree(fixture_export, copy)
    with pytest.raises(TrainError, match="no split 'training'"):
        load_export(copy, _spec(tiny_model, "curate.train_split=training"))


def test_manifest_hash_is_sha256_of_bytes(fixture_export):
    expected = hashlib.sha256((fixture_export / "manifest.json").read_bytes()).hexdigest()
    assert manifest_sha256(fixture_export) == expected


def test_tiny_model_command(fixture_export, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoTokenizer

    from curate.train.commands import tiny_model

    result = CliRunner().invoke(tiny_model, [str(fixture_export), str(tmp_path / "tiny"), "--vocab-size", "300"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "--preset tiny-cpu" in result.output
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "tiny"))) == 300
    missing = CliRunner().invoke(tiny_model, [str(tmp_path / "nope"), str(tmp_path / "t2")])
    assert missing.exception is not None and "no hf/ folder" in str(missing.exception)


def test_dependency_warnings_name_the_missing_package(monkeypatch):
    import importlib.util

    from curate.train.preflight import dependency_warnings

    real = importlib.util.find_spec
    missing = {"bitsandbytes", "deepspeed", "liger_kernel"}  # failure injection: as on a machine without them
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    recipe = dependency_warnings(S.resolve("gemma2-9b-chinese-chat"))
    assert any("needs bitsandbytes" in w for w in recipe)  # paged_adamw_32bit
    assert any("deepspeed-zero3.yaml needs DeepSpeed" in w for w in recipe)
    liger = dependency_warnings(S.resolve("tiny-cpu", ["curate.loss=liger"], "m"))
    assert liger == ["curate.loss=liger needs liger-kernel, which is not installed (pip install 'curate[gpu]')"]
    assert dependency_warnings(S.resolve("tiny-cpu", [], "m")) == []
