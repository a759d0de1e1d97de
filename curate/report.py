"""The run report: `report.json` for machines, `report.html` for people.

Charts are small inline SVGs written here rather than with a plotting library: the page must be one
self-contained, offline file, and a few bars/histograms don't justify shipping a JS charting bundle. Stage
modules may add a section with `html_section(stats) -> str`, built from the helpers below.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D"]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g}" if abs(v) < 1 else f"{v:,.1f}"
    return f"{int(v):,}"


def bar_chart(counts: dict[str, float], title: str, unit: str = "") -> str:
    """Horizontal bars, one per key, in the given order."""
    if not counts:
        return f"<figure><figcaption>{esc(title)}</figcaption><p class=muted>nothing to show</p></figure>"
    width, label_w, row_h = 640, 200, 22
    top = max(counts.values()) or 1
    suffix = f" {unit.strip()}" if unit.strip() else ""  # "3 rows", never "3rows"
    rows = []
    for i, (key, value) in enumerate(counts.items()):
        w = max(1.0, (width - label_w - 90) * value / top) if value else 0
        y = i * row_h
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(key)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{PALETTE[i % len(PALETTE)]}">'
            f"<title>{esc(key)}: {_fmt(value)}{esc(suffix)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{_fmt(value)}{esc(suffix)}</text>'
        )
    h = row_h * len(counts)
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg viewBox="0 0 {width} {h}" width="{width}" height="{h}" '
        f'class="chart">{"".join(rows)}</svg></figure>'
    )


def stacked_bars(rows: dict[str, dict[str, float]], title: str) -> str:
    """One 100%-stacked bar per row (e.g. language mix per source), with a legend."""
    if not rows:
        return f"<figure><figcaption>{esc(title)}</figcaption><p class=muted>nothing to show</p></figure>"
    keys: list[str] = []
    for parts in rows.values():
        keys += [k for k in parts if k not in keys]
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}
    width, label_w, row_h = 640, 200, 22
    out = []
    for i, (name, parts) in enumerate(rows.items()):
        total = sum(parts.values()) or 1
        x, y = float(label_w), i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(name)}</text>')
        for k in keys:
            v = parts.get(k, 0)
            if not v:
                continue
            w = (width - label_w - 10) * v / total
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour[k]}">'
                f"<title>{esc(name)} · {esc(k)}: {_fmt(v)} ({100 * v / total:.1f}%)</title></rect>"
            )
            x += w
    h = row_h * len(rows)
    legend = " ".join(f'<span class="key" style="background:{colour[k]}"></span>{esc(k)}' for k in keys)
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg viewBox="0 0 {width} {h}" width="{width}" height="{h}" '
        f'class="chart">{"".join(out)}</svg><div class="legend">{legend}</div></figure>'
    )


def histogram_counts(values: Iterable[float], bins: int) -> tuple[list[float], list[int]]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return [], []
    lo, hi = min(vals), max(vals)
    if hi == lo:
        hi = lo + 1
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    return [lo + i * step for i in range(bins + 1)], counts


def histogram(
    values: Iterable[float] | None = None,
    bins: int = 30,
    title: str = "",
    marker: float | None = None,
    *,
    edges: list[float] | None = None,
    counts: list[int] | None = None,
) -> str:
    """A histogram from raw values, or from precomputed `edges` (len bins+1) and `counts`; `marker` draws a line
    (e.g. a threshold)."""
    if edges is None or counts is None:
        edges, counts = histogram_counts(values or [], bins)
    if not counts:
        return f"<figure><figcaption>{esc(title)}</figcaption><p class=muted>nothing to show</p></figure>"
    width, height, pad = 640, 160, 30
    top = max(counts) or 1
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1
    bw = (width - 2 * pad) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        bars.append(
            f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" '
            f'fill="{PALETTE[0]}"><title>{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {c:,}</title></rect>'
        )
    axis = (
        f'<text x="{pad}" y="{height - 8}">{_fmt(lo)}</text>'
        f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">{_fmt(hi)}</text>'
        f'<text x="{pad}" y="{pad - 8}">max bin {top:,}</text>'
    )
    mark = ""
    if marker is not None:
        mx = pad + (width - 2 * pad) * (marker - lo) / span
        mx = min(max(mx, pad), width - pad)
        mark = (
            f'<line x1="{mx:.1f}" y1="{pad - 4}" x2="{mx:.1f}" y2="{height - pad}" stroke="{PALETTE[3]}" '
            f'stroke-width="2" stroke-dasharray="4 3"/><text x="{mx + 4:.1f}" y="{pad + 6}" fill="{PALETTE[3]}">'
            f"{_fmt(marker)}</text>"
        )
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" class="chart">{"".join(bars)}{axis}{mark}</svg></figure>'
    )


def table(rows: list[dict], title: str = "") -> str:
    if not rows:
        return f"<p class=muted>{esc(title)}: none</p>" if title else ""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(_cell(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows
    )
    cap = f"<caption>{esc(title)}</caption>" if title else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return _fmt(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else str(v)


# Fonts: Chinese in a page whose language is English falls back to whatever the browser picks, often a Japanese
# face (or boxes where no CJK font is named); the stack names the common Simplified, then Traditional, faces of
# macOS, Windows and Linux after the Latin ones.
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",
"PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei",
"Noto Sans CJK TC","PingFang TC","Microsoft JhengHei",sans-serif;margin:2rem auto;max-width:980px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f5f5f5}caption{text-align:left;font-weight:600;padding:.2rem 0}figure{margin:.8rem 0}
figcaption{font-weight:600;margin-bottom:.3rem}.chart text{font-size:11px;fill:#333}.muted{color:#888}
.legend{font-size:12px}.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.ok{color:#2a7a2a}.warn{color:#b35900}.fail{color:#fff;background:#b3261e;padding:.6rem .8rem;border-radius:4px}
td.text{max-width:22rem;white-space:pre-wrap;word-break:break-word;font-size:12px}
"""


