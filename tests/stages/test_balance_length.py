"""balance's length_balance option: evens out how often chosen is the longer reply, per language."""

from __future__ import annotations

import polars as pl
import pytest

from curate.config import build
from curate.errors import ConfigError
from curate.stages import balance
from tests.conftest import make_pairs


def pairs(spec: dict[str, tuple[int, int]]) -> pl.DataFrame:
    """lang → (pairs whose chosen is longer, pairs whose chosen is shorter); lengths grow with the row number."""
    rows = []
    for lang, (longer, shorter) in spec.items():
        zh = lang.startswith("zh")
        word, short = ("很好的回答", "差") if zh else ("good answer ", "bad")
        for i in range(longer + shorter):
            long_text = word * (2 + i)
            chosen, rejected = (long_text, short) if i < longer else (short, long_text)
            rows.append({"prompt": f"{lang} 问题 {i}" if zh else f"{lang} question {i}", "chosen": chosen,
                         "rejected": rejected, "lang": lang, "source": f"{lang}.jsonl"})
    return make_pairs(rows)


def share_longer(df: pl.DataFrame, lang: str) -> float:
    part = df.filter(pl.col("lang").str.starts_with(lang))
    return (part["chosen"].str.len_chars() > part["rejected"].str.len_chars()).mean()


def test_length_bias_evened_out_per_language_before_the_quotas():
    df = pairs({"zh-Hans": (60, 10), "zh-Hant": (20, 10), "en": (50, 50)})
    cfg = balance.Config(target={"zh": 0.5, "en": 0.5}, length_balance=0.6, max_drop_fraction=1.0)
    res = balance.run(df, cfg).collect()
    assert res.kept.height + res.rejects.height == df.height
    length = res.rejects.filter(pl.col("reason") == balance.BALANCE_LENGTH_BIAS)
    # zh: 80 of 100 chosen-longer; dropping d longer ones: (80 - d) / (100 - d) <= 0.6 → d = 50; en: 50% already
    assert length.height == 50 and set(length["lang"].str.slice(0, 2)) == {"zh"}
    assert "chosen was the longer reply in 80.0% of 100 zh pairs" in length["detail"][0]
    assert res.stats["length_balance"]["by_lang"]["zh"]["share_chosen_longer_after"] == 0.6
    assert res.stats["length_balance"]["by_lang"]["en"]["dropped"] == 0
    # the most lopsided pairs went first: every dropped zh pair is longer-chosen by more than any kept one
    dropped_ratio = (length["chosen"].str.len_chars() / length["rejected"].str.len_chars()).min()
    kept_zh = res.kept.filter(pl.col("lang").str.starts_with("zh"))
    kept_longer = kept_zh.filter(pl.col("chosen").str.len_chars() > pl.col("rejected").str.len_chars())
    assert (kept_longer["chosen"].str.len_chars() / kept_longer["rejected"].str.len_chars()).max() <= dropped_ratio
    # the quotas then balance what is left: 50 zh and 100 en → 50 / 50
    assert share_longer(res.kept, "zh") <= 0.6 and share_longer(res.kept, "en") <= 0.6
    counts = dict(res.kept.group_by(pl.col("lang").str.slice(0, 2)).len().iter_rows())
    assert counts == {"zh": 50, "en": 50}


def test_chosen_mostly_shorter_is_evened_out_too():
    df = pairs({"en": (5, 45)})
    res = balance.run(df, balance.Config(target={"en": 1.0}, length_balance=0.6)).collect()
    assert res.rejects["reason"].unique().to_list() == [balance.BALANCE_LENGTH_BIAS]
    assert 1 - share_longer(res.kept, "en") <= 0.6
    assert "chosen was the shorter reply in 90.0%" in res.rejects["detail"][0]


def test_off_by_default_and_deterministic():
    df = pairs({"zh-Hans": (40, 10), "en": (40, 10)})
    plain = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5})).collect()
    assert plain.rejects.height == 0 and "length_balance" not in plain.stats
    cfg = balance.Config(target={"zh": 0.5, "en": 0.5}, length_balance=0.55, max_drop_fraction=1.0)
    a, b = balance.run(df, cfg).collect(), balance.run(df, cfg).collect()
    assert a.kept.equals(b.kept) and a.rejects.equals(b.rejects)
    assert a.kept.columns == plain.kept.columns  # no working column leaks out


def test_length_balance_config():
    assert build(balance.Config, {"length_balance": 0.6}, "[balance]").length_balance == 0.6
    for bad in (0.4, 1.0):
        with pytest.raises(ConfigError, match="length_balance"):
            build(balance.Config, {"length_balance": bad}, "[balance]")
