"""Balance stage: target mix within one row, stratification by source, drop order, policies, caps, the
max_drop_fraction error, upsampling, determinism and the report section."""

from __future__ import annotations

import json

import polars as pl
import pytest

from curate.config import build
from curate.errors import ConfigError, InputError
from curate.stages import balance


def frame(spec: dict[tuple[str, str], int], **extra_cols) -> pl.DataFrame:
    """Rows per (lang, source), with unique pair ids; extra columns given as functions of the row number."""
    rows = []
    for (lang, source), n in spec.items():
        for _ in range(n):
            i = len(rows)
            rows.append({"pair_id": f"p{i:05d}", "row_id": f"r{i:05d}", "lang": lang, "source": source,
                         **{k: f(i) for k, f in extra_cols.items()}})
    return pl.DataFrame(rows)


def mix(df: pl.DataFrame, col: str = "lang") -> dict[str, int]:
    return dict(df.group_by(col).len().iter_rows())


def groups(df: pl.DataFrame) -> dict[str, int]:
    g = df.with_columns(pl.col("lang").replace({"zh-Hans": "zh", "zh-Hant": "zh"}).alias("g"))
    return mix(g, "g")


@pytest.mark.parametrize(
    "target, zh, en",
    [({"zh": 0.5, "en": 0.5}, 900, 300), ({"zh": 0.7, "en": 0.3}, 500, 400), ({"zh": 0.3, "en": 0.7}, 500, 401),
     ({"zh": 0.65, "en": 0.35}, 333, 777)],
)
def test_achieved_mix_within_one_row_of_target(target, zh, en):
    df = frame({("zh-Hans", "a"): zh, ("en", "b"): en})
    res = balance.run(df, balance.Config(target=target, max_drop_fraction=1.0)).collect()
    got = groups(res.kept)
    total = res.kept.height
    for g, share in target.items():
        assert abs(got.get(g, 0) - share * total) <= 1.0, (got, target)
    # downsampling only: one group keeps all its rows
    assert got["zh"] == zh or got["en"] == en
    assert res.rows_in == df.height and res.stats["copies"] == 0


def test_downsampled_rows_name_their_quota():
    df = frame({("zh-Hans", "a"): 60, ("en", "b"): 40})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5})).collect()
    assert res.reasons() == {balance.BALANCE_DOWNSAMPLED: 20}
    assert set(res.rejects["lang"]) == {"zh-Hans"}
    assert set(res.rejects["detail"]) == {"quota zh: kept 40 of 60 (target 0.50); source a: kept 40 of 60 zh-Hans"}
    assert set(res.rejects["stage"]) == {"balance"}
    assert res.stats["groups"]["zh"] == {"rows": 60, "quota": 40, "target": 0.5}


def test_zh_counts_both_scripts_unless_split():
    df = frame({("zh-Hans", "a"): 30, ("zh-Hant", "a"): 30, ("en", "b"): 40})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5})).collect()
    assert groups(res.kept) == {"zh": 40, "en": 40}
    assert mix(res.kept) == {"zh-Hans": 20, "zh-Hant": 20, "en": 40}
    split = balance.Config(target={"zh-Hans": 0.25, "zh-Hant": 0.25, "en": 0.5}, max_drop_fraction=1.0)
    res = balance.run(frame({("zh-Hans", "a"): 50, ("zh-Hant", "a"): 10, ("en", "b"): 40}), split).collect()
    assert mix(res.kept) == {"zh-Hans": 10, "zh-Hant": 10, "en": 20}


def test_policies_keep_drop_count():
    df = frame({("zh-Hans", "a"): 50, ("en", "a"): 50, ("mixed", "a"): 10, ("other", "a"): 5, ("mismatch", "a"): 3})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5})).collect()
    assert mix(res.kept) == {"zh-Hans": 50, "en": 50, "mixed": 10, "other": 5}  # kept outside the quota
    assert res.reasons() == {balance.BALANCE_LANGUAGE_DROPPED: 3}  # mismatch = 'drop' by default
    assert set(res.rejects["detail"]) == {"lang mismatch dropped by [balance] mismatch = 'drop'"}
    cfg = balance.Config(target={"zh": 0.4, "en": 0.4, "mixed": 0.2}, mixed="count", other="drop", mismatch="keep",
                         max_drop_fraction=1.0)
    res = balance.run(df, cfg).collect()
    assert mix(res.kept) == {"zh-Hans": 20, "en": 20, "mixed": 10, "mismatch": 3}
    assert res.reasons() == {balance.BALANCE_LANGUAGE_DROPPED: 5, balance.BALANCE_DOWNSAMPLED: 60}