def page(title: str, sections: list[str]) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def write_json(path: Path, data: Any) -> None:
    from curate.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


EXAMPLES_PER_REASON = 3
_EXAMPLE_CHARS = 300


def _clip(text: Any, n: int = _EXAMPLE_CHARS) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def reject_examples(run_dir: Path, steps: list[dict[str, Any]], n: int = EXAMPLES_PER_REASON) -> dict[str, Any]:
    """The first `n` rejected rows of every reason of every step (file order, so deterministic), texts clipped.

    Only the `reason` column is read in full; each example row is then read alone (a Parquet slice reads one row
    group), so a run with millions of rejects costs a column scan, not a read of every text."""
    import polars as pl

    out: dict[str, Any] = {}
    for step in steps:
        rel = step.get("rejects_path")
        path = Path(run_dir) / rel if rel else None
        if path is None or not path.is_file():
            continue
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
        if "reason" not in names:
            continue
        first = (
            lf.select("reason").with_row_index("__i")
            .filter(pl.int_range(pl.len()).over("reason") < n)
            .sort("reason", "__i").collect()
        )
        if first.height == 0:
            continue
        wanted = [c for c in ("row_id", "source", "source_row", "prompt", "chosen", "rejected", "lang", "detail")
                  if c in names]
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for reason, i in first.select("reason", "__i").iter_rows():
            row = lf.slice(int(i), 1).select(wanted).collect().row(0, named=True)
            prompt = row.get("prompt")
            if isinstance(prompt, list):
                users = [m.get("content") for m in prompt if m and m.get("role") == "user"]
                row["prompt"] = users[-1] if users else (prompt[-1].get("content") if prompt and prompt[-1] else None)
            by_reason.setdefault(str(reason), []).append(
                {k: (_clip(v) if k in ("prompt", "chosen", "rejected", "detail") else v) for k, v in row.items()}
            )
        out[str(step["stage"])] = by_reason
    return out


