"""`curate review …`: serve/stop the embedded Argilla, push pairs, pull decisions, show progress.

Commands only parse, call the library and print; argilla/polars/rich are imported inside the commands so
`curate --help` stays instant. CurateError handling (one red line, exit 2) is done by curate.cli's Main group.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

HOME_HELP = "Embedded server folder (default $CURATE_REVIEW_HOME or ~/.curate/review)."
REMOTE_HELP = "Remote Argilla URL (HF Space, docker); also ARGILLA_API_URL. Skips the embedded server."


def _home(home: str | None) -> Path:
    from curate.review.push import default_home

    return Path(home).expanduser() if home else default_home()


def _remote_options(f):
    f = click.option("--workspace", default=None, help="Workspace (default: the server's, or 'curate').")(f)
    f = click.option("--api-key", default=None, envvar="ARGILLA_API_KEY", show_envvar=True,
                     help="API key for --api-url.")(f)
    f = click.option("--api-url", default=None, envvar="ARGILLA_API_URL", show_envvar=True, help=REMOTE_HELP)(f)
    f = click.option("--home", default=None, type=click.Path(file_okay=False), help=HOME_HELP)(f)
    return f


def _connect(home, api_url, api_key, workspace):
    from curate.review.push import connect

    if api_url:
        return connect(api_url=api_url, api_key=api_key, workspace=workspace)
    return connect(home=_home(home), workspace=workspace)


def _push_field(name: str) -> tuple:
    """(default, help) of a PushOptions field: options are documented once, on the dataclass."""
    from curate.review.push import PushOptions

    f = {f.name: f for f in dataclasses.fields(PushOptions)}[name]
    return f.default, f.metadata["help"]


def _policy_options(f):
    """The resolution policy's options, shared by push (the guidelines are written from them) and pull (which
    applies them). Help text comes from ResolvePolicy's fields; every default is None = "not given", so pull can
    tell an option given from the policy push recorded."""
    from curate.review.apply import ResolvePolicy

    helps = {fl.name: fl.metadata["help"] for fl in dataclasses.fields(ResolvePolicy)}
    d = ResolvePolicy()
    f = click.option("--no-corrections", "no_corrections", is_flag=True, default=None,
                     help="Ignore annotators' corrected replies (by default one replaces the chosen reply).")(f)
    f = click.option("--only-reviewed", "only_reviewed", is_flag=True, default=None,
                     help=helps["only_reviewed"].capitalize() + ".")(f)
    f = click.option("--min-votes", "min_votes", default=None, type=int,
                     help=helps["min_votes"].capitalize() + ".")(f)
    f = click.option("--problem-votes", "problem_votes", type=click.Choice(["any", "majority"]), default=None,
                     help=f"{helps['problem_votes'].capitalize()} [default: {d.problem_votes}].")(f)
    f = click.option("--drop-problem", "drop_problems", multiple=True, default=None,
                     help=f"{helps['drop_problems'].capitalize()} (repeatable) "
                          f"[default: {', '.join(d.drop_problems)}].")(f)
    f = click.option("--disagreement", type=click.Choice(["keep", "drop"]), default=None,
                     help=f"{helps['disagreement'].capitalize()} [default: {d.disagreement}].")(f)
    f = click.option("--tie", type=click.Choice(["keep", "drop"]), default=None,
                     help=f"{helps['tie'].capitalize()} [default: {d.tie}].")(f)
    return f


def _policy_given(tie, disagreement, drop_problems, problem_votes, min_votes, only_reviewed, no_corrections) -> dict:
    """The policy options given on the command line (validated through ResolvePolicy)."""
    from curate.config import build
    from curate.review.apply import ResolvePolicy

    given = {"tie": tie, "disagreement": disagreement, "drop_problems": list(drop_problems) if drop_problems else None,
             "problem_votes": problem_votes, "min_votes": min_votes, "only_reviewed": only_reviewed,
             "corrections": False if no_corrections else None}
    given = {k: v for k, v in given.items() if v is not None}
    policy = build(ResolvePolicy, given, "curate review")
    return {k: getattr(policy, k) for k in given}


def _dataset_or_last(run_dir: str | None, dataset: str | None) -> str:
    from curate.errors import ConfigError

    if dataset:
        return dataset
    if run_dir:
        meta = Path(run_dir) / "review" / "push.json"
        if meta.is_file():
            return json.loads(meta.read_text())["dataset"]
    raise ConfigError("--dataset is required (no earlier push recorded in RUN_DIR/review/push.json)")


@click.group()
def review() -> None:
    """Human review in Argilla: serve, push, annotate in the browser, pull."""


@review.command()
@click.option("--home", default=None, type=click.Path(file_okay=False), help=HOME_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep 127.0.0.1 unless needed).")
@click.option("--port", default=6900, show_default=True, type=int)
@click.option("--database-url", default=None, envvar="CURATE_REVIEW_DATABASE_URL", show_envvar=True,
              help="postgresql://user:pass@host/db (default: SQLite under --home). Prefer the environment variable: "
                   "a password on the command line is visible to every local user.")
@click.option("--annotators", default="", help="Annotator accounts to create, comma-separated (e.g. ann1,ann2).")
@click.option("--workspace", default="curate", show_default=True)
@click.option("--detach", is_flag=True, help="Return once the server answers; stop it with `curate review stop`.")
def serve(home, host, port, database_url, annotators, workspace, detach) -> None:
    """Start an embedded Argilla server (real argilla-server + Redis + worker, no Elasticsearch)."""
    from curate.review import server

    home_path = _home(home)
    names = [n.strip() for n in annotators.split(",") if n.strip()]
    known = _known_accounts(home_path)
    info = server.start(home_path, host=host, port=port, database_url=database_url, annotators=names,
                        workspace=workspace, detach=detach)
    click.secho(f"Argilla is up at {info.api_url}  (workspace {info.workspace!r}, home {info.home})", fg="green")
    new = [acc for acc in (info.owner, *info.annotators) if acc.username not in known]
    if new:  # passwords are shown once, when an account is created; they stay in the 0600 file
        click.echo("New accounts (shown once; kept, mode 0600, in credentials.json under the home):")
        for acc in new:
            click.echo(f"  {acc.role:<9} {acc.username:<12} password {acc.password}   api key {acc.api_key}")
    click.echo(f"Accounts: {', '.join(a.username for a in (info.owner, *info.annotators))} "
               f"(credentials in {Path(info.home) / 'credentials.json'})")
    if detach:
        click.echo(f"Stop it with: curate review stop --home {info.home}")
        return
    click.echo("Press Ctrl-C to stop.")
    server.wait(home_path)


def _known_accounts(home: Path) -> set[str]:
    try:
        data = json.loads((home / "credentials.json").read_text())
    except (OSError, ValueError):
        return set()
    return {a["username"] for a in [data.get("owner") or {}, *data.get("annotators", [])] if a.get("username")}


@review.command()
@click.option("--home", default=None, type=click.Path(file_okay=False), help=HOME_HELP)
def stop(home) -> None:
    """Stop a detached embedded server."""
    from curate.review import server

    home_path = _home(home)
    was = server.running(home_path)
    server.stop(home_path)
    click.echo(f"stopped the review server in {home_path}" if was else f"no review server was running in {home_path}")


@review.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", required=True, help="Argilla dataset name (created on first push, reused after).")
@_remote_options
@click.option("--min-submitted", default=1, show_default=True, type=int,
              help="Submitted answers each record needs (2+ gives overlap for agreement).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the blind A/B order.")
@click.option("--batch-size", default=200, show_default=True, type=int, help="Records per request (max 500).")
@click.option("--vectors/--no-vectors", default=True, show_default=True, help="Embed prompts for 'Find similar'.")
@click.option("--suggest", is_flag=True,
              help="Suggest 'better' from the source's scores. Argilla pre-selects the suggestion, which anchors "
                   "annotators on the source's label; off by default (blind review).")
@click.option("--embed-model", default=_push_field("embed_model")[0], show_default=True,
              help="The " + _push_field("embed_model")[1] + "; a hub name needs network.")
@click.option("--embed-cache", default=None,
              help="On-disk embedding cache folder; default: the run's semantic-dedup cache (its vectors are "
                   "reused); '' for none.")
@_policy_options
def push(run_dir, dataset, home, api_url, api_key, workspace, min_submitted, seed, batch_size, vectors,
         suggest, embed_model, embed_cache, tie, disagreement, drop_problems, problem_votes, min_votes,
         only_reviewed, no_corrections) -> None:
    """Push RUN_DIR/pairs.parquet for blind pairwise review. Safe to re-run: sends only new pairs.

    The policy options say how `pull` will turn answers into the dataset; the guidelines annotators read are
    written from them, and pull applies them unless told otherwise."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from curate.review.apply import ResolvePolicy
    from curate.review.push import PushOptions
    from curate.review.push import push as do_push

    policy = ResolvePolicy(**_policy_given(tie, disagreement, drop_problems, problem_votes, min_votes,
                                           only_reviewed, no_corrections))
    opts = PushOptions(dataset=dataset, min_submitted=min_submitted, seed=seed, batch_size=batch_size,
                       vectors=vectors, suggest=suggest, embed_model=embed_model, embed_cache=embed_cache,
                       policy=policy)
    opts.validate()
    conn = _connect(home, api_url, api_key, workspace)
    columns = (TextColumn("pushing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("push", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = do_push(run_dir, conn, opts, progress=on_progress)
    verb = "created" if result.created_dataset else "updated"
    click.secho(
        f"{verb} dataset {result.dataset!r} in workspace {result.workspace!r} at {result.api_url}: "
        f"{result.sent} records sent, {result.already} already there ({result.pairs} pairs"
        + (f"; {result.copies} upsampling copies follow their originals" if result.copies else "") + ")",
        fg="green",
    )
    click.echo(f"vectors: {result.vectors or 'none'}; {result.seconds:.1f} s")
    click.echo(f"Annotate at {result.api_url}, then: curate review pull {run_dir} --dataset {result.dataset}")


@review.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", default=None, help="Dataset name (default: the one last pushed from RUN_DIR).")
@_remote_options
@_policy_options
@click.option("--seed", default=None, type=int, help="Blind-order seed, if RUN_DIR/review/mapping.parquet is gone.")
def pull(run_dir, dataset, home, api_url, api_key, workspace, tie, disagreement, drop_problems, problem_votes,
         min_votes, only_reviewed, no_corrections, seed) -> None:
    """Fetch answers, resolve each pair, write RUN_DIR/review/{pairs,rejects,responses}.parquet + stats.json.

    By default the policy push recorded (the one the guidelines describe) is applied, with min-votes = the
    dataset's min-submitted; options given here change it (stats.json notes the difference)."""
    from curate.review.pull import pull as do_pull

    given = _policy_given(tie, disagreement, drop_problems, problem_votes, min_votes, only_reviewed, no_corrections)
    name = _dataset_or_last(run_dir, dataset)
    conn = _connect(home, api_url, api_key, workspace)
    result = do_pull(run_dir, conn, name, seed=seed, overrides=given)
    s = result.stats
    if s.get("policy_differs_from_guidelines"):
        click.secho(f"note: this pull's policy differs from the guidelines annotators saw in: "
                    f"{', '.join(s['policy_differs_from_guidelines'])}", fg="yellow")
    click.secho(
        f"{s['pairs_in']} pairs: {s['kept']} kept, {s['rejected']} rejected; {s['reviewed']} reviewed "
        f"({s['swapped']} swapped, {s['corrected']} corrected), {s['unreviewed']} not reviewed yet",
        fg="green",
    )
    better = s["agreement"]["better"]
    if better["items"]:
        alpha = "n/a" if better["alpha"] is None else f"{better['alpha']:.3f}"
        click.echo(f"agreement on 'better' over {better['items']} shared records: "
                   f"{better['percent']:.1%} (Krippendorff's alpha {alpha})")
    click.echo(f"wrote {result.out_dir}/pairs.parquet, rejects.parquet, responses.parquet, stats.json")


@review.command()
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", default=None, help="Dataset name (default: the one last pushed from RUN_DIR, or all).")
@_remote_options
def status(run_dir, dataset, home, api_url, api_key, workspace) -> None:
    """Progress per annotator (records completed, responses by status)."""
    from rich.console import Console
    from rich.table import Table

    from curate.review.pull import list_datasets, progress

    conn = _connect(home, api_url, api_key, workspace)
    try:
        names = [_dataset_or_last(run_dir, dataset)]
    except Exception:  # noqa: BLE001 - no dataset named: show every dataset in the workspace
        names = list_datasets(conn)
    console = Console()
    if not names:
        console.print(f"no datasets in workspace {conn.workspace!r} at {conn.api_url}")
        return
    for name in names:
        p = progress(conn, name)
        table = Table(title=f"{name}: {p.get('completed', 0)} of {p.get('total', 0)} records completed")
        for col in ("annotator", "submitted", "draft", "discarded", "on completed records"):
            table.add_column(col, justify="left" if col == "annotator" else "right")
        for user, d in sorted(p.get("users", {}).items()):
            done, pend = d.get("completed", {}), d.get("pending", {})
            total = {k: done.get(k, 0) + pend.get(k, 0) for k in ("submitted", "draft", "discarded")}
            table.add_row(user, str(total["submitted"]), str(total["draft"]), str(total["discarded"]),
                          str(sum(done.values())))
        if not p.get("users"):
            table.add_row("(no responses yet)", "0", "0", "0", "0")
        console.print(table)
