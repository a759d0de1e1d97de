"""Fixtures for the training tests: a small export folder in the exporter's layout, and a tiny Gemma2 built on it.

Everything is built in code, offline (HF_HUB_OFFLINE=1): no hub, no downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

EN = [
    ("What is the capital of France?", "The capital of France is Paris.", "France has no capital."),
    ("Name a prime number.", "Seven is a prime number.", "Nine is a prime number."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What colour is the sky on a clear day?", "It is blue.", "It is green."),
]
ZH = [
    ("中国的首都是哪里？", "中国的首都是北京。", "中国没有首都。"),
    ("一年有几个月？", "一年有十二个月。", "一年有十个月。"),
    ("水在多少度沸腾？", "在标准大气压下，水在一百摄氏度沸腾。", "水在五十度沸腾。"),
    ("请说一个颜色。", "红色。", "我不知道。"),
]


def pair_rows(n: int, system: str | None = "You are a helpful assistant.") -> list[dict]:
    """TRL conversational rows as curate's exporter writes them (system message first when present)."""
    base = EN + ZH
    rows = []
    for i in range(n):
        q, good, bad = base[i % len(base)]
        prompt = ([{"role": "system", "content": system}] if system and i % 2 == 0 else []) + [
            {"role": "user", "content": q if i < len(base) else f"{q} ({i})"}]
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
            "pair_id": hashlib.sha256(f"pair{i}".encode()).hexdigest()[:16],
            "prompt_id": hashlib.sha256(f"prompt{i}".encode()).hexdigest()[:16],
            "source": "fixture",
            "lang": "zh" if (i % len(base)) >= len(EN) else "en",
        })
    return rows


def write_export(out: Path, train_rows: list[dict], test_rows: list[dict]) -> Path:
    """An export folder in the exporter's layout: hf/ (DatasetDict train/test) + manifest.json."""
    from datasets import Dataset, DatasetDict

    out.mkdir(parents=True, exist_ok=True)
    DatasetDict({"train": Dataset.from_list(train_rows), "test": Dataset.from_list(test_rows)}).save_to_disk(
        str(out / "hf"))
    manifest = {"files": sorted(str(p.relative_to(out)) for p in (out / "hf").rglob("*") if p.is_file()),
                "rows": {"train": len(train_rows), "test": len(test_rows)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    rows = pair_rows(20)
    return write_export(tmp_path_factory.mktemp("export"), rows[:16], rows[16:])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, fixture_export) -> Path:
    from curate.train.tiny import build_tiny

    return build_tiny(fixture_export, tmp_path_factory.mktemp("tiny"), vocab_size=1000, seed=0)


@pytest.fixture(scope="session")
def pipeline_export(tmp_path_factory) -> Path:
    """An export made by the real pipeline (pipelines/default.toml on the repo's data/), as `curate run` makes it."""
    from curate import config
    from curate.runner import run_pipeline

    repo = Path(__file__).resolve().parents[2]
    run_dir = tmp_path_factory.mktemp("run")
    run_pipeline(config.load(repo / "pipelines" / "default.toml"), [repo / "data"], run_dir)
    return run_dir / "export"


@pytest.fixture(scope="session")
def pipeline_tiny_model(tmp_path_factory, pipeline_export) -> Path:
    from curate.train.tiny import build_tiny

    return build_tiny(pipeline_export, tmp_path_factory.mktemp("tiny-pipeline"), vocab_size=1000, seed=0)


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine run ~100x faster on one torch thread; restore the setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