def test_group_missing_from_target_is_dropped():
    df = frame({("zh-Hans", "a"): 50, ("en", "a"): 10})
    res = balance.run(df, balance.Config(target={"zh": 1.0})).collect()
    assert mix(res.kept) == {"zh-Hans": 50}
    assert set(res.rejects["detail"]) == {"quota en: kept 0 of 10 (target 0.00); source a: kept 0 of 10 en"}


def test_stratified_by_source_within_language():
    df = frame({("zh-Hans", "big"): 600, ("zh-Hans", "small"): 200, ("zh-Hans", "tiny"): 7, ("en", "x"): 400})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, max_drop_fraction=1.0)).collect()
    zh = res.kept.filter(pl.col("lang") == "zh-Hans")
    got = mix(zh, "source")
    assert zh.height == 400
    for src, n in {"big": 600, "small": 200, "tiny": 7}.items():
        assert abs(got.get(src, 0) - 400 * n / 807) <= 1.0, got
    assert res.stats["after"]["by_source"]["big"] == {"zh-Hans": got["big"]}
    assert res.stats["before"]["by_source"]["tiny"] == {"zh-Hans": 7}


def test_large_duplicate_clusters_and_low_margins_go_first():
    df = frame(
        {("zh-Hans", "a"): 20, ("en", "a"): 10},
        dup_cluster_size=lambda i: 5 if i < 8 else 1,
        chosen_score=lambda i: float(i % 20),
        rejected_score=lambda i: 0.0,
    )
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5})).collect()
    dropped = sorted(res.rejects["pair_id"].to_list())
    # 10 zh rows go: the 8 in big clusters first, then the two lowest margins among the rest (rows 8 and 9)
    assert dropped == [f"p{i:05d}" for i in range(10)]
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, prefer_drop_duplicates=False)).collect()
    assert sorted(res.rejects["pair_id"].to_list()) == [f"p{i:05d}" for i in range(10)]  # margins 0..9
    no_pref = balance.Config(target={"zh": 0.5, "en": 0.5}, prefer_drop_duplicates=False, prefer_drop_low_margin=False)
    res = balance.run(df, no_pref).collect()
    assert sorted(res.rejects["pair_id"].to_list()) != [f"p{i:05d}" for i in range(10)]


def test_seeded_and_deterministic():
    df = frame({("zh-Hans", "a"): 300, ("zh-Hans", "b"): 100, ("en", "c"): 200})
    cfg = balance.Config(target={"zh": 0.5, "en": 0.5}, seed=7)
    a, b = balance.run(df, cfg).collect(), balance.run(df.lazy(), cfg).collect()
    assert a.kept.equals(b.kept) and a.rejects.equals(b.rejects)
    assert json.dumps(a.stats, sort_keys=True) == json.dumps(b.stats, sort_keys=True)
    c = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, seed=8)).collect()
    assert set(c.rejects["pair_id"]) != set(a.rejects["pair_id"]) and c.rejects.height == a.rejects.height
    assert a.kept["pair_id"].to_list() == sorted(a.kept["pair_id"].to_list())  # input order is kept


def test_strict_max_drop_fraction_error_says_what_is_reachable():
    df = frame({("zh-Hans", "a"): 100, ("en", "b"): 900})
    with pytest.raises(ConfigError) as err:
        balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, max_drop_fraction=0.5, strict=True))
    msg = str(err.value)
    assert "would drop 857 of 1000 pairs" in msg and "the data is en 0.90 / zh 0.10" in msg
    assert "reachable within that budget: en 0.8 / zh 0.2 " in msg and "\n" not in msg
    # the reachable mix really is reachable within the budget
    ok = balance.run(df, balance.Config(target={"zh": 0.2, "en": 0.8}, max_drop_fraction=0.5, strict=True)).collect()
    assert ok.rejects.height <= 500


