"""Fixtures for the training tests: a small export folder in the exporter's layout, and a tiny Gemma2 built on it.

Everything is built in code, offline (HF_HUB_OFFLINE=1): no hub, no downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from train_helpers import pair_rows, write_export


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    rows = pair_rows(24)
    # test split: two English and two Chinese pairs (rows 16, 18: en; 20, 22: zh), for per-language evaluation
    return write_export(tmp_path_factory.mktemp("export"), rows[:16], rows[16::2])


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
