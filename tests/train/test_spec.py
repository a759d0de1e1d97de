"""Presets, --set overrides and their errors, and the shipped accelerate configs."""

from __future__ import annotations

import pytest

from curate.errors import CurateError
from curate.train import TrainError
from curate.train import spec as S


def test_shipped_presets_resolve():
    assert S.preset_names() == ["gemma2-9b-chinese-chat", "gemma2-9b-lora", "tiny-cpu"]
    for name in S.preset_names():
        spec = S.resolve(name, model="some/model")
        assert spec["preset"]["name"] == name and spec["preset"]["model"] == "some/model"


def test_seed_recipe_values():
    spec = S.resolve("gemma2-9b-chinese-chat")
    o = spec["orpo"]
    assert spec["preset"]["model"] == "google/gemma-2-9b-it"
    assert (o["beta"], o["learning_rate"], o["lr_scheduler_type"], o["warmup_steps"]) == (0.05, 3e-6, "cosine", 0.1)
    assert (o["num_train_epochs"], o["max_length"], o["optim"], o["bf16"]) == (3, 8192, "paged_adamw_32bit", True)
    assert o["activation_checkpointing"] is True and spec["curate"]["method"] == "full"
    global_batch = o["per_device_train_batch_size"] * o["gradient_accumulation_steps"] * spec["preset"]["num_processes"]
    assert global_batch == 128
    assert S.accelerate_config_path(spec).name == "deepspeed-zero3.yaml"


def test_lora_preset_is_one_gpu_lora():
    spec = S.resolve("gemma2-9b-lora")
    assert spec["preset"]["num_processes"] == 1 and spec["curate"]["method"] == "lora"
    assert spec["lora"]["r"] == 16 and spec["orpo"]["activation_checkpointing"] is True


def test_set_overrides_any_table():
    spec = S.resolve("tiny-cpu", ["orpo.beta=0.25", "lora.r=2", "curate.method=lora", "preset.description=x y",
                                  "orpo.optim=adamw_torch_fused"], model="m")
    assert spec["orpo"]["beta"] == 0.25 and spec["lora"]["r"] == 2 and spec["curate"]["method"] == "lora"
    assert spec["preset"]["description"] == "x y" and spec["orpo"]["optim"] == "adamw_torch_fused"


@pytest.mark.parametrize("override, needle", [
    ("orpo.betta=0.1", "orpo.betta: unknown key"),
    ("lora.rank=8", "lora.rank: unknown key"),
    ("curate.metod=lora", "curate.metod: unknown key"),
    ("trainer.beta=1", "unknown table 'trainer'"),
    ("beta=0.1", "expected TABLE.KEY=VALUE"),
    ("curate.method=dpo", "curate.method: 'dpo' is not one of full, lora, qlora"),
    ("curate.loss=fused", "curate.loss: 'fused' is not one of trl, chunked, liger"),
    ("curate.loss_chunk_tokens=x", "curate.loss_chunk_tokens: expected int"),
    ("curate.loss=chunked", "curate.loss=chunked needs the whole LM head"),  # the recipe runs ZeRO-3
    ("preset.num_processes=0", "must be at least 1"),
    ("orpo.output_dir=/tmp/x", "use --out instead"),
    ("preset.accelerate_config=nope.yaml", "'nope.yaml' not found"),
    ("curate.prompt_overflow=truncate", "curate.prompt_overflow: 'truncate' is not one of drop, truncate_left"),
    ("curate.max_dropped_share=1.5", "curate.max_dropped_share: must be between 0 and 1"),
    ("curate.max_dropped_share=lots", "curate.max_dropped_share: expected float"),
    ("curate.min_train_pairs=-1", "curate.min_train_pairs: must be 0 or more"),
    ("curate.evaluate=1", "curate.evaluate: expected bool"),
    ("orpo.max_length=1", "orpo.max_length: expected a whole number of tokens (at least 2), got 1"),
])
def test_bad_override_is_one_line_error(override, needle):
    with pytest.raises(TrainError) as info:
        S.resolve("gemma2-9b-chinese-chat", [override])
    assert isinstance(info.value, CurateError)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_chunked_loss_allowed_on_one_gpu_and_ddp(tmp_path):
    assert S.resolve("gemma2-9b-lora", ["curate.loss=chunked"])["curate"]["loss"] == "chunked"
    spec = S.resolve("gemma2-9b-lora", ["curate.loss=chunked", "preset.num_processes=4",
                                         "preset.accelerate_config=ddp.yaml"])
    assert S.accelerate_config_path(spec) == S.ACCELERATE_DIR / "ddp.yaml"
    own = tmp_path / "mine.yaml"  # a user's own accelerate config, by path
    own.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: bf16\n")
    spec = S.resolve("gemma2-9b-chinese-chat", ["curate.loss=liger", f"preset.accelerate_config={own}"])
    assert S.accelerate_config_path(spec) == own
    with pytest.raises(TrainError, match="fsdp.yaml shards it"):
        S.resolve("gemma2-9b-chinese-chat", ["curate.loss=chunked", "preset.accelerate_config=fsdp.yaml"])


