"""The JSON Schemas in schemas/ and the data curate writes agree."""

from __future__ import annotations

import json

import jsonschema
import polars as pl

from curate.export import Config, export
from curate.schema import PAIR_SCHEMA, json_schema
from tests.conftest import make_pairs


def test_polars_twin_matches_json_schema():
    schema = json_schema("preference_pair")
    assert set(schema["required"]) == set(PAIR_SCHEMA.names())
    assert set(schema["properties"]) == set(PAIR_SCHEMA.names())


def test_canonical_rows_validate():
    schema = json_schema("preference_pair")
    rows = make_pairs([{"prompt": "你好", "system": "Be kind."}, {"prompt": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}])
    for row in rows.to_dicts():
        jsonschema.validate(row, schema)
    bad = rows.to_dicts()[0] | {"pair_id": "not-a-hash"}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a malformed pair_id must not validate")


def test_export_records_validate(tmp_path):
    pairs = make_pairs([{"prompt": f"q{i}", "system": "S" if i % 2 else None, "lang": "en"} for i in range(10)])
    pairs.write_parquet(tmp_path / "pairs.parquet")
    export(tmp_path / "pairs.parquet", tmp_path / "out", Config(test_size=0.3))
    schema = json_schema("export_record")
    n = 0
    for split in ("train", "test"):
        for line in (tmp_path / "out" / "trl" / f"{split}.jsonl").read_text().splitlines():
            jsonschema.validate(json.loads(line), schema)
            n += 1
        for row in pl.read_parquet(tmp_path / "out" / "trl" / f"{split}.parquet").to_dicts():
            jsonschema.validate(row, schema)
    assert n == 10


def test_review_decisions_validate():
    from curate.review.apply import ResolvePolicy, resolve_pair

    schema = json_schema("review_decision")
    answers = [
        {"user": "a", "vote": "rejected", "problems": ["truncated"], "rating": 4, "corrected": None, "updated_at": "1"},
        {"user": "b", "vote": "rejected", "problems": [], "rating": None, "corrected": "Better.", "updated_at": "2"},
    ]
    for subset in (answers, answers[:1], []):
        row = resolve_pair(subset, ResolvePolicy())
        row = {k: v for k, v in row.items() if not k.startswith("__")} | {"row_id": "0123456789abcdef"}
        jsonschema.validate(row, schema)
