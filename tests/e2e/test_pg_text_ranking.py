"""PostgreSQL text search ranked in fewer passes: a whole-record query of terms the field rows answer is ranked
from those rows alone (occurrences summed over the fields, the body's length from `curate_record_len`); the page
of a ranked query alone is cut from the hits before `records` is joined; the server's sessions run with
`jit = off`. What must not change: the answers — the same ids, totals, order and scores as the ranking formula
computed here from the records' own text (test_text_index_answers' cases), on a database from before the length
table (filled at start, once) and after writes that bypass this version's record trigger."""

from __future__ import annotations

import os
import subprocess

import pytest

from curate.review import server

from tests.e2e.conftest import TextSearch, drop_pg_database, free_port, new_pg_database, psql
from tests.e2e.test_text_index_answers import CASES, N, _check, _dataset, _fields

pytestmark = pytest.mark.e2e

LENGTHS_RIGHT = ("SELECT count(*) FROM curate_record_text t JOIN curate_record_len l ON l.record_id = t.record_id "
                 "WHERE l.len = length(t.body)")


def test_lengths_are_migrated_kept_and_the_answers_unchanged(tmp_path):
    url = new_pg_database("curate_test_pgrank")
    home, port = tmp_path / "home", free_port()
    try:
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        dsid = _dataset(info, "pgrank")
        # the trigger on curate_record_text wrote every record's length with its body
        assert psql(url, "SELECT count(*) FROM curate_record_len") == str(N)
        assert psql(url, LENGTHS_RIGHT) == str(N)
        for q, must, must_not in CASES:
            _check(info, dsid, q, must, must_not, ranked_like_pg=True)
        api = TextSearch(info, info.annotators[0])
        # a page past the end: no items, the total still right (the cut page has nothing to take it from)
        full, total, _ = api.search(dsid, "example")
        assert total == len(full) > 0
        assert api.search(dsid, "example", limit=5, offset=total + 5)[:2] == ([], total)
        assert api.search(dsid, "nowhere")[:2] == ([], 0)
        # an update through argilla rewrites the body, and the length follows
        import argilla as rg

        owner = rg.Argilla(api_url=info.api_url, api_key=info.owner.api_key, timeout=120)
        ds = owner.datasets(name="pgrank", workspace=info.workspace)
        ds.records.log([rg.Record(id="w05", fields=dict(_fields(5), chosen="example " * 40))])
        assert psql(url, LENGTHS_RIGHT) == str(N)
        assert api.search(dsid, "example")[0][0] == "w05"  # 40 occurrences: first
        ds.records.log([rg.Record(id="w05", fields=_fields(5))])
        assert psql(url, LENGTHS_RIGHT) == str(N)
        server.stop(home)

        # a database from before the length table: made and filled at start, the answers the same
        psql(url, "DROP TABLE curate_record_len; DROP FUNCTION curate_record_len_sync() CASCADE")
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])
        log = home / "logs" / "server.log"
        assert f"'lengths_added': {N}" in log.read_text()
        assert psql(url, LENGTHS_RIGHT) == str(N)
        assert psql(url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'curate_record_len_sync'") == "1"
        for q, must, must_not in CASES:
            _check(info, dsid, q, must, must_not, ranked_like_pg=True)
        # a body written by something else than this version's record trigger (an older curate's, a restore):
        # the length follows it; a record deleted takes its length along
        psql(url, "UPDATE curate_record_text SET body = body || 'example example' || E'\\n' "
                  "WHERE record_id = (SELECT id FROM records WHERE external_id = 'w09')")
        assert psql(url, LENGTHS_RIGHT) == str(N)
        psql(url, "UPDATE curate_record_text t SET body = curate_fields_text(r.fields) FROM records r "
                  "WHERE r.id = t.record_id AND r.external_id = 'w09'")
        server.stop(home)
        info = server.start(home, port=port, database_url=url, annotators=["ann1"])  # idempotent: nothing to fill
        assert "text index filled in" not in log.read_text()
        api = TextSearch(info, info.annotators[0])
        before = api.search(dsid, "example")[0]
        assert "w12" in before
        w12 = [i["id"] for i in TextSearch(info).http.get(f"/api/v1/datasets/{dsid}/records", params={"limit": 1000})
               .json()["items"] if i["external_id"] == "w12"][0]
        assert TextSearch(info).http.delete(f"/api/v1/records/{w12}").status_code == 200
        assert psql(url, "SELECT count(*) FROM curate_record_len") == str(N - 1)
        assert psql(url, LENGTHS_RIGHT) == str(N - 1)
        assert api.search(dsid, "example")[:2] == ([e for e in before if e != "w12"], len(before) - 1)
    finally:
        server.stop(home)
        drop_pg_database(url)


def test_the_server_sessions_run_without_jit(tmp_path):
    """The engine's connections carry `jit = off` (and the statement time limit) as connection parameters, over
    a database whose own default is `jit = on`."""
    url = new_pg_database("curate_test_pgjit")
    try:
        psql(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET jit = on")
        assert psql(url, "SHOW jit") == "on"
        code = (
            "import asyncio\n"
            "from argilla_server.database import async_engine\n"
            "from curate.review import adapter\n"
            "adapter.install(object())\n"
            "async def main():\n"
            "    async with async_engine.connect() as c:\n"
            "        row = (await c.exec_driver_sql(\"SELECT current_setting('jit'), "
            "current_setting('statement_timeout')\")).one()\n"
            "        print(*row)\n"
            "asyncio.run(main())\n"
        )
        env = {**os.environ, "ARGILLA_DATABASE_URL": "postgresql+asyncpg://" + url.split("://", 1)[1],
               "PYTHONPATH": str(server.REPO_ROOT)}
        out = subprocess.run([str(server.argilla_venv() / "bin" / "python"), "-c", code], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["off", "5s"], out.stdout
    finally:
        drop_pg_database(url)
