from __future__ import annotations

import json

import polars as pl
import pytest

from curate.errors import InputError
from curate.export import Config, export
from tests.conftest import make_pairs


@pytest.fixture
def pairs_file(tmp_path):
    rows = []
    for i in range(60):
        rows.append({
            "prompt": f"问题 {i % 20}" if i % 2 else f"question {i % 20}",
            "system": "Be brief." if i % 4 == 0 else None,
            "chosen": f"good {i}", "rejected": f"bad {i}", "source": f"src{i % 3}.jsonl",
        })
    path = tmp_path / "pairs.parquet"
    make_pairs(rows).write_parquet(path)
    return path


def test_layout_and_split_by_prompt(pairs_file, tmp_path):
    out = tmp_path / "export"
    summary = export(pairs_file, out, Config(test_size=0.25, seed=1))
    assert summary["splits"]["train"] + summary["splits"]["test"] == 60
    assert 12 <= summary["splits"]["test"] <= 18  # whole prompts, about a quarter of the pairs
    for rel in ["hf/dataset_dict.json", "trl/train.parquet", "trl/test.jsonl", "llamafactory/train.jsonl",
                "llamafactory/dataset_info.json", "README.md", "manifest.json"]:
        assert (out / rel).is_file(), rel
    train = pl.read_parquet(out / "trl" / "train.parquet")
    test = pl.read_parquet(out / "trl" / "test.parquet")
    assert not set(train["prompt_id"]) & set(test["prompt_id"])
    row = train.filter(pl.col("prompt").list.len() == 2).row(0, named=True)
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert row["prompt"][1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and len(row["chosen"]) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["outputs"]) >= {"trl/train.parquet", "README.md", "hf/train/state.json"}
    assert manifest["splits"] == summary["splits"]


def test_loaders_accept_it(pairs_file, tmp_path):
    import datasets

    out = tmp_path / "export"
    export(pairs_file, out, Config(test_size=0.2))
    dd = datasets.load_from_disk(str(out / "hf"))
    assert set(dd) == {"train", "test"}
    assert dd["train"][0]["chosen"][0]["role"] == "assistant"
    pq = datasets.load_dataset("parquet", data_files={s: str(out / "trl" / f"{s}.parquet") for s in ("train", "test")},
                               cache_dir=str(tmp_path / "cache"))
    assert pq["train"].num_rows == dd["train"].num_rows
    js = datasets.load_dataset("json", data_files=str(out / "llamafactory" / "train.jsonl"),
                               cache_dir=str(tmp_path / "cache"))["train"]
    assert js[0]["chosen"]["from"] == "gpt" and js[0]["conversations"][0]["from"] == "human"
    info = json.loads((out / "llamafactory" / "dataset_info.json").read_text())
    assert info["curate-orpo_train"]["ranking"] is True


def test_byte_identical_twice(pairs_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    export(pairs_file, a, Config(test_size=0.2, seed=3))
    export(pairs_file, b, Config(test_size=0.2, seed=3))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_other_seed_other_split(pairs_file, tmp_path):
    export(pairs_file, tmp_path / "a", Config(test_size=0.3, seed=1))
    export(pairs_file, tmp_path / "b", Config(test_size=0.3, seed=2))
    ids = lambda d: set(pl.read_parquet(tmp_path / d / "trl" / "test.parquet")["prompt_id"])  # noqa: E731
    assert ids("a") != ids("b")


def test_reviewed_pairs_preferred_and_recorded(pairs_file, tmp_path):
    run = tmp_path / "run"
    (run / "review").mkdir(parents=True)
    pl.read_parquet(pairs_file).write_parquet(run / "pairs.parquet")
    pl.read_parquet(pairs_file).head(10).write_parquet(run / "review" / "pairs.parquet")
    (run / "review" / "stats.json").write_text(json.dumps({"dataset": "demo", "reviewed": 10}))
    summary = export(run, run / "export", Config(test_size=0))
    assert summary["splits"] == {"train": 10, "test": 0}
    assert json.loads((run / "export" / "manifest.json").read_text())["review"]["dataset"] == "demo"
    assert "Human review" in (run / "export" / "README.md").read_text()


def test_bad_source(tmp_path):
    with pytest.raises(InputError, match="not a run folder"):
        export(tmp_path, tmp_path / "out")
