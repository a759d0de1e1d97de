from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from curate.config import load
from curate.errors import InputError
from curate.export import NO_LICENCE, Config, export
from tests.conftest import REPO, make_pairs

DATASETS4_VENV = Path(os.environ.get("CURATE_DATASETS4_VENV", REPO / ".venv-datasets4"))


@pytest.fixture
def pairs_file(tmp_path):
    rows = []
    for i in range(60):
        rows.append({
            "prompt": f"问题 {i % 20}" if i % 2 else f"question {i % 20}",
            "system": "Be brief." if i % 4 == 0 else None,
            "chosen": f"good {i}" if i % 5 else f"好的回答 {i}", "rejected": f"bad {i}", "source": f"src{i % 3}.jsonl",
            "lang": "zh-Hans" if i % 2 else "en",
        })
    rows[7]["prompt"] = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                         {"role": "user", "content": "讲个笑话"}]
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


PLAIN_FEATURES = {
    "prompt": "List({'role': Value('string'), 'content': Value('string')})",
    "chosen": "List({'role': Value('string'), 'content': Value('string')})",
    "rejected": "List({'role': Value('string'), 'content': Value('string')})",
    **{c: "Value('string')" for c in ("pair_id", "prompt_id", "row_id", "source", "lang")},
    **{c: "Value('float64')" for c in ("chosen_score", "rejected_score")},  # kept for filtering (quality stage)
}

# What a trainer pinned to another datasets release does with the export: load it, read the features, read rows.
LOAD_SCRIPT = """
import json, sys
import datasets
dd = datasets.load_from_disk(sys.argv[1])
print(json.dumps({
    "version": datasets.__version__,
    "features": {s: {k: repr(v) for k, v in dd[s].features.items()} for s in dd},
    "rows": {s: dd[s].num_rows for s in dd},
    "first": dd["train"][0],
    "multi_turn": [r for s in dd for r in dd[s] if len(r["prompt"]) > 2][:1],
}, ensure_ascii=False))
"""


def _load_with(python: Path, hf_dir: Path) -> dict:
    out = subprocess.run([str(python), "-c", LOAD_SCRIPT, str(hf_dir)], capture_output=True, text=True,
                         env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_features_are_plain_lists_and_strings_in_datasets_5(pairs_file, tmp_path):
    export(pairs_file, tmp_path / "export", Config(test_size=0.2))
    got = _load_with(Path(sys.executable), tmp_path / "export" / "hf")
    assert got["version"].startswith("5.")
    assert got["features"]["train"] == PLAIN_FEATURES == got["features"]["test"]
    info = (tmp_path / "export" / "hf" / "train" / "dataset_info.json").read_text()
    assert "Large" not in info and "large_string" not in info


def test_export_loads_in_datasets_4(pairs_file, tmp_path):
    """datasets 4.0 raised AttributeError ('LargeList' object has no attribute 'length') on `ds.features` of an
    export built from Polars' large types; the venv comes from scripts/setup_datasets4.sh (scripts/test.sh)."""
    python = DATASETS4_VENV / "bin" / "python"
    if not python.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{python} is missing: scripts/test.sh runs scripts/setup_datasets4.sh")
        pytest.skip("no datasets 4.0 venv here: bash scripts/setup_datasets4.sh")
    export(pairs_file, tmp_path / "export", Config(test_size=0.2))
    got = _load_with(python, tmp_path / "export" / "hf")
    assert got["version"] == "4.0.0"
    assert got["features"]["train"] == PLAIN_FEATURES == got["features"]["test"]
    assert got["rows"]["train"] + got["rows"]["test"] == 60
    import datasets  # the same rows as datasets 5 reads

    dd = datasets.load_from_disk(str(tmp_path / "export" / "hf"))
    assert got["first"] == dd["train"][0]
    [multi] = got["multi_turn"]
    assert [m["content"] for m in multi["prompt"]] == ["你好", "你好！", "讲个笑话"]


def test_card_licence_is_what_the_user_stated(pairs_file, tmp_path):
    export(pairs_file, tmp_path / "a", Config())
    card = (tmp_path / "a" / "README.md").read_text()
    licence = card.split("## Licence\n\n")[1].split("\n")[0]
    assert licence == NO_LICENCE and "not stated" in licence.lower() and "export.license" in licence
    assert "Apache" not in card
    export(pairs_file, tmp_path / "b", Config(license="MIT (upstream: example/prefs)"))
    card = (tmp_path / "b" / "README.md").read_text()
    assert card.split("## Licence\n\n")[1].split("\n")[0] == "MIT (upstream: example/prefs)"
    for src in ("src0.jsonl", "src1.jsonl", "src2.jsonl"):
        assert f"| `{src}` |  | 20 |" in card


def test_card_lists_every_input_file_with_its_hash(pairs_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pl.read_parquet(pairs_file).write_parquet(run / "pairs.parquet")
    files = [{"path": "src0.jsonl", "sha256": "ab" * 32}, {"path": "empty.jsonl", "sha256": "cd" * 32}]
    (run / "inputs.json").write_text(json.dumps({"inputs": ["x"], "files": files}))
    export(run, run / "export", Config())
    card = (run / "export" / "README.md").read_text()
    assert f"| `src0.jsonl` | `{'ab' * 8}…` | 20 |" in card
    assert f"| `empty.jsonl` | `{'cd' * 8}…` | 0 |" in card  # contributed nothing, still named


def test_default_pipeline_states_no_licence_or_demo_name():
    """The default pipeline runs on anyone's data: its card must not claim the demo's licence or name."""
    exp = load(REPO / "pipelines" / "default.toml").export
    assert exp.license == "" and exp.name == "curate-orpo"
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "--license" in demo and "export.name=curate-demo" in demo  # the demo states its own


def test_cli_license_reaches_the_card(pairs_file, tmp_path):
    from click.testing import CliRunner

    from curate.cli import main

    res = CliRunner().invoke(main, ["export", str(pairs_file), "--out", str(tmp_path / "e"), "--license", "CC-BY-4.0"])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "e" / "README.md").read_text()
    assert card.split("## Licence\n\n")[1].split("\n")[0] == "CC-BY-4.0"
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["export"]["license"] == "CC-BY-4.0"
