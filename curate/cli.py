"""The `curate` command: parse options, call the library, print. No logic lives here.

Errors the library raises on purpose (CurateError) become one red line on stderr and exit code 2. Anything else
is a bug: one line too (set CURATE_DEBUG=1 for the traceback), exit code 1.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from curate import __version__

LAZY = {
    "review": "curate.review.commands:review",
    "train": "curate.train.commands:train",
    "tiny-model": "curate.train.commands:tiny_model",
    "eval": "curate.train.commands:eval_command",
}


class Main(click.Group):
    """Subcommands from other packages are imported only when used, so `curate --help` stays instant."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY:
            module, attr = LAZY[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        from curate.errors import CurateError, user_os_error

        try:
            return super().invoke(ctx)
        except CurateError as exc:
            click.secho(f"error: {one_line(str(exc))}", fg="red", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # no traceback reaches a user
            if os.environ.get("CURATE_DEBUG"):
                raise
            fixable = user_os_error(exc)  # a path, a permission, a full or read-only disk: the user's to fix
            if fixable is not None:
                click.secho(f"error: {one_line(fixable)}", fg="red", err=True)
                sys.exit(2)
            first = str(exc).splitlines()[0] if str(exc) else ""
            click.secho(f"internal error: {type(exc).__name__}: {first} (CURATE_DEBUG=1 shows the traceback)",
                        fg="red", err=True)
            sys.exit(1)


def one_line(text: str) -> str:
    """Errors are one line, whatever a file name or a library message holds."""
    return " ".join(text.split("\n")).replace("\r", " ")


def warn(text: str) -> None:
    click.secho(f"warning: {one_line(text)}", fg="yellow", err=True)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curate")
def main() -> None:
    """Turn raw preference data into clean, deduplicated, balanced, reviewed, ORPO-ready datasets."""


def parse_map(values: tuple[str, ...]) -> dict[str, str] | None:
    from curate.errors import ConfigError

    mapping: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ConfigError(f"--map {item!r}: expected FIELD=COLUMN, e.g. --map prompt=query,chosen=good")
            field, column = (s.strip() for s in item.split("=", 1))
            mapping[field] = column
    return mapping or None


STRICT_HELP = "Fail (exit 2) when an input folder holds entries that are not read, instead of listing them."
MAP_HELP = "Column names for the canonical fields, e.g. prompt=query,chosen=good,rejected=bad (repeatable)."
INPUT_HELP = ("Input file, folder or glob; one --input may name several (--input a.jsonl b/ 'c/*.parquet'), "
              "or repeat it.")
BINARIZE_HELP = ("How rows of rated responses become pairs: best-worst (default), best-random (seeded) or all-margin:M "
                 "(every pair whose scores differ by at least M).")


def spread_inputs(args: list[str]) -> list[str]:
    """`--input a b c` → `--input a --input b --input c` (a click option takes one value). The paths after one
    --input run up to the next option or `--`; a `.toml` name is never an input (`curate run --input a.jsonl
    p.toml` still finds its pipeline file)."""
    out: list[str] = []
    spreading = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a == "--input" and i + 1 < len(args):
            out += [a, args[i + 1]]
            spreading, i = True, i + 2
            continue
        if spreading and not a.startswith("-") and not a.lower().endswith(".toml"):
            out += ["--input", a]
            i += 1
            continue
        spreading = a.startswith("--input=")
        out.append(a)
        i += 1
    return out


class InputsCommand(click.Command):
    """A command that takes inputs the way `ingest` and `run` do: INPUT... arguments or `--input PATH...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_inputs(args))


def input_options(fn):
    """The input options `ingest` and `run` share: [INPUT]..., --input PATH... (repeatable), --map, --binarize."""
    fn = click.option("--binarize", default=None, metavar="STRATEGY", help=BINARIZE_HELP)(fn)
    fn = click.option("--map", "maps", multiple=True, help=MAP_HELP)(fn)
    fn = click.option("--input", "input_opts", multiple=True, metavar="PATH...", help=INPUT_HELP)(fn)
    return click.argument("input_args", nargs=-1, metavar="[INPUT]...")(fn)


def gather_inputs(args: tuple[str, ...], opts: tuple[str, ...]) -> list[str]:
    """The inputs, in the order given: as arguments or after --input (not both: their order decides row order)."""
    if args and opts:
        raise click.UsageError("give the inputs as arguments or with --input, not both")
    if not (args or opts):
        raise click.UsageError("no input: name files, folders or globs (as arguments or after --input)")
    return list(args or opts)
LICENSE_HELP = "Licence of the data for the dataset card, e.g. 'MIT' (export.license; curate can't know it)."


def _say(msg: str) -> None:
    if msg.startswith("warning: "):
        warn(msg.removeprefix("warning: "))
        return
    click.secho(f"· {msg}", fg="cyan", err=True)


@main.command(cls=InputsCommand)
@input_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--seed", default=0, show_default=True, help="Seed of --binarize best-random.")
@click.option("--strict-inputs", is_flag=True, help=STRICT_HELP)
def ingest(input_args: tuple[str, ...], input_opts: tuple[str, ...], out_dir: str, maps: tuple[str, ...],
           binarize: str | None, seed: int, strict_inputs: bool) -> None:
    """Read raw preference files (any supported format) into canonical pairs."""
    from curate.ingest import ingest as do_ingest
    from curate.ingest.readers import describe_not_read, worth_warning

    rep = do_ingest(gather_inputs(input_args, input_opts), out_dir, mapping=parse_map(maps),
                    binarize=binarize or "best-worst", seed=seed, strict_inputs=strict_inputs)
    if stray := worth_warning(rep.get("not_read", [])):
        warn(describe_not_read(stray) + " (--strict-inputs makes this an error)")
    for src, info in rep["sources"].items():
        made = (f", {info['rows_kept']:,} pairs from {info['paired_rows']:,} rows ({rep['binarize']})"
                if info["format"].startswith("rated_") else f", {info['rows_kept']:,} kept")
        click.echo(f"{src}: {info['format']}, {info['rows_in']:,} rows in{made}")
    extra = f" ({rep['extra_pairs']:,} extra pairs from rated rows)" if rep.get("extra_pairs") else ""
    click.echo(f"{rep['input_rows']:,} rows in → {rep['kept_rows']:,} pairs kept{extra}, "
               f"{rep['rejected_rows']:,} rows rejected")
    for reason, n in rep["rejects_by_reason"].items():
        click.echo(f"  {reason}: {n:,}")
    click.echo(f"wrote {out_dir}/pairs.parquet, rejects.parquet, report.json")


@main.command(cls=InputsCommand)
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@input_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--set", "overrides", multiple=True, help="Override a pipeline setting: STAGE.KEY=VALUE (repeatable).")
@click.option("--against", multiple=True, help="Reference set for decontamination (dedup.against; repeatable).")
@click.option("--no-export", is_flag=True, help="Stop before the export step.")
@click.option("--strict-inputs", is_flag=True, help=STRICT_HELP)
@click.option("--skip", "skip", multiple=True, metavar="STAGE", help="Leave a stage of the pipeline out (repeatable).")
@click.option("--license", "license_", default=None, help=LICENSE_HELP)
@click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
              help="Run on one process (local, the default) or on Ray Data (ray; curate[ray] extra). Same result.")
@click.option("--ray-address", default=None, help="With --engine ray: the cluster to join ('auto', "
              "'ray://HOST:10001'); default: start a local one on this machine.")
def run(pipeline_file: str, input_args: tuple[str, ...], input_opts: tuple[str, ...], out_dir: str,
        maps: tuple[str, ...], binarize: str | None, overrides: tuple[str, ...], against: tuple[str, ...],
        no_export: bool, strict_inputs: bool, skip: tuple[str, ...], license_: str | None, engine: str | None,
        ray_address: str | None) -> None:
    """Run a pipeline file on INPUTs: ingest, its stages, export. Writes a run folder with report.html."""
    import json
    from pathlib import Path

    from curate.config import load
    from curate.runner import run_pipeline

    inputs = gather_inputs(input_args, input_opts)
    sets = list(overrides)
    if against:
        sets.append(f"dedup.against={json.dumps(list(against))}")
    if binarize:
        sets.append(f"ingest.binarize={json.dumps(binarize)}")  # checked with the pipeline file: [ingest] binarize
    if license_ is not None:
        sets.append(f"export.license={json.dumps(license_)}")
    pipeline = load(pipeline_file, sets, skip=skip)
    if against and "dedup" not in [name for name, _ in pipeline.stages]:
        from curate.errors import ConfigError

        raise ConfigError("--against is decontamination, a dedup step: it needs the dedup stage (not skipped, "
                          "listed in [pipeline] stages)")
    try:
        rep = run_pipeline(pipeline, inputs, out_dir, mapping=parse_map(maps), progress=_say,
                           export=not no_export, strict_inputs=strict_inputs, engine=engine,
                           ray_address=ray_address)
    except Exception:  # re-raised: Main.invoke turns it into one line
        if (Path(out_dir) / "report.html").is_file():
            click.secho(f"report (failed run): {out_dir}/report.html", fg="yellow", err=True)
        raise
    for step in rep["funnel"]:
        click.echo(f"{step['stage']:>10}: {step['rows_in']:>9,} in  {step['kept']:>9,} kept  "
                   f"{step['rejected']:>9,} rejected")
    click.echo(f"{rep['input_rows']:,} rows in → {rep['kept_rows']:,} pairs kept, {rep['rejected_rows']:,} rejected")
    # A stage that adapted what was asked says so in one line each (balance: a mix not reachable; dedup: semantic
    # dedup off for a language).
    for step in rep["steps"]:
        for warning in (step.get("stats") or {}).get("warnings", []) or []:
            warn(f"{step['stage']}: {warning}")
    if "export" in rep:
        splits = ", ".join(f"{k} {v:,}" for k, v in rep["export"]["splits"].items())
        click.echo(f"export: {rep['export']['path']} ({splits})")
    click.echo(f"report: {out_dir}/report.html")


@main.command()
@click.argument("source", type=click.Path(exists=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--pipeline", "pipeline_file", type=click.Path(dir_okay=False), default=None,
              help="Take [export] settings from this pipeline file (default: the run's own, else "
                   "pipelines/default.toml).")
@click.option("--set", "overrides", multiple=True, help="Override an export setting: export.KEY=VALUE.")
@click.option("--license", "license_", default=None, help=LICENSE_HELP)
def export(source: str, out_dir: str, pipeline_file: str | None, overrides: tuple[str, ...],
           license_: str | None) -> None:
    """Write an ORPO-ready dataset folder from a run folder or a pairs Parquet file."""
    import json
    from pathlib import Path

    from curate.config import load
    from curate.errors import ConfigError
    from curate.export import export as do_export

    sets = list(overrides) + ([f"export.license={json.dumps(license_)}"] if license_ is not None else [])
    run_settings = Path(source) / "pipeline.json"
    if pipeline_file is None and run_settings.is_file():  # the run's own [export] settings, then --set
        try:
            own = json.loads(run_settings.read_text(encoding="utf-8")).get("export", {})
        except (OSError, ValueError):
            raise ConfigError(f"{run_settings}: can't be read as the run's settings; pass --pipeline") from None
        sets = [f"export.{k}={json.dumps(v, ensure_ascii=False)}" for k, v in own.items()] + sets
    pipeline = load(pipeline_file, sets)
    rep = do_export(source, out_dir, pipeline.export, pipeline=pipeline)
    click.echo(f"wrote {out_dir}: " + ", ".join(f"{k} {v:,} pairs" for k, v in rep["splits"].items()))
    if rep.get("review"):
        click.echo("used reviewed pairs (review/pairs.parquet)")


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats(path: str, as_json: bool) -> None:
    """Counts (by split, source, language, reject reason) and length percentiles of a run, stage or export folder,
    or of a pairs, rejects, TRL or LLaMA-Factory file curate wrote."""
    import json

    from curate.stats import compute

    result = compute(path)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    what = "rejected rows" if result["format"] == "rejects" else "pairs"
    console.print(f"[bold]{result['path']}[/bold] ({result['kind']}, {result['format']}): {result['pairs']:,} {what}, "
                  f"{result['prompts']:,} prompts")
    if "rejected" in result:
        console.print(f"rejected on the way: {result['rejected']:,}")
    for key in ("by_split", "by_source", "by_lang", "by_stage", "by_reason", "rejects_by_reason"):
        if key in result:
            t = Table(title=key.replace("_", " "))
            t.add_column(key.split("_")[-1])
            t.add_column("rows", justify="right")
            for k, v in result[key].items():
                t.add_row(str(k), f"{v:,}")
            console.print(t)
    t = Table(title="length (characters)")
    t.add_column("field")
    for q in ("min", "p5", "p25", "p50", "p75", "p95", "p99", "max"):
        t.add_column(q, justify="right")
    for field, st in result["lengths"].items():
        if st:
            t.add_row(field, *[f"{st[q]:,}" for q in ("min", "p5", "p25", "p50", "p75", "p95", "p99", "max")])
    console.print(t)


if __name__ == "__main__":
    main()
