"""Benchmark (issue 12, point 7): the embedded review server at 100k records, SQLite and PostgreSQL side by side.

    .venv/bin/python bench/bench_review_scale.py                       # 100k records, both backends
    .venv/bin/python bench/bench_review_scale.py --records 20000 --backends sqlite --repeat 10

Targets (2 cores): p95 ≤ 100 ms for text search, metadata filters and the next record; similarity ≤ 200 ms warm
and ≤ 1 s on the first call after a restart; push ≥ 150 records/s with vectors.

What it does, per backend, on a fresh server (PostgreSQL: a fresh database next to --pg-url's, `curate_bench` or --bench-db):
1. **push**: `curate review push` (the library call) of --push pairs *with vectors*. Their prompt vectors are
   embedded first into an embedding cache, as the default pipeline's semantic dedup leaves them (push reads
   that cache by default), and that embedding is timed apart; push's rate is pairs / push time. Server CPU
   seconds beside wall time.
2. **grow** to --records inside the database (copies of the pushed records with a distinct prompt suffix, their
   vectors, and one in 20 answered by ann1): logging 100k records through argilla takes ~15 minutes and the
   engine reads only the database. The text index is filled by its own triggers during the copy.
3. **queries**, as the annotator, end to end over HTTP (POST /api/v1/me/datasets/{id}/records/search, limit 10,
   with responses and suggestions, what the UI sends), --repeat rounds, **interleaved**: each round runs every
   query on SQLite, then on PostgreSQL. p50/p95 per query, server CPU seconds per backend.
4. **similarity after a restart**: stop, serve, then the first "Find similar" (the on-disk vector cache is
   read), then once more with the cache file removed (the vectors are parsed from the database's JSON).

Prints Markdown tables with the machine and its load average; JSON to --out. --no-grow-vectors grows the records
without their vectors (~1 GB less disk per backend at 100k; no similarity figures then); --keep keeps the work
folder (server homes, SQLite databases) and the PostgreSQL database for EXPLAIN.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.review import server
from curate.review.push import PushOptions, connect, push
from curate.schema import conform, row_ids, with_ids

TOPICS_ZH = ["量子力学", "中文写作", "机器学习", "烹饪米饭", "城市交通", "气候变化", "古代历史", "家庭理财", "围棋规则",
             "中医养生", "网络安全", "太阳能板"]
TOPICS_EN = ["rice cooking", "city traffic", "climate change", "personal finance", "ancient history", "poetry",
             "graph theory", "bird migration"]
FRAG_ZH = "首先我们需要理解基本概念然后结合实际例子进行分析最后总结要点并给出建议这样可以帮助读者更好地掌握知识"
FRAG_EN = ["first", "we", "define", "the", "terms", "then", "we", "work", "through", "an", "example", "and", "finally", "we", "summarise", "the", "main", "points"]


def make_pairs(n: int, seed: int = 0) -> pl.DataFrame:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        zh = i % 3 != 0  # a Chinese-first mix
        topic = rnd.choice(TOPICS_ZH if zh else TOPICS_EN)
        if zh:
            prompt = f"请详细解释{topic}的基本概念，并举例说明（第{i}题）。" + ("罕见词汇麒麟。" if i % 97 == 0 else "")
            body = "".join(rnd.choice(FRAG_ZH) for _ in range(rnd.randint(150, 600)))
            chosen, rejected = f"关于{topic}：{body}", "".join(rnd.choice(FRAG_ZH) for _ in range(rnd.randint(30, 120)))
        else:
            prompt = f"Explain {topic} simply, with an example (item {i})." + (" rare word quetzal" if i % 97 == 0 else "")
            chosen = f"About {topic}: " + " ".join(rnd.choice(FRAG_EN) for _ in range(rnd.randint(80, 300)))
            rejected = " ".join(rnd.choice(FRAG_EN) for _ in range(rnd.randint(10, 60)))
        rows.append({"source": "bench.jsonl", "source_row": i, "system": "你是一个乐于助人的助手。" if i % 5 == 0 else None,
                     "prompt": [{"role": "user", "content": prompt}], "chosen": chosen, "rejected": rejected,
                     "chosen_score": None, "rejected_score": None, "meta": "{}", "lang": "zh" if zh else "en",
                     "dup_cluster_size": 1 + i % 3})
    df = pl.DataFrame(rows).with_columns(pl.Series("row_id", row_ids(f"bench-{seed}", list(range(n)))))
    return conform(with_ids(df)).collect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_procs(home: Path) -> list[psutil.Process]:
    pids = json.loads((home / "pids.json").read_text())
    out = []
    for key in ("server", "worker", "redis"):
        p = psutil.Process(pids[key])
        out += [p, *p.children(recursive=True)]
    return out


def cpu_s(home: Path) -> float:
    total = 0.0
    for p in server_procs(home):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mb(home: Path) -> int:
    return round(sum(p.memory_info().rss for p in server_procs(home)) / 2**20)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def fresh_pg(url: str, name: str = "curate_bench") -> str:
    if not name.isidentifier():
        raise SystemExit(f"--bench-db {name!r}: letters, digits and underscores only")
    parts = urlparse(url)
    bench = urlunparse(parts._replace(path=f"/{name}"))
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)
    return bench


GROW_SQLITE = """
INSERT INTO records (id, fields, metadata, external_id, dataset_id, status, inserted_at, updated_at)
SELECT lower(hex(randomblob(16))), json_set(fields, '$.prompt', json_extract(fields, '$.prompt') || ' (copy ' || :k || ')'),
       metadata, external_id || '-' || :k, dataset_id, 'pending',
       strftime('%Y-%m-%d %H:%M:%S', inserted_at, '+' || :k || ' seconds') || substr(inserted_at, 20), updated_at