def _suggested(msg: str) -> dict[str, float]:
    mix = msg.split("reachable within that budget: ")[1].split(" (")[0]
    return {k: float(v) for k, v in (part.split() for part in mix.split(" / "))}


def test_strict_suggestion_pasted_back_is_reachable():
    # the reachable zh share is 0.2468: printed as 0.25 (or 0.247) it would need more drops than the budget has
    df = frame({("zh-Hans", "a"): 1234, ("en", "b"): 8766})
    with pytest.raises(ConfigError) as err:
        balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, strict=True))
    suggested = _suggested(str(err.value))
    assert suggested == {"en": 0.7532, "zh": 0.2468}
    res = balance.run(df, balance.Config(target=suggested, strict=True)).collect()
    assert res.rejects.height <= 5000 and res.stats["target_met"]


def test_unreachable_target_keeps_the_closest_mix_within_the_budget():
    df = frame({("zh-Hans", "a"): 200, ("en", "b"): 800})
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, max_drop_fraction=0.5)).collect()
    assert groups(res.kept) == {"zh": 200, "en": 300}  # only English loses rows, exactly the budget
    assert res.reasons() == {balance.BALANCE_DOWNSAMPLED: 500}
    st = res.stats
    assert not st["target_met"] and st["needed_drops"] == 714 and st["max_drops"] == 500
    assert st["reached"] == {"en": 0.6, "zh": 0.4}
    [line] = st["warnings"]
    assert "\n" not in line and "would drop 714 of 1,000 pairs (71%, over max_drop_fraction 0.5)" in line
    assert "kept the closest mix within that: en 0.60 / zh 0.40 (500 dropped)" in line
    assert set(res.rejects["detail"]) == {
        "quota en: kept 300 of 800 (target 0.30, closest mix within max_drop_fraction 0.5); source b: kept 300 of "
        "800 en"
    }
    # a reachable target is met exactly and says nothing
    res = balance.run(df, balance.Config(target={"zh": 0.3, "en": 0.7})).collect()
    assert res.stats["target_met"] and res.stats["warnings"] == []


@pytest.mark.parametrize("lang, n", [("zh-Hans", 289), ("zh-Hant", 40), ("en", 299)])
def test_one_language_input_keeps_every_row(lang, n):
    df = frame({(lang, "only.jsonl"): n})
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3})).collect()
    assert res.kept.height == n and res.rejects.height == 0
    missing = "en" if lang != "en" else "zh"
    assert res.stats["missing"] == [missing] and not res.stats["target_met"]
    assert f"the input has no {missing} pairs" in res.stats["warnings"][0]
    with pytest.raises(ConfigError, match=f"names {missing} but the input has no such pairs"):
        balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, strict=True))


def test_a_scarce_language_is_not_balanced_around():
    # 3 English pairs in a Chinese folder (1% against a 30% target): cutting 289 Chinese pairs to 7 for them,
    # or to half of them within the budget, would buy nothing
    df = frame({("zh-Hans", "a"): 289, ("en", "a"): 3, ("mixed", "a"): 8})
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3})).collect()
    assert res.kept.height == 300 and res.rejects.height == 0
    assert res.stats["scarce"] == {"en": 0.0103}  # 3 of the 292 quota rows (mixed is kept outside the quota)
    assert "en is only 1% of the pairs (target 30%): too few to balance around, its 3 pairs are kept" in (
        res.stats["warnings"][0])
    # above scarce_below x target it is balanced around (here within the budget, so the target is met)
    df = frame({("zh-Hans", "a"): 200, ("en", "a"): 60})
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3})).collect()
    assert groups(res.kept) == {"zh": 140, "en": 60} and res.stats["target_met"]
    with pytest.raises(ConfigError, match="would drop"):
        balance.run(frame({("zh-Hans", "a"): 289, ("en", "a"): 3}), balance.Config(strict=True,
                    target={"zh": 0.7, "en": 0.3}))


