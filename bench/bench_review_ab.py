"""A/B of the review server's query latency: two checkouts' code on the same kept benchmark databases.

    .venv/bin/python bench/bench_review_scale.py --records 30000 --push 1000 --keep --bench-db curate_bench_a
    .venv/bin/python bench/bench_review_ab.py --work /tmp/bench-scale-XXXX --bench-db curate_bench_a \
        --a /path/to/checkout-of-main --b . --rounds 4 --repeat 5 --only "next record|language"

Per round and backend, each side in turn (which side goes first alternates by round, A B / B A): the server is
started from that checkout's code on the kept home (SQLite: its argilla.db; PostgreSQL: the kept database; the
code's own start-time migrations run, so a side table B made is still there when A runs, unused by A), every
query is called once to warm up, then --repeat times, timed; then the server stops. Reports p50 / p95 ms per
query and side, the server's CPU seconds per side, and the load average. The same HTTP requests as
bench_review_scale.py (its `queries`), as the annotator. Each checkout's server runs from its own `.venv-argilla`
(a link to this one's will do; or set CURATE_ARGILLA_VENV); this script's Python imports the checkout's curate first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse, urlunparse

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_review_scale import cpu_s, free_port, pct, queries  # noqa: E402

from curate.review import server  # noqa: E402


def start(checkout: Path, home: Path, port: int, db_url: str | None) -> None:
    """Start the embedded server from `checkout`'s code (its curate package first on the path)."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from curate.review import server; "
            "assert server.__file__.startswith(sys.argv[1]), server.__file__; "
            "server.start(Path(sys.argv[2]), port=int(sys.argv[3]), database_url=sys.argv[4] or None, "
            "annotators=['ann1'])")
    subprocess.run([sys.executable, "-c", code, str(checkout.resolve()), str(home), str(port), db_url or ""],
                   check=True, cwd=checkout, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a work folder kept by bench_review_scale.py --keep")
    ap.add_argument("--a", required=True, help="checkout A (e.g. a worktree of main)")
    ap.add_argument("--b", default=str(REPO), help="checkout B (default: this one)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("CURATE_TEST_PG_URL", ""))
    ap.add_argument("--bench-db", default="curate_bench", help="the kept PostgreSQL database's name")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="regular expression: only the queries whose name matches")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "review_ab.json"))
    args = ap.parse_args()
    work = Path(args.work)
    sides = {"A": Path(args.a), "B": Path(args.b)}
    lat: dict = {}
    cpu: dict = {}
    load = [round(os.getloadavg()[0], 1)]
    for r in range(args.rounds):
        order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
        for backend in args.backends.split(","):
            home = work / f"home-{backend}"
            db_url = None
            if backend == "postgresql":
                db_url = urlunparse(urlparse(args.pg_url)._replace(path=f"/{args.bench_db}"))
            for side in order:
                port = free_port()
                start(sides[side], home, port, db_url)
                try:
                    info = server.read_credentials(home)
                    ann = httpx.Client(base_url=info.api_url, timeout=300,
                                       headers={"X-Argilla-Api-Key": info.annotators[0].api_key})
                    owner = httpx.Client(base_url=info.api_url, timeout=300,
                                         headers={"X-Argilla-Api-Key": info.owner.api_key})
                    ds = [d for d in owner.get("/api/v1/me/datasets").json()["items"] if d["name"] == "bench"][0]
                    n = owner.post(f"/api/v1/me/datasets/{ds['id']}/records/search", params={"limit": 1},
                                   json={}).json()["total"]
                    b = SimpleNamespace(ann=ann, owner=owner, dataset_id=ds["id"])
                    qs, _ = queries(b, n, vectors=False)
                    qs = {q: fn for q, fn in qs.items() if re.search(args.only, q)}
                    for q, fn in qs.items():  # warm-up
                        assert fn().status_code == 200, q
                    c0 = cpu_s(home)
                    for _ in range(args.repeat):
                        for q, fn in qs.items():
                            t = time.perf_counter()
                            resp = fn()
                            ms = (time.perf_counter() - t) * 1000
                            assert resp.status_code == 200, (q, resp.text[:200])
                            lat.setdefault(backend, {}).setdefault(q, {}).setdefault(side, []).append(ms)
                    cpu.setdefault(backend, {}).setdefault(side, 0.0)
                    cpu[backend][side] += cpu_s(home) - c0
                    for q, fn in qs.items():
                        lat[backend][q].setdefault("hits " + side, fn().json()["total"])
                finally:
                    server.stop(home)
        load.append(round(os.getloadavg()[0], 1))
    out = {"load_avg_1m_per_round": load, "rounds": args.rounds, "repeat": args.repeat, "cpu_s": cpu, "latency_ms": {}}
    print(f"load average (1 min) at the start and after each round: {load}; {args.rounds} rounds x {args.repeat}")
    for backend, per_q in lat.items():
        print(f"\n{backend}: server CPU s A {cpu[backend]['A']:.1f} / B {cpu[backend]['B']:.1f}")
        print("| query | A p50 / p95 ms | B p50 / p95 ms | hits A / B |")
        print("|---|---|---|---|")
        for q, v in per_q.items():
            row = {s: {"p50": round(statistics.median(v[s]), 1), "p95": round(pct(v[s], 0.95), 1)} for s in "AB"}
            out["latency_ms"].setdefault(backend, {})[q] = {**row, "hits": [v["hits A"], v["hits B"]]}
            print(f"| {q} | {row['A']['p50']} / **{row['A']['p95']}** | {row['B']['p50']} / **{row['B']['p95']}** "
                  f"| {v['hits A']} / {v['hits B']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