FROM records WHERE dataset_id = :ds AND external_id NOT LIKE '%-%' ORDER BY inserted_at LIMIT :n;
INSERT INTO vectors (id, value, record_id, vector_settings_id, inserted_at, updated_at)
SELECT lower(hex(randomblob(16))), v.value, c.id, v.vector_settings_id, v.inserted_at, v.updated_at
FROM records c JOIN records o ON o.dataset_id = c.dataset_id AND c.external_id = o.external_id || '-' || :k
JOIN vectors v ON v.record_id = o.id
WHERE c.dataset_id = :ds AND c.external_id LIKE '%-' || :k;
"""

GROW_PG = """
INSERT INTO records (id, fields, metadata, external_id, dataset_id, status, inserted_at, updated_at)
SELECT gen_random_uuid(), jsonb_set(fields::jsonb, '{prompt}', to_jsonb((fields->>'prompt') || ' (copy ' || %(k)s || ')'))::json,
       metadata, external_id || '-' || %(k)s, dataset_id, 'pending', inserted_at + make_interval(secs => CAST(%(k)s AS int)), updated_at
FROM records WHERE dataset_id = %(ds)s AND external_id NOT LIKE '%%-%%' ORDER BY inserted_at LIMIT %(n)s;
INSERT INTO vectors (id, value, record_id, vector_settings_id, inserted_at, updated_at)
SELECT gen_random_uuid(), v.value, c.id, v.vector_settings_id, v.inserted_at, v.updated_at
FROM records c JOIN records o ON o.dataset_id = c.dataset_id AND c.external_id = o.external_id || '-' || %(k)s
JOIN vectors v ON v.record_id = o.id
WHERE c.dataset_id = %(ds)s AND c.external_id LIKE '%%-' || %(k)s;
"""


def grow(backend: str, home: Path, db_url: str | None, dataset_id: str, seed_n: int, target: int, user_id: str,
         vectors: bool = True) -> None:
    """Copy the pushed records (and vectors) up to `target`, then answer 1 in 20 as ann1, in the argilla venv."""
    script = r"""
