"""The engine's own indexes stay true to argilla's tables: the text index (FTS5 trigram / PostgreSQL side table)
follows inserts, updates and deletes through its triggers and is rebuilt at start when it lags (a database from
before it); the vector matrix follows new and deleted records incrementally and is read back from its private
file after a restart."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import uuid

import httpx
import pytest

from curate.review import server

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, info, account=None):
        account = account or info.owner
        self.http = httpx.Client(base_url=info.api_url, headers={"X-Argilla-Api-Key": account.api_key}, timeout=60)

    def search(self, ds, body) -> list[str]:
        r = self.http.post(f"/api/v1/me/datasets/{ds}/records/search", params={"limit": 50}, json=body)
        assert r.status_code == 200, r.text
        return [i["record"]["external_id"] for i in r.json()["items"]]

    def text(self, ds, q) -> list[str]:
        return sorted(self.search(ds, {"query": {"text": {"q": q}}}))

    def similar(self, ds, vector) -> list[str]:
        return self.search(ds, {"query": {"vector": {"name": "emb", "value": vector}}})


def _dataset(info, name: str):
    import argilla as rg

    owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
    settings = rg.Settings(fields=[rg.TextField(name="prompt", client=owner)],
                           questions=[rg.LabelQuestion(name="better", labels=["a", "b"], client=owner)],
                           vectors=[rg.VectorField(name="emb", dimensions=2, _client=owner)])
    ds = rg.Dataset(name=name, workspace=info.workspace, settings=settings, client=owner).create()
    return rg, ds


def _ids_by_external(api, ds) -> dict[str, str]:
    items = api.http.get(f"/api/v1/datasets/{ds}/records", params={"limit": 1000}).json()["items"]
    return {i["external_id"]: i["id"] for i in items}


def test_indexes_follow_writes_and_restarts(tmp_path):
    home, port = tmp_path / "home", _free_port()
    info = server.start(home, port=port)
    try:
        rg, ds = _dataset(info, f"maint-{uuid.uuid4().hex[:6]}")
        dsid = str(ds.id)
        ds.records.log([rg.Record(id="k1", fields={"prompt": "量子力学入门"}, vectors={"emb": [1.0, 0.0]}),
                        rg.Record(id="k2", fields={"prompt": "烹饪米饭的方法"}, vectors={"emb": [0.0, 1.0]})])
        api = Api(info)
        assert api.text(dsid, "量子") == ["k1"] and api.similar(dsid, [1.0, 0.1])[0] == "k1"
        # new records: found by text, and by similarity (the matrix is updated, not rebuilt)
        ds.records.log([rg.Record(id="k3", fields={"prompt": "量子计算"}, vectors={"emb": [0.9, 0.2]})])
        assert api.text(dsid, "量子") == ["k1", "k3"]
        assert api.similar(dsid, [0.9, 0.2])[0] == "k3"
        # an update of the text (upsert of the same id) replaces what the index holds
        ds.records.log([rg.Record(id="k2", fields={"prompt": "炒饭的做法"}, vectors={"emb": [0.0, 1.0]})])
        assert api.text(dsid, "米饭") == [] and api.text(dsid, "炒饭") == ["k2"]
        # a deleted record leaves both indexes
        ids = _ids_by_external(api, dsid)
        assert api.http.delete(f"/api/v1/records/{ids['k3']}").status_code == 200
        assert api.text(dsid, "量子") == ["k1"] and "k3" not in api.similar(dsid, [0.9, 0.2])
        cache = home / "argilla" / "curate-vectors"
        files = list(cache.glob("*.npz"))
        assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)

        # a database whose text index lags (made before it existed): rebuilt when the server starts
        server.stop(home)
        con = sqlite3.connect(home / "argilla.db")
        con.execute("INSERT INTO curate_text(curate_text) VALUES ('delete-all')")
        con.execute("DELETE FROM curate_text_ids")
        con.commit()
        con.close()
        info = server.start(home, port=port)
        api = Api(info)
        assert api.text(dsid, "量子") == ["k1"] and api.text(dsid, "炒饭") == ["k2"]
        assert "text index filled in" in (home / "logs" / "server.log").read_text()
        assert api.similar(dsid, [1.0, 0.0])[:2] == ["k1", "k2"]  # read back from the file, still current
        # deleting the dataset removes its rows from the text index (the triggers follow the cascade)
        assert api.http.delete(f"/api/v1/datasets/{dsid}").status_code == 200
        con = sqlite3.connect(home / "argilla.db")
        assert con.execute("SELECT count(*) FROM curate_text_ids WHERE dataset_id = ?", (ds.id.hex,)).fetchone() == (0,)
        con.close()
    finally:
        server.stop(home)


def test_postgresql_text_table_follows_deletes(argilla_server_pg):
    info = argilla_server_pg
    rg, ds = _dataset(info, f"maint-{uuid.uuid4().hex[:6]}")
    dsid = str(ds.id)
    ds.records.log([rg.Record(id="p1", fields={"prompt": "机器学习的过拟合"}, vectors={"emb": [1.0, 0.0]}),
                    rg.Record(id="p2", fields={"prompt": "机器学习的欠拟合"}, vectors={"emb": [0.0, 1.0]})])
    api = Api(info)
    assert api.text(dsid, "拟合") == ["p1", "p2"] and api.text(dsid, "过拟合") == ["p1"]
    ids = _ids_by_external(api, dsid)
    assert api.http.delete(f"/api/v1/records/{ids['p1']}").status_code == 200
    assert api.text(dsid, "拟合") == ["p2"]
    ds.records.log([rg.Record(id="p2", fields={"prompt": "深度学习"}, vectors={"emb": [0.0, 1.0]})])
    assert api.text(dsid, "拟合") == [] and api.text(dsid, "深度") == ["p2"]
    assert json.loads(json.dumps(api.similar(dsid, [0.1, 1.0]))) == ["p2"]