def test_unknown_preset_and_missing_model():
    with pytest.raises(TrainError, match="unknown preset 'gemma7'.*tiny-cpu"):
        S.resolve("gemma7")
    with pytest.raises(TrainError, match="names no model: pass --model"):
        S.resolve("tiny-cpu")


def test_user_preset_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[preset]\nmodel = "x/y"\n[orpo]\nbeta = 0.3\n[extra]\na = 1\n')
    with pytest.raises(TrainError, match=r"unknown table \[extra\]"):
        S.resolve(str(path))
    path.write_text('[preset]\nmodel = "x/y"\n[orpo]\nbeta = 0.3\n')
    assert S.resolve(str(path))["orpo"]["beta"] == 0.3


def test_save_and_load_roundtrip(tmp_path):
    spec = S.resolve("gemma2-9b-lora", ["orpo.beta=0.2"])
    S.save(spec, tmp_path / "train_config.json")
    assert S.load(tmp_path / "train_config.json") == spec


def test_shipped_accelerate_configs_parse_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    kinds = {}
    for path in sorted(S.ACCELERATE_DIR.glob("*.yaml")):
        cfg = load_config_from_file(str(path))
        kinds[path.name] = cfg.distributed_type
        assert cfg.mixed_precision == "bf16" and cfg.num_processes == 8
    assert kinds == {"ddp.yaml": DistributedType.MULTI_GPU, "deepspeed-zero3.yaml": DistributedType.DEEPSPEED,
                     "fsdp.yaml": DistributedType.FSDP}
    ds = load_config_from_file(str(S.ACCELERATE_DIR / "deepspeed-zero3.yaml"))
    assert ds.deepspeed_config["zero_stage"] == 3


def test_overflow_and_eval_defaults_are_safe():
    cur = S.resolve("gemma2-9b-chinese-chat")["curate"]
    assert cur["prompt_overflow"] == "drop" and cur["max_dropped_share"] == 0.25 and cur["min_train_pairs"] == 0
    assert cur["evaluate"] is True and cur["eval_max_pairs"] == 0  # the whole test split, before and after
    assert S.resolve("tiny-cpu", ["curate.max_dropped_share=1"], "m")["curate"]["max_dropped_share"] == 1


def test_length_limits_for_code_outside_training():
    """The public way for curation-time code (e.g. a quality stage) to read a preset's token budget."""
    assert S.length_limits("gemma2-9b-chinese-chat") == {
        "model": "google/gemma-2-9b-it", "max_length": 8192, "prompt_overflow": "drop", "system": "merge"}
    assert S.length_limits("tiny-cpu", ["orpo.max_length=300"], model="runs/tiny")["max_length"] == 300
    assert S.max_length({"orpo": {}}) == 1024 and S.max_length({"orpo": {"max_length": None}}) == 512  # TRL's
    spec = S.resolve("gemma2-9b-chinese-chat")
    assert S.global_batch(spec) == 128
