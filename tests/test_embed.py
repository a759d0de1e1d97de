"""curate.embed: backends, precision choice, and the on-disk cache (re-runs and incremental runs)."""

from __future__ import annotations

import numpy as np
import pytest

from curate import embed
from curate.errors import ConfigError

TEXTS = ["How do I bake bread at home?", "Write a poem about the sea.", "今天天气怎么样？"]


def test_cache_hits_and_incremental_runs(tmp_path):
    e = embed.Embedder(precision="fp32", device="cpu", cache_dir=str(tmp_path))
    first = e.embed(TEXTS + [TEXTS[0]])  # a repeated text is embedded once
    assert (e.last.texts, e.last.unique, e.last.embedded, e.last.cache_hits) == (4, 3, 3, 0)
    assert np.array_equal(first[0], first[3])
    again = e.embed(TEXTS)
    assert (e.last.embedded, e.last.cache_hits) == (0, 3)
    assert np.array_equal(again, first[:3])
    more = e.embed(TEXTS + ["Explain quantum entanglement simply.", "Name three primary colours."])
    assert (e.last.embedded, e.last.cache_hits) == (2, 3)
    # A fresh Embedder (a new run) sees the same cache; shards are append-only files.
    e2 = embed.Embedder(precision="fp32", device="cpu", cache_dir=str(tmp_path))
    assert np.array_equal(e2.embed(TEXTS[::-1]), more[:3][::-1])
    assert e2.last.embedded == 0
    model_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(list(model_dir.glob("shard-*.keys.npy"))) == 2
    assert not list(model_dir.glob(".*tmp"))


def test_vectors_are_normalised_and_match_bare_sentence_transformers():
    e = embed.Embedder(precision="fp32", device="cpu")
    ours = e.embed(TEXTS)
    bare = embed.load_model(embed.DEFAULT_MODEL, "cpu", "fp32").encode(TEXTS, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.allclose(ours, bare, atol=1e-5)


def test_bf16_is_close_to_fp32_and_cached_separately(tmp_path):
    fp32 = embed.Embedder(precision="fp32", device="cpu", cache_dir=str(tmp_path))
    bf16 = embed.Embedder(precision="bf16", device="cpu", cache_dir=str(tmp_path))
    a, b = fp32.embed(TEXTS), bf16.embed(TEXTS)
    assert bf16.last.embedded == 3  # different precision → different cache key
    assert fp32.model_key() != bf16.model_key()
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.995


def test_precision_and_device_resolution(monkeypatch):
    assert embed.resolve_precision("fp32", "cpu") == "fp32"
    assert embed.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: False)
    assert embed.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: True)
    assert embed.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        embed.resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_proc():
    flags = open("/proc/cpuinfo", encoding="utf-8").read()
    assert embed.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_english_only_flag_and_bad_model_path(tmp_path):
    assert embed.Embedder(device="cpu").english_only
    with pytest.raises(ConfigError, match="can't load embedding model"):
        embed.Embedder(model=str(tmp_path / "no-such-model"), device="cpu").embed(["x"])


def test_quiet_without_progress(capfd):
    embed.Embedder(precision="fp32", device="cpu").embed(TEXTS * 100)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
