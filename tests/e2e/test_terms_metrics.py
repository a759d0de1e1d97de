"""The UI's terms dropdown (GET /api/v1/metadata-properties/{id}/metrics) counts curate_terms rows: each value with
the records holding it, most first, then by value — what the records' metadata JSON gives (the statement the
engine ran before, run here on the database), for scalars, lists, nulls, missing keys, a number, an empty list
and a value too long for PostgreSQL's B-tree key (stored hashed there, read back from the record); a record
holding a value twice in a list counts once (Elasticsearch's document count; the JSON walk counted it twice);
and after a metadata update and a delete."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import pg_url, psql

pytestmark = pytest.mark.e2e

N = 40
LONG = "long " + "x" * 600


def _lang(i: int):
    return {3: None, 5: 3, 7: [3, "en"], 9: LONG, 11: [], 13: ["zh", None], 15: ["en", "zh"], 17: "missing",
            19: [LONG, "zh"]}.get(i, "zh" if i % 3 else "en")


def _meta(i: int) -> dict:
    meta: dict = {}
    if _lang(i) != "missing":
        meta["lang"] = _lang(i)
    meta["dup"] = ["a", "a", "b"] if i % 4 == 0 else "b"
    return meta


def _expected(metas: dict[str, dict], name: str) -> dict:
    counts: Counter = Counter()
    for m in metas.values():
        v = m.get(name)
        counts.update({str(x) for x in (v if isinstance(v, list) else [v]) if x is not None})
    values = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"type": "terms", "total": sum(counts.values()), "values": [{"term": t, "count": n} for t, n in values]}


def _json_count(info, dataset_id: str, name: str) -> dict:
    """The engine's former answer: every record's metadata JSON walked, each scalar or list element counted."""
    db = Path(info.home) / "argilla.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            rows = con.execute(
                f"SELECT CAST(j.value AS TEXT) AS v, count(*) AS n FROM records, json_each(records.metadata, "
                f"'$.\"{name}\"') AS j WHERE records.dataset_id = ? AND j.value IS NOT NULL GROUP BY v "
                "ORDER BY n DESC, v", (dataset_id.replace("-", ""),)).fetchall()
    else:
        out = psql(pg_url(), (
            "SELECT j.v, count(*) AS n FROM records, json_array_elements_text(CASE WHEN json_typeof(records.metadata "
            f"-> '{name}') = 'array' THEN records.metadata -> '{name}' ELSE json_build_array(records.metadata -> "
            f"'{name}') END) AS j(v) WHERE records.dataset_id = '{dataset_id}' AND j.v IS NOT NULL GROUP BY j.v "
            "ORDER BY n DESC, j.v"))
        rows = [(line.rsplit("|", 1)[0], int(line.rsplit("|", 1)[1])) for line in out.splitlines() if line]
    return {"type": "terms", "total": sum(n for _, n in rows), "values": [{"term": t, "count": n} for t, n in rows]}


def test_terms_dropdown_counts_what_the_metadata_holds(any_server):
    import argilla as rg

    info = any_server
    sdk = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt", client=sdk)],
        questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=sdk)],
        metadata=[rg.TermsMetadataProperty(name="lang", client=sdk), rg.TermsMetadataProperty(name="dup", client=sdk)],
        allow_extra_metadata=True,
    )
    ds = rg.Dataset(name=f"metrics-{uuid.uuid4().hex[:8]}", workspace=info.workspace, settings=settings,
                    client=sdk).create()
    http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": info.owner.api_key}, timeout=60)
    metas = {f"m{i:02d}": _meta(i) for i in range(N)}
    r = http.post(f"/api/v1/datasets/{ds.id}/records/bulk", json={"items": [
        {"external_id": k, "fields": {"prompt": f"prompt {k}"}, "metadata": m} for k, m in metas.items()]})
    assert r.status_code == 201, r.text
    rid = {i["external_id"]: i["id"] for i in http.get(f"/api/v1/datasets/{ds.id}/records",
                                                          params={"limit": 1000}).json()["items"]}
    props = {p["name"]: p["id"] for p in http.get(f"/api/v1/me/datasets/{ds.id}/metadata-properties").json()["items"]}

    def metrics(name: str) -> dict:
        r = http.get(f"/api/v1/metadata-properties/{props[name]}/metrics")
        assert r.status_code == 200, r.text
        return r.json()

    def check() -> None:
        got = metrics("lang")
        assert got == _expected(metas, "lang") == _json_count(info, str(ds.id), "lang")
        assert {v["term"] for v in got["values"]} >= {"zh", "en", "3", LONG}
        # a list holding "a" twice: one record, counted once (the JSON walk counts it twice)
        dup = metrics("dup")
        assert dup == _expected(metas, "dup") != _json_count(info, str(ds.id), "dup")
        assert {v["term"]: v["count"] for v in dup["values"]}["a"] == sum(1 for i in range(N) if i % 4 == 0)

    check()
    metas["m01"] = {"lang": ["fr", LONG + "y"], "dup": "c"}
    assert http.patch(f"/api/v1/records/{rid['m01']}", json={"metadata": metas["m01"]}).status_code == 200
    assert http.delete(f"/api/v1/records/{rid['m09']}").status_code == 200
    del metas["m09"]
    check()
