from __future__ import annotations

import json

import polars as pl
import pytest

from curate.config import build
from curate.errors import ConfigError
from curate.stages import clean
from tests.conftest import make_pairs


def run(rows, **cfg):
    return clean.run(make_pairs(rows), clean.Config(**cfg)).collect()


def test_normalises_nfc_and_trims_but_keeps_inner_whitespace():
    decomposed = "Cafe\u0301"  # e + combining acute
    r = run([{"prompt": f"  {decomposed}\r\nline two  ", "chosen": "  def f():\n    return 1  ", "system": "  "}])
    assert r.rejects.height == 0
    row = r.kept.row(0, named=True)
    assert row["prompt"][0]["content"] == "Caf\u00e9\nline two"
    assert row["chosen"] == "def f():\n    return 1"
    assert row["system"] is None  # whitespace-only system prompt becomes absent


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "   "}, clean.EMPTY_PROMPT),
        ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
                     {"role": "user", "content": "again"}]}, clean.EMPTY_PROMPT),
        ({"chosen": "  "}, clean.EMPTY_RESPONSE),
        ({"rejected": ""}, clean.EMPTY_RESPONSE),
        ({"chosen": "Same  answer", "rejected": "Same answer "}, clean.IDENTICAL_RESPONSES),
        ({"prompt": "x" * 101}, clean.PROMPT_TOO_LONG),
        ({"chosen": "y" * 51}, clean.RESPONSE_TOO_LONG),
        ({"rejected": "z"}, clean.RESPONSE_TOO_SHORT),
    ],
)
def test_each_reason(row, reason):
    r = run([row, {"prompt": "fine prompt", "chosen": "good answer", "rejected": "bad answer"}],
            max_prompt_chars=100, max_response_chars=50, min_response_chars=2)
    assert r.kept.height == 1 and r.rejects.height == 1
    rej = r.rejects.row(0, named=True)
    assert (rej["stage"], rej["reason"]) == ("clean", reason)
    assert rej["detail"]
    assert rej["pair_id"] == make_pairs([row])["pair_id"][0]


def test_token_limit_with_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    r = run([{"prompt": "a a a", "chosen": "a a", "rejected": "b"}, {"prompt": "a", "chosen": "b", "rejected": "c"}],
            tokenizer=str(path), max_tokens=4)
    assert r.reasons() == {clean.TOO_MANY_TOKENS: 1}
    assert "5 tokens" in r.rejects["detail"][0]


def test_unloadable_tokenizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer"):
        run([{}], tokenizer=str(tmp_path / "nope"), max_tokens=10)


def test_config_rejects_unknown_key_and_max_tokens_without_tokenizer():
    with pytest.raises(ConfigError, match="unknown key 'max_char'"):
        build(clean.Config, {"max_char": 3}, "[clean]")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        build(clean.Config, {"max_tokens": 3}, "[clean]")


def test_conservation_and_meta_untouched():
    rows = [{"chosen": "", "meta": {"k": 1}}, {}, {"rejected": " "}, {"prompt": "q", "chosen": "a", "rejected": "a"}]
    r = run(rows)
    assert r.kept.height + r.rejects.height == len(rows)
    assert json.loads(r.rejects.filter(pl.col("source_row") == 0)["meta"][0]) == {"k": 1}


INVISIBLE = ["\u200b\u200b", "\u200d", "\ufeff", "\u2060\u00ad", "\x01\x02", "\u3164", "\u2800", "\u200e\u202e",
             " \u3000\u200b "]


@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_only_text_counts_as_empty(text):
    """Issue 15: a reply made only of zero-width spaces reached the export."""
    good = {"prompt": "fine prompt", "chosen": "good answer", "rejected": "bad answer"}
    r = run([{**good, "chosen": text}, {**good, "rejected": text}, {**good, "prompt": text},
             {**good, "system": text}, good])
    assert r.rejects.sort("source_row")["reason"].to_list() == [clean.EMPTY_RESPONSE, clean.EMPTY_RESPONSE,
                                                               clean.EMPTY_PROMPT]
    assert "invisible" in r.rejects["detail"][0]
    assert r.kept.height == 2 and r.kept["system"].to_list() == [None, None]


def test_visible_text_with_invisible_characters_is_kept_untouched():
    zwj_emoji = "\U0001F468\u200d\U0001F469"  # a ZWJ sequence: visible, and the joiner matters
    r = run([{"prompt": "q\u200b", "chosen": zwj_emoji, "rejected": "\u200bno"}])
    assert r.rejects.height == 0
    assert r.kept["chosen"][0] == zwj_emoji and r.kept["rejected"][0] == "\u200bno"


def test_settings_out_of_range_fail_before_data_moves():
    with pytest.raises(ConfigError, match=r"max_response_chars: 0 is out of range \(must be >= 1\)"):
        build(clean.Config, {"max_response_chars": 0}, "[clean]")
    with pytest.raises(ConfigError, match="min_response_chars: -1 is out of range"):
        build(clean.Config, {"min_response_chars": -1}, "[clean]")