def test_missing_group_renormalises_the_rest():
    df = frame({("zh-Hans", "a"): 300, ("en", "a"): 300})
    cfg = balance.Config(target={"zh": 0.5, "en": 0.25, "mixed": 0.25}, mixed="count")
    res = balance.run(df, cfg).collect()
    assert groups(res.kept) == {"zh": 300, "en": 150}  # zh 2/3, en 1/3 among the groups present
    assert res.stats["goal"] == {"en": pytest.approx(1 / 3), "zh": pytest.approx(2 / 3)}
    assert "the input has no mixed pairs; balanced en 0.33 / zh 0.67 among the rest (150 dropped)" in (
        res.stats["warnings"][0])
    assert "0.67 among the groups present" not in res.rejects["detail"][0]
    assert "(target 0.25, 0.33 among the groups present)" in res.rejects["detail"][0]


def test_closest_mix_never_takes_rows_from_a_group_under_its_share():
    df = frame({("zh-Hans", "a"): 1000, ("en", "a"): 100, ("mixed", "a"): 100})
    cfg = balance.Config(target={"zh": 0.5, "en": 0.3, "mixed": 0.2}, mixed="count")
    res = balance.run(df, cfg).collect()
    assert groups(res.kept) == {"zh": 400, "en": 100, "mixed": 100}  # 600 = the budget, all from zh
    assert res.rejects.height == 600 and set(res.rejects["lang"]) == {"zh-Hans"}


def test_unwanted_group_goes_first_and_nothing_is_dropped_for_nothing():
    # target zh only: English is dropped, but within the budget
    res = balance.run(frame({("zh-Hans", "a"): 300, ("en", "b"): 900}), balance.Config(target={"zh": 1.0})).collect()
    assert groups(res.kept) == {"zh": 300, "en": 300} and set(res.rejects["lang"]) == {"en"}
    # no Chinese at all: dropping English would not move the mix, so nothing goes
    res = balance.run(frame({("en", "b"): 900}), balance.Config(target={"zh": 1.0})).collect()
    assert res.kept.height == 900 and "nothing to balance around" in res.stats["warnings"][0]


def test_max_rows_with_an_unreachable_target():
    df = frame({("zh-Hans", "a"): 200, ("en", "b"): 800})
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, max_rows=400)).collect()
    # max_rows asks for 600 drops; within those the closest mix is zh 200 / en 200
    assert groups(res.kept) == {"zh": 200, "en": 200}
    res = balance.run(df, balance.Config(target={"zh": 0.7, "en": 0.3}, max_rows=200)).collect()
    assert groups(res.kept) == {"zh": 140, "en": 60} and res.stats["target_met"]


def test_upsampling_copies_only_groups_present():
    df = frame({("zh-Hans", "a"): 30, ("en", "b"): 10})
    cfg = balance.Config(target={"zh": 0.4, "en": 0.4, "mixed": 0.2}, mixed="count", upsample=True)
    res = balance.run(df, cfg).collect()
    assert groups(res.kept) == {"zh": 30, "en": 30} and res.stats["missing"] == ["mixed"]


def test_policy_rows_are_counted():
    df = frame({("zh-Hans", "a"): 50, ("en", "a"): 50, ("mixed", "a"): 10, ("other", "a"): 5, ("mismatch", "a"): 3})
    st = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, other="drop")).stats
    assert st["policy_rows"] == {"mixed": {"policy": "keep", "rows": 10}, "other": {"policy": "drop", "rows": 5},
                                 "mismatch": {"policy": "drop", "rows": 3}}


def test_max_rows_and_source_caps():
    df = frame({("zh-Hans", "a"): 300, ("en", "a"): 100, ("en", "b"): 300, ("mixed", "b"): 10})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, max_rows=210)).collect()
    assert res.kept.height == 210 and groups(res.kept) == {"zh": 100, "en": 100, "mixed": 10}
    cfg = balance.Config(target={"zh": 0.5, "en": 0.5}, source_caps={"b": 100}, max_drop_fraction=1.0)
    res = balance.run(df, cfg).collect()
    assert mix(res.kept.filter(pl.col("source") == "b"), "lang") == {"en": 97, "mixed": 3}
    assert res.stats["dropped"]["source_caps"] == 210 and res.stats["source_caps"] == {"b": 100}
    assert "source cap: b capped at 100 of 310 pairs" in set(res.rejects["detail"])
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, max_per_source=50, max_drop_fraction=1.0))
    res = res.collect()
    assert res.stats["dropped"]["source_caps"] == 610 and res.stats["source_caps"] == {"a": 50, "b": 50}
    assert all(n <= 50 for n in mix(res.kept, "source").values())
    with pytest.raises(ConfigError, match="max_rows 5 is below the 10 pairs kept outside"):
        balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, max_rows=5))