import json, sys
backend, db, ds, seed_n, target, user = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sql = json.loads(sys.argv[7])
if backend == "sqlite":
    import sqlite3
    con = sqlite3.connect(db, timeout=120)
    ds = ds.replace("-", "")
    have = con.execute("SELECT count(*) FROM records WHERE dataset_id = ?", (ds,)).fetchone()[0]
    k = 0
    while have < target:
        k += 1
        n = min(seed_n, target - have)
        for stmt in [s for s in sql.split(";") if s.strip()]:
            con.execute(stmt, {"k": str(k), "ds": ds, "n": n})
        con.commit(); have += n
    con.execute("INSERT INTO responses (id, \"values\", status, record_id, user_id, inserted_at, updated_at) "
                "SELECT lower(hex(randomblob(16))), '{\"better\": {\"value\": \"a\"}}', 'submitted', id, ?, inserted_at, inserted_at "
                "FROM records WHERE dataset_id = ? AND abs(random()) % 20 = 0", (user.replace("-", ""), ds))
    con.commit(); con.execute("ANALYZE"); con.commit()
else:
    import psycopg2
    con = psycopg2.connect(db); cur = con.cursor()
    cur.execute("SELECT count(*) FROM records WHERE dataset_id = %s", (ds,)); have = cur.fetchone()[0]
    k = 0
    while have < target:
        k += 1
        n = min(seed_n, target - have)
        for stmt in [s for s in sql.split(";") if s.strip()]:
            cur.execute(stmt, {"k": str(k), "ds": ds, "n": n})
        con.commit(); have += n
    cur.execute("INSERT INTO responses (id, \"values\", status, record_id, user_id, inserted_at, updated_at) "
                "SELECT gen_random_uuid(), '{\"better\": {\"value\": \"a\"}}', 'submitted', id, %s, inserted_at, inserted_at "
                "FROM records WHERE dataset_id = %s AND random() < 0.05", (user, ds))
    con.commit(); con.autocommit = True; cur.execute("VACUUM ANALYZE")