def examples_html(examples: dict[str, list[dict[str, Any]]]) -> str:
    """One small table per reason: where the row came from, its texts (clipped) and the detail."""
    parts = []
    for reason, rows in examples.items():
        head = "".join(f"<th>{h}</th>" for h in ("row", "prompt (last user turn)", "chosen", "rejected", "detail"))
        body = []
        for r in rows:
            src = str(r.get("source") or "")
            where = (f"<span title=\"{esc(src)}\">{esc(src.replace(chr(92), '/').rsplit('/', 1)[-1])}</span>:"
                     f"{esc(r.get('source_row', ''))}")
            lang = f"<br><span class=muted>lang {esc(r['lang'])}</span>" if r.get("lang") else ""
            cells = "".join(f"<td class=text>{esc(r.get(k) or '')}</td>" for k in ("prompt", "chosen", "rejected"))
            body.append(f"<tr><td class=text>{where}{lang}</td>{cells}"
                        f"<td class=text>{esc(r.get('detail') or '')}</td></tr>")
        parts.append(
            f"<table class=examples><caption>{esc(reason)}: first {len(rows)} row{'s' if len(rows) != 1 else ''}"
            f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
    return "".join(parts)


def failed_report(run: dict[str, Any]) -> str:
    """report.html for a run that stopped: the error, the step it stopped in, and what finished before it."""
    name = run.get("pipeline", {}).get("name", "run")
    steps = run.get("steps", [])
    done = ", ".join(s["stage"] for s in steps) or "nothing"
    error = (f"<p class=fail><b>This run failed</b> in step <code>{esc(run.get('failed_step'))}</code>: "
             f"{esc(run.get('error'))}</p>")
    finished = (f"<p>Finished before it: {esc(done)}. Pipeline <code>{esc(run.get('pipeline_file') or name)}</code>, "
                f"curate {esc(run.get('curate_version'))}. Files of an earlier run may still be in this folder; "
                f"pairs.parquet and export/ are only current after a run that succeeds.</p>")
    sections = [error, finished]
    if steps:
        sections += ["<h2>Finished steps</h2>", table(run.get("funnel", []))]
        sections += _step_sections(run)
    return page(f"curate run report — {name} (failed)", sections)


def _step_sections(run: dict[str, Any]) -> list[str]:
    from curate.stages import STAGES, stage_module

    sections = []
    examples = run.get("examples", {})
    for step in run["steps"]:
        stage = step["stage"]
        sections.append(f"<h2>Stage: {esc(stage)}</h2>")
        sections.append(table([{"rows in": step["rows_in"], "kept": step["kept"], "rejected": step["rejected"]}]))
        for warning in (step.get("stats") or {}).get("warnings", []) or []:
            sections.append(f"<p class=warn>⚠ {esc(warning)}</p>")
        if step["rejects_by_reason"]:
            sections.append(table([{"reason": k, "rows": v} for k, v in step["rejects_by_reason"].items()]))
        if examples.get(stage):
            sections.append(examples_html(examples[stage]))
        section = getattr(stage_module(stage), "html_section", None) if stage in STAGES else None
        if section is not None:
            try:
                sections.append(section(step["stats"]))
            except Exception as exc:  # noqa: BLE001 - a broken chart must not lose the whole report
                sections.append(f"<p class=warn>section failed to render: {esc(exc)}</p>")
    return sections


def render(run: dict[str, Any]) -> str:
    """report.html: funnel, rejects by reason, per-source table, length histograms, then each step's section (ingest
    included) with the first rows of every reject reason. A failed run (`status` = "failed") gets `failed_report`."""
    if run.get("status") == "failed":
        return failed_report(run)
    name = run.get("pipeline", {}).get("name", "run")
    ok = run["input_rows"] + run.get("copied_rows", 0) == run["kept_rows"] + run["rejected_rows"]
    summary = (
        f"<p>{run['input_rows']:,} rows in → <b>{run['kept_rows']:,} pairs kept</b>, {run['rejected_rows']:,} "
        f"rejected. <span class={'ok' if ok else 'warn'}>Rows in = kept + rejected: {'yes' if ok else 'NO'}"
        f"</span>. Pipeline <code>{esc(run.get('pipeline_file') or name)}</code>, seed "
        f"{esc(run.get('pipeline', {}).get('seed'))}, curate {esc(run.get('curate_version'))}.</p>"
    )
    sections = [summary, "<h2>Funnel</h2>"]
    sections.append(bar_chart({f"{s['stage']} (in)": s["rows_in"] for s in run["funnel"][:1]}
                              | {f"after {s['stage']}": s["kept"] for s in run["funnel"]}, "Rows through the stages"))
    sections.append(table(run["funnel"]))
    sections.append("<h2>Rejects by reason</h2>")
    sections.append(bar_chart(run["rejects_by_reason"], "Rejected rows per reason code"))
    sections.append("<h2>Sources</h2>" + table(run["sources"]))
    if run.get("not_read"):  # folder entries that were not read: listed, never silent
        sections.append(f"<h2>Not read</h2><p class=warn>⚠ {len(run['not_read']):,} entries in the input folders "
                        f"were not read (<code>--strict-inputs</code> makes this an error):</p>"
                        + table(run["not_read"]))
    sections.append("<h2>Lengths (characters, kept pairs)</h2>")
    for col, st in run.get("lengths", {}).items():
        if st:
            pct = ", ".join(f"{k} {v:,}" for k, v in st.items() if k.startswith("p"))
            sections.append(
                histogram(title=f"{col}: {pct}", edges=st["histogram"]["edges"], counts=st["histogram"]["counts"])
            )
    sections += _step_sections(run)
    if "export" in run:
        exp = run["export"]
        sections.append("<h2>Export</h2>" + table([{"split": k, "pairs": v} for k, v in exp.get("splits", {}).items()]))
        sections.append(f"<p>Written to <code>{esc(exp.get('path'))}</code>.</p>")
    return page(f"curate run report — {name}", sections)