def test_upsampling_marks_copies_with_fresh_ids():
    df = frame({("zh-Hans", "a"): 30, ("en", "b"): 10})
    res = balance.run(df, balance.Config(target={"zh": 0.5, "en": 0.5}, upsample=True)).collect()
    assert groups(res.kept) == {"zh": 30, "en": 30} and res.rejects.height == 0
    copies = res.kept.filter(pl.col("balance_copy_of").is_not_null())
    assert copies.height == 20 == res.stats["copies"]
    assert res.kept["row_id"].n_unique() == res.kept.height
    assert set(copies["balance_copy_of"]) == set(df.filter(pl.col("lang") == "en")["row_id"])
    originals = dict(zip(df["row_id"], df["pair_id"]))
    assert all(originals[o] == p for o, p in zip(copies["balance_copy_of"], copies["pair_id"]))  # content hash kept
    assert res.kept.height == df.height - res.rejects.height + res.stats["copies"]
    assert res.stats["after"]["overall"] == {"en": 30, "zh-Hans": 30}


def test_no_balance_copy_of_without_upsampling():
    res = balance.run(frame({("zh-Hans", "a"): 3, ("en", "b"): 3}), balance.Config()).collect()
    assert res.kept["balance_copy_of"].null_count() == 6 and res.rejects.height == 0
    assert res.rejects.columns == [*res.kept.columns, "stage", "reason", "detail"]


def test_config_validation():
    with pytest.raises(ConfigError, match="sum to 1"):
        build(balance.Config, {"target": {"zh": 0.5, "en": 0.6}}, "[balance]")
    with pytest.raises(ConfigError, match="not both"):
        build(balance.Config, {"target": {"zh": 0.5, "zh-Hans": 0.5}}, "[balance]")
    with pytest.raises(ConfigError, match="mixed = 'count' needs"):
        build(balance.Config, {"mixed": "count"}, "[balance]")
    with pytest.raises(ConfigError, match="set mixed = 'count'"):
        build(balance.Config, {"target": {"zh": 0.5, "en": 0.3, "mixed": 0.2}}, "[balance]")
    with pytest.raises(ConfigError, match="scarce_below must be within"):
        build(balance.Config, {"scarce_below": 1.5}, "[balance]")
    assert build(balance.Config, {"strict": True}, "[balance]").strict
    with pytest.raises(ConfigError, match="unknown group 'fr'"):
        build(balance.Config, {"target": {"fr": 1.0}}, "[balance]")
    cfg = build(balance.Config, {"target": {"zh": 0.7, "en": 0.3}, "source_caps": {"x.jsonl": 10}}, "[balance]", 42)
    assert cfg.seed == 42 and cfg.target == {"zh": 0.7, "en": 0.3}


def test_missing_lang_column_is_an_input_error():
    with pytest.raises(InputError, match="run the language stage"):
        balance.run(pl.DataFrame({"source": ["a"], "pair_id": ["x"]}), balance.Config())


def test_html_section():
    df = frame({("zh-Hans", "a.jsonl"): 60, ("en", "b.jsonl"): 40})
    html = balance.html_section(balance.run(df, balance.Config()).stats)
    assert "<svg" in html and "before" in html and "after" in html and "a.jsonl (after)" in html


def test_source_caps_match_file_names_and_report_unmatched():
    df = frame({("zh-Hans", "/data/in/big.jsonl"): 40, ("en", "/data/in/small.jsonl"): 20})
    cfg = balance.Config(target={"zh": 0.5, "en": 0.5}, source_caps={"big.jsonl": 20, "nope.jsonl": 5})
    res = balance.run(df, cfg).collect()
    assert mix(res.kept, "source") == {"/data/in/big.jsonl": 20, "/data/in/small.jsonl": 20}
    assert res.stats["source_caps_unmatched"] == ["nope.jsonl"]