"""
    db = str(home / "argilla.db") if backend == "sqlite" else db_url
    sql = GROW_SQLITE if backend == "sqlite" else GROW_PG
    if not vectors:  # the records only (~1 GB less per backend at 100k: a vector is ~10 KB of JSON)
        sql = sql.split(";")[0] + ";"
    subprocess.run([str(server.argilla_venv() / "bin" / "python"), "-c", script, backend, db, dataset_id, str(seed_n),
                    str(target), user_id, json.dumps(sql)], check=True, timeout=7200)


class Backend:
    def __init__(self, name: str, pg_url: str | None, work: Path, bench_db: str = "curate_bench"):
        self.name = name
        self.home = work / f"home-{name}"
        self.db_url = fresh_pg(pg_url, bench_db) if name == "postgresql" else None
        self.port = free_port()
        self.result: dict = {"backend": name}

    def start(self):
        t = time.perf_counter()
        self.info = server.start(self.home, port=self.port, database_url=self.db_url, annotators=["ann1"])
        self.ann = httpx.Client(base_url=self.info.api_url, timeout=300,
                                headers={"X-Argilla-Api-Key": self.info.annotators[0].api_key})
        self.owner = httpx.Client(base_url=self.info.api_url, timeout=300,
                                  headers={"X-Argilla-Api-Key": self.info.owner.api_key})
        return time.perf_counter() - t

    def stop(self):
        server.stop(self.home)


def push_phase(b: Backend, pairs: pl.DataFrame, work: Path) -> None:
    from curate.embed import Embedder
    from curate.review import settings as S

    run = work / f"run-{b.name}"
    run.mkdir()
    pairs.write_parquet(run / "pairs.parquet")
    cache = work / "embed-cache"
    t = time.perf_counter()  # what the pipeline's semantic dedup does before review (same text, same cache)
    Embedder(cache_dir=str(cache)).embed(S.embed_texts(pairs["prompt"].to_list()))  # dedup's model and texts
    embed_s = time.perf_counter() - t
    conn = connect(home=b.home)
    cpu0, t = cpu_s(b.home), time.perf_counter()
    res = push(run, conn, PushOptions(dataset="bench", vectors=True, embed_cache=str(cache)))
    wall = time.perf_counter() - t
    assert res.vectors and res.sent == pairs.height
    b.dataset_id = str(conn.client.datasets(name="bench", workspace=b.info.workspace).id)
    b.result["push"] = {"pairs": pairs.height, "seconds": round(wall, 2), "records_per_s": round(pairs.height / wall, 1),
                        "server_cpu_s": round(cpu_s(b.home) - cpu0, 2), "timings": res.timings,
                        "embedding_s_before_push (dedup's work, cached)": round(embed_s, 1)}


def queries(b: Backend, n: int, vectors: bool = True) -> dict:
    items = b.owner.get(f"/api/v1/datasets/{b.dataset_id}/records", params={"limit": 50}).json()["items"]
    ref = items[7]["id"]

    def terms(scope, *values):
        return {"type": "terms", "scope": scope, "values": list(values)}

    pending = terms({"entity": "response", "property": "status"}, "pending")

    def search(body=None, offset=0):
        return lambda: b.ann.post(f"/api/v1/me/datasets/{b.dataset_id}/records/search",
                                  params=[("include", "responses"), ("include", "suggestions"), ("offset", offset),
                                          ("limit", 10)], json=body or {})

    lang = terms({"entity": "metadata", "metadata_property": "language"}, "zh")
    return {
        "next record (pending queue, first page)": search({"filters": {"and": [pending]}}),
        "next record (pending queue, page N/2)": search({"filters": {"and": [pending]}}, offset=n // 2),
        "filter language=zh + pending": search({"filters": {"and": [pending, lang]}}),
        "filter prompt length range": search({"filters": {"and": [
            {"type": "range", "scope": {"entity": "metadata", "metadata_property": "prompt_chars"}, "ge": 40, "le": 45}]}}),
        "filter submitted by me": search({"filters": {"and": [terms({"entity": "response", "property": "status"},
                                                                   "submitted")]}}),
        "text zh common, 4 chars (机器学习)": search({"query": {"text": {"q": "机器学习"}}}),
        "text zh common, 2 chars (量子)": search({"query": {"text": {"q": "量子"}}}),
        "text zh rare, 2 chars (麒麟)": search({"query": {"text": {"q": "麒麟"}}}),
        "text zh, 2 terms (基本 例子)": search({"query": {"text": {"q": "基本 例子"}}}),
        "text en rare (quetzal)": search({"query": {"text": {"q": "quetzal"}}}),
        "text en common, one field (example)": search({"query": {"text": {"q": "example", "field": "prompt"}}}),
        "text en common, whole record (example)": search({"query": {"text": {"q": "example"}}}),
        "text zh + en, 2 terms (基本概念 example)": search({"query": {"text": {"q": "基本概念 example"}}}),
        "text + filter (量子, pending)": search({"query": {"text": {"q": "量子"}}, "filters": {"and": [pending]}}),
        **({"similarity by record (warm)": search({"query": {"vector": {"name": "prompt_embedding", "record_id": ref}}})}
           if vectors else {}),
    }, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--push", type=int, default=2000, help="pairs pushed (with vectors) before growing")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("CURATE_TEST_PG_URL", ""))
    ap.add_argument("--bench-db", default="curate_bench",
                    help="name of the PostgreSQL database made fresh next to --pg-url's (dropped first)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "review_scale.json"))
    ap.add_argument("--no-grow-vectors", action="store_true",
                    help="grow the records without copying their vectors (for a small disk): no similarity figures")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work folder (server homes, SQLite databases) for EXPLAIN; printed at the end")
    args = ap.parse_args()
    names = args.backends.split(",")
    if "postgresql" in names and not args.pg_url:
        raise SystemExit("--pg-url (or CURATE_TEST_PG_URL) is needed for postgresql")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    machine = {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
               "platform": platform.platform(), "python": platform.python_version()}
    out = {"machine": machine, "load_avg_1m_start": round(os.getloadavg()[0], 1), "backends": {}}
    backends = [Backend(n, args.pg_url, work, args.bench_db) for n in names]
    pairs = make_pairs(args.push)
    try:
        for b in backends:
            b.result["start_s"] = round(b.start(), 1)
            push_phase(b, pairs, work)
            uid = b.ann.get("/api/v1/me").json()["id"]
            t = time.perf_counter()
            grow(b.name, b.home, b.db_url, b.dataset_id, args.push, args.records, uid, not args.no_grow_vectors)
            b.result["grow_s"] = round(time.perf_counter() - t, 1)
            total = b.owner.post(f"/api/v1/me/datasets/{b.dataset_id}/records/search", params={"limit": 1},
                                 json={}).json()["total"]
            assert total == args.records, (b.name, total)
            b.stop()  # restart: a fresh process on the grown database (and the text index checked at start)
            b.start()
            b.queries, b.ref = queries(b, args.records, not args.no_grow_vectors)
            b.lat = {q: [] for q in b.queries}
        # warm-up: one call of each (the similarity cache is built here if the background refresh hasn't yet)
        for b in backends:
            for q, fn in b.queries.items():
                t = time.perf_counter()
                r = fn()
                assert r.status_code == 200, (b.name, q, r.text[:200])
                b.result.setdefault("first_call_ms", {})[q] = round((time.perf_counter() - t) * 1000, 1)
            b.cpu0 = cpu_s(b.home)
        t_q = time.perf_counter()
        for _ in range(args.repeat):  # interleaved: every query on each backend in turn
            for b in backends:
                for q, fn in b.queries.items():
                    t = time.perf_counter()
                    r = fn()
                    b.lat[q].append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, (b.name, q, r.text[:200])
        out["query_phase_s"] = round(time.perf_counter() - t_q, 1)
        out["load_avg_1m_after_queries"] = round(os.getloadavg()[0], 1)
        for b in backends:
            b.result["query_server_cpu_s"] = round(cpu_s(b.home) - b.cpu0, 1)
            b.result["rss_mb"] = rss_mb(b.home)
            b.result["latency_ms"] = {q: {"p50": round(statistics.median(v), 1), "p95": round(pct(v, 0.95), 1),
                                          "hits": b.queries[q]().json()["total"]} for q, v in b.lat.items()}
        # the first "Find similar" after a restart: from the on-disk cache, then with it removed
        sim = {"query": {"vector": {"name": "prompt_embedding", "record_id": None}}}
        for b in backends if not args.no_grow_vectors else []:
            for label, drop_cache in (("first call after restart (vector cache on disk)", False),
                                      ("first call after restart, cache file removed (parse JSON)", True)):
                b.stop()
                if drop_cache:
                    shutil.rmtree(b.home / "argilla" / "curate-vectors", ignore_errors=True)
                b.start()
                sim["query"]["vector"]["record_id"] = b.ref
                t = time.perf_counter()
                r = b.ann.post(f"/api/v1/me/datasets/{b.dataset_id}/records/search", params={"limit": 10}, json=sim)
                assert r.status_code == 200, r.text[:200]
                b.result.setdefault("similarity_after_restart_ms", {})[label] = round((time.perf_counter() - t) * 1000)
        out["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    finally:
        for b in backends:
            try:
                b.stop()
            except Exception as exc:  # noqa: BLE001 - report what was measured anyway
                print(f"could not stop {b.name}: {exc}", file=sys.stderr)
            out["backends"][b.name] = b.result
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1))
    if args.keep:
        print(f"work folder kept: {work} (PostgreSQL database: {args.bench_db})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {machine}; load average (1 min) {out['load_avg_1m_start']} at start, "
          f"{out.get('load_avg_1m_after_queries')} after the queries, {out.get('load_avg_1m_end')} at the end")
    print(f"{args.records} records; {args.repeat} interleaved rounds\n")
    print("| query | " + " | ".join(f"{b.name} p50 / p95 ms (hits)" for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    for q in backends[0].result.get("latency_ms", {}):
        cells = [f"{b.result['latency_ms'][q]['p50']} / **{b.result['latency_ms'][q]['p95']}** "
                 f"({b.result['latency_ms'][q]['hits']})" for b in backends]
        print(f"| {q} | " + " | ".join(cells) + " |")
    for b in backends:
        print(f"\n{b.name}: push {b.result.get('push')}; grow {b.result.get('grow_s')} s; "
              f"server CPU during queries {b.result.get('query_server_cpu_s')} s; RSS {b.result.get('rss_mb')} MB; "
              f"similarity after restart {b.result.get('similarity_after_restart_ms')}; "
              f"first calls {b.result.get('first_call_ms')}")


if __name__ == "__main__":
    main()
