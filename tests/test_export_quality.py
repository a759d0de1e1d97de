"""Export carries the scores and every quality flag column; the unpaired KTO format loads into TRL's KTOTrainer."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from curate.export import Config, export
from curate.schema import json_schema
from curate.stages import quality
from tests.conftest import make_pairs


@pytest.fixture
def checked_pairs(tmp_path):
    """Pairs through the quality stage: some flagged (tied, inverted, PII, truncated), zh and en."""
    rows = []
    for i in range(24):
        zh = i % 2 == 0
        rows.append({
            "prompt": f"问题{i}：为什么天空是蓝色的？" if zh else f"Question {i}: why is the sky blue?",
            "chosen": "因为瑞利散射，蓝光被散射得更多。" if zh else "Rayleigh scattering makes blue light scatter more.",
            "rejected": "因为海是蓝的。" if zh else "Because the sea is blue.",
            "chosen_score": 5.0, "rejected_score": 5.0 if i % 6 == 0 else (7.0 if i % 6 == 1 else 2.0),
            "source": "zh.jsonl" if zh else "en.jsonl", "lang": "zh-Hans" if zh else "en",
        })
    rows[2]["chosen"] = "请拨打13800138000联系我们。"
    rows[3]["chosen"] = "The steps are as follows:"
    result = quality.run(make_pairs(rows), quality.Config()).collect()
    assert result.rejects.height == 0
    path = tmp_path / "pairs.parquet"
    result.kept.write_parquet(path)
    return path


def test_scores_and_quality_flags_are_exported(checked_pairs, tmp_path):
    import datasets

    out = tmp_path / "export"
    export(checked_pairs, out, Config(test_size=0.25, seed=3))
    trl = pl.concat([pl.read_parquet(out / "trl" / f"{s}.parquet") for s in ("train", "test")])
    for col in ("chosen_score", "rejected_score", *quality.ADDS):
        assert col in trl.columns, col
    assert trl[quality.FLAG_PREFIX + quality.TIED_SCORES].sum() == 4
    assert trl[quality.FLAG_PREFIX + quality.INVERTED_SCORES].sum() == 4
    assert trl[quality.FLAG_PREFIX + quality.PII].sum() == 1
    assert trl.filter(pl.col("quality_pii"))["quality_pii_kinds"].to_list() == [["phone"]]
    assert trl[quality.FLAG_PREFIX + quality.TRUNCATED_REPLY].sum() == 1
    assert trl[quality.FLAG_PREFIX + quality.OVER_MAX_TOKENS].null_count() == trl.height  # no tokenizer: unknown

    schema = json_schema("export_record")
    import jsonschema

    for split in ("train", "test"):
        for line in (out / "trl" / f"{split}.jsonl").read_text().splitlines():
            jsonschema.validate(json.loads(line), schema)
    # a training job filters on them, e.g. with datasets
    dd = datasets.load_from_disk(str(out / "hf"))
    clean = dd["train"].filter(lambda r: not (r["quality_tied_scores"] or r["quality_inverted_scores"]))
    assert 0 < clean.num_rows < dd["train"].num_rows
    assert all(r["chosen_score"] > r["rejected_score"] for r in clean)


def test_schema_lists_every_quality_column():
    props = json_schema("export_record")["properties"]
    assert {c for c in props if c.startswith("quality_")} == set(quality.ADDS)


def test_kto_export_is_trl_unpaired_format(checked_pairs, tmp_path):
    import datasets
    import jsonschema
    from trl.data_utils import unpair_preference_dataset

    out = tmp_path / "export"
    summary = export(checked_pairs, out, Config(test_size=0.25, seed=3, formats=("hf", "trl", "kto")))
    schema = json_schema("export_record")
    # the kto_record definition, its references resolved against the whole file
    kto_validator = jsonschema.Draft202012Validator(schema).evolve(schema=schema["$defs"]["kto_record"])
    for split in ("train", "test"):
        kto = pl.read_parquet(out / "kto" / f"{split}.parquet")
        assert kto.height == 2 * summary["splits"][split]
        assert kto["label"].to_list() == [True, False] * summary["splits"][split]
        assert kto.columns[:3] == ["prompt", "completion", "label"]
        trl = pl.read_parquet(out / "trl" / f"{split}.parquet")
        assert kto.filter(pl.col("label"))["completion"].to_list() == trl["chosen"].to_list()
        assert kto.filter(~pl.col("label"))["completion"].to_list() == trl["rejected"].to_list()
        assert kto["pair_id"].to_list()[::2] == trl["pair_id"].to_list()
        # the same rows TRL's own converter makes from the paired file
        theirs = unpair_preference_dataset(datasets.Dataset.from_parquet(str(out / "trl" / f"{split}.parquet")))
        key = lambda r: (json.dumps(r["prompt"], ensure_ascii=False), r["completion"][0]["content"], r["label"])
        assert sorted(map(key, theirs)) == sorted(map(key, kto.to_dicts()))
        for line in (out / "kto" / f"{split}.jsonl").read_text().splitlines():
            kto_validator.validate(json.loads(line))
    with pytest.raises(jsonschema.ValidationError):
        kto_validator.validate({**json.loads(line), "label": "yes"})
    assert "kto/train.parquet" in json.loads((out / "manifest.json").read_text())["outputs"]
    assert not (tmp_path / "export-no-kto").exists()
    export(checked_pairs, tmp_path / "export-no-kto", Config(test_size=0.25, seed=3))
    assert not (tmp_path / "export-no-kto" / "kto").exists()  # opt-in


def test_kto_export_trains_with_trl_kto_trainer(checked_pairs, tmp_path):
    """TRL's KTOTrainer tokenizes the unpaired file (its own checks) and takes real steps on a tiny model."""
    import datasets
    import torch
    from trl import KTOConfig, KTOTrainer

    from curate.train.tiny import build_model, build_tokenizer

    out = tmp_path / "export"
    export(checked_pairs, out, Config(test_size=0.25, seed=3, formats=("trl", "kto")))
    train = datasets.Dataset.from_parquet(str(out / "kto" / "train.parquet"))
    texts = [m["content"] for row in train for m in row["prompt"] + row["completion"]]
    tok = build_tokenizer(texts, vocab_size=300)
    model_dir = tmp_path / "tiny"
    build_model(tok, seed=0).save_pretrained(model_dir)  # a path: KTOTrainer loads its reference model from it
    tok.save_pretrained(model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains ~100x faster on one thread of a busy machine
    args = KTOConfig(
        output_dir=str(tmp_path / "kto-run"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1, max_length=128,
        remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0,
    )
    try:
        trainer = KTOTrainer(model=str(model_dir), args=args, train_dataset=train, processing_class=tok)
        assert sum(trainer.train_dataset["label"]) == train.num_rows // 2  # desirable and undesirable, as written
        result = trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert result.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(loss) for loss in losses)
