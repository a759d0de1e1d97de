"""Push throughput to a fresh embedded Argilla server (SQLite), for 1k and 10k pairs.

For each size it measures, on the same server in the same run:
- baseline: the argilla SDK's own `dataset.records.log(records)` (default batch 256) with the same records;
- `curate review push --no-vectors` (what the target "≥ 100 records/s" is about);
- a re-push of the same run (idempotency check: lists the ids on the server, sends nothing);
- `curate review push` with prompt vectors (bundled all-MiniLM-L6-v2), when --vectors is given;
and what bounds it: CPU seconds used by the argilla-server process, its rq worker and Redis vs. by this
client process during the send phase (server CPU ≈ wall time means the server is the bottleneck).

    .venv/bin/python bench/bench_review_push.py --sizes 1000 10000 --vectors 1000
Prints a Markdown table and writes JSON to --json (default: bench/out/review_push.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.review import server  # noqa: E402
from curate.review import settings as S  # noqa: E402
from curate.review.push import PushOptions, connect, push  # noqa: E402
from curate.schema import conform, row_ids, with_ids  # noqa: E402

EN = ["How do I sort a list of tuples by the second item in Python?", "Explain the difference between TCP and UDP.",
      "Write a haiku about autumn rain.", "What causes the seasons on Earth?"]
ZH = ["如何用 Python 读取一个很大的 CSV 文件？", "请解释一下什么是机器学习中的过拟合。",
      "写一首关于秋天的短诗。", "为什么天空是蓝色的？"]


def make_pairs(n: int, seed: int = 0) -> pl.DataFrame:
    rows = []
    for i in range(n):
        zh = i % 2 == 1
        base = (ZH if zh else EN)[i % 4]
        rows.append({
            "source": "bench.jsonl", "source_row": i,
            "system": ("你是一个乐于助人的助手。" if zh else "You are a helpful assistant.") if i % 3 == 0 else None,
            "prompt": [{"role": "user", "content": f"{base} (#{i}, seed {seed})"}],
            "chosen": (f"这是一个详细而准确的回答，编号 {i}。" if zh else f"A detailed, correct answer number {i}.") * 8,
            "rejected": (f"不太好的回答 {i}。" if zh else f"A weaker answer {i}.") * 5,
            "chosen_score": 8.5 if i % 4 else None, "rejected_score": 4.0 if i % 4 else None,
            "meta": "{}", "lang": "zh" if zh else "en", "dup_cluster_size": 1 + i % 3,
        })
    df = pl.DataFrame(rows).with_columns(pl.Series("row_id", row_ids(f"bench-{seed}", list(range(n)))))
    return conform(with_ids(df)).collect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpuMeter:
    """CPU seconds of the server stack (server, worker, Redis, their children) and of this process."""

    def __init__(self, home: Path):
        pids = json.loads((home / "pids.json").read_text())
        self.procs = [psutil.Process(pids[k]) for k in ("server", "worker", "redis") if pids.get(k)]
        self.me = psutil.Process()

    def _server(self) -> float:
        total = 0.0
        for p in self.procs:
            for q in [p, *p.children(recursive=True)]:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        return total

    def __enter__(self):
        self.t0, self.s0 = time.perf_counter(), self._server()
        c = self.me.cpu_times()
        self.c0 = c.user + c.system
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.server = self._server() - self.s0
        c = self.me.cpu_times()
        self.client = c.user + c.system - self.c0


def sdk_baseline(conn, pairs: pl.DataFrame, home: Path) -> dict:
    """The SDK's standard path: build rg.Records, dataset.records.log() (its default batch of 256)."""
    import argilla as rg

    name = f"baseline-{uuid.uuid4().hex[:6]}"
    ds = rg.Dataset(name=name, workspace=conn.workspace, settings=S.build_settings(conn.client, guidelines="bench baseline"),
                    client=conn.client).create()
    mapping = S.mapping_frame(pairs["pair_id"], 0)
    a = dict(zip(mapping["pair_id"], mapping["a_is_chosen"]))
    records = []
    for row in pairs.to_dicts():
        p = S.record_payload(row, a[row["pair_id"]])
        records.append(rg.Record(id=p["id"], fields=p["fields"], metadata=p["metadata"],
                                 suggestions=[rg.Suggestion(**s) for s in p["suggestions"]]))
    meter = CpuMeter(home)
    with meter:
        ds.records.log(records)
    return {"seconds": round(meter.wall, 2), "records_per_s": round(pairs.height / meter.wall, 1),
            "server_cpu_ms_per_record": round(1000 * meter.server / pairs.height, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--vectors", type=int, nargs="*", default=[1000], help="sizes to also push with vectors")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", default=str(REPO / "bench" / "out" / "review_push.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server on kill

    machine = (f"{platform.machine()}, {psutil.cpu_count()} cores, "
               f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
               f"load avg at start {os.getloadavg()[0]:.1f}")
    results = {"machine": machine, "batch_size": args.batch_size, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        home = Path(tmp) / "home"
        t = time.perf_counter()
        server.start(home, port=free_port(), annotators=("ann1",))
        results["server_start_s"] = round(time.perf_counter() - t, 2)
        try:
            conn = connect(home=home)
            for n in args.sizes:
                pairs = make_pairs(n)
                run = Path(tmp) / f"run{n}"
                run.mkdir()
                pairs.write_parquet(run / "pairs.parquet")
                row: dict = {"pairs": n}
                if not args.no_baseline:
                    row["sdk_log"] = sdk_baseline(conn, pairs, home)
                opts = PushOptions(dataset=f"push-{n}-{uuid.uuid4().hex[:6]}", vectors=False,
                                   batch_size=args.batch_size)
                meter = CpuMeter(home)
                with meter:
                    res = push(run, conn, opts)
                row["push"] = {
                    "seconds": round(res.seconds, 2), "send_s": res.timings["send"],
                    "records_per_s": round(n / res.seconds, 1),
                    "server_cpu_s": round(meter.server, 2), "client_cpu_s": round(meter.client, 2),
                    "server_cpu_share_of_wall": round(meter.server / meter.wall, 2),
                    "server_cpu_ms_per_record": round(1000 * meter.server / n, 2),
                    # what one otherwise idle core could sustain, given the server's CPU cost per record
                    "ceiling_rec_per_s_one_core": round(n / meter.server, 1) if meter.server else None,
                }
                t = time.perf_counter()
                again = push(run, conn, opts)
                row["repush_noop_s"] = round(time.perf_counter() - t, 2)
                assert again.sent == 0 and again.already == n
                if n in args.vectors:
                    vopts = PushOptions(dataset=f"vec-{n}-{uuid.uuid4().hex[:6]}", vectors=True,
                                        batch_size=args.batch_size)
                    vrun = Path(tmp) / f"vrun{n}"
                    vrun.mkdir()
                    pairs.write_parquet(vrun / "pairs.parquet")
                    vres = push(vrun, conn, vopts)
                    row["push_vectors"] = {"seconds": round(vres.seconds, 2), "embed_compute_s": vres.timings["embed_compute"],
                                           "embed_wait_s": round(vres.timings["embed_first"] + vres.timings["embed_wait"], 2),
                                           "send_s": vres.timings["send"],
                                           "records_per_s": round(n / vres.seconds, 1), "model": vres.vectors}
                if "sdk_log" in row:
                    row["push_vs_sdk"] = round(row["push"]["records_per_s"] / row["sdk_log"]["records_per_s"], 2)
                    row["server_cpu_push_vs_sdk"] = round(
                        row["push"]["server_cpu_ms_per_record"] / row["sdk_log"]["server_cpu_ms_per_record"], 2)
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            server.stop(home)

    results["load_avg_at_end"] = round(os.getloadavg()[0], 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nmachine: {machine}, load avg at end {results['load_avg_at_end']}; "
          f"embedded server start {results['server_start_s']} s; batch {args.batch_size}\n")
    print("| pairs | SDK log() rec/s (server CPU ms/rec) | curate push rec/s (no vectors) | ratio | re-push (no-op) s "
          "| server CPU / wall | server CPU ms/record (ceiling rec/s) | client CPU s "
          "| push with vectors rec/s (embed compute s / not overlapped s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["runs"]:
        v = r.get("push_vectors")
        vec = f"{v['records_per_s']} ({v['embed_compute_s']:.1f} / {v['embed_wait_s']:.1f})" if v else "-"
        sdk = r.get("sdk_log")
        sdk_txt = f"{sdk['records_per_s']} ({sdk['server_cpu_ms_per_record']})" if sdk else "-"
        print(f"| {r['pairs']} | {sdk_txt} | {r['push']['records_per_s']} "
              f"| {r.get('push_vs_sdk', '-')} | {r['repush_noop_s']} | {r['push']['server_cpu_share_of_wall']} "
              f"| {r['push']['server_cpu_ms_per_record']} ({r['push']['ceiling_rec_per_s_one_core']}) "
              f"| {r['push']['client_cpu_s']} | {vec} |")


if __name__ == "__main__":
    main()
