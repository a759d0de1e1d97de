"""`curate train`: parse, call curate.train, print. No torch/TRL import until the command runs.

Register with `main.add_command(train)` in curate/cli.py. Errors are CurateError subclasses (TrainError), which the
`curate` group prints as one line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import click


def _print_preflight(pre) -> None:
    click.echo(click.style("pre-flight", bold=True) + f": {pre.pairs} training pairs, max_length {pre.max_length}")
    if pre.example:
        click.echo("one training example, chat template applied (prompt + chosen reply):")
        click.echo("─" * 60)
        click.echo(pre.example.rstrip("\n"))
        click.echo("─" * 60)
    click.echo(f"prompt tokens: p95 {pre.prompt_p95}, max {pre.prompt_max}")
    click.echo(f"pairs whose prompt alone fills max_length (no reply token left): {pre.prompt_overflow} "
               f"→ {pre.dropped} dropped" + (f", {pre.shortened} prompts shortened from the left"
                                             if pre.prompt_overflow_policy == "truncate_left" else "")
               + f" (curate.prompt_overflow={pre.prompt_overflow_policy})")
    click.echo(f"tokens per pair trained (prompt + longer reply): min {pre.length_min}, median {pre.length_median:g}, "
               f"p95 {pre.length_p95}, max {pre.length_max}")
    click.echo(f"pairs whose replies will be cut to fit max_length: {pre.truncated}")
    click.echo(f"training on {pre.pairs_kept} of {pre.pairs} pairs" if not pre.refusal
               else f"pairs left for training: {pre.pairs_kept} of {pre.pairs} (too few: see the error below)")
    if pre.eval is not None:
        e = pre.eval
        click.echo(f"test split: {e['pairs_kept']} of {e['pairs']} pairs evaluated ({e['dropped']} dropped: prompt "
                   "fills max_length)")
    for warning in pre.warnings:
        click.echo(click.style(f"warning: {warning}", fg="yellow"), err=True)


@click.command("train")
@click.argument("export_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model", default=None, metavar="NAME_OR_PATH",
              help="Base model (hub name or local folder); defaults to the preset's model.")
@click.option("--preset", required=True, metavar="PRESET",
              help="gemma2-9b-chinese-chat (8 GPUs, full), gemma2-9b-lora (1 GPU, LoRA), tiny-cpu, or a .toml path.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: model or adapter, metrics, plot, model card, effective config.")
@click.option("--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE",
              help="Override a preset value, e.g. --set orpo.beta=0.1 --set curate.method=lora (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the pre-flight checks and the launch command; train nothing.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints.")
def train(export_dir: Path, model: str | None, preset: str, out_dir: Path, overrides: tuple[str, ...],
          dry_run: bool, resume: bool) -> None:
    """ORPO fine-tune on a curate export (EXPORT_DIR, e.g. RUN_DIR/export) with TRL."""
    import subprocess

    from curate.train import TrainError, launch
    from curate.train import spec as specmod
    from curate.train.preflight import manifest_sha256

    spec = specmod.resolve(preset, overrides, model)
    manifest_sha256(export_dir)  # fail early on something that isn't an export
    if not dry_run and not resume and (out_dir / "train_config.json").exists():
        raise TrainError(f"{out_dir} already holds a training run; use another --out, or --resume to continue it")
    multi = spec["preset"]["num_processes"] > 1
    argv = launch.command(spec, export_dir, out_dir, resume) if multi else \
        launch.single_command(export_dir, out_dir, resume)

    from curate.train.trainer import run_preflight

    click.echo(f"preset {spec['preset']['name']}: {spec['preset']['description']}")
    click.echo(f"model {spec['preset']['model']} · method {spec['curate']['method']} · "
               f"loss {spec['curate']['loss']} · "
               f"{spec['preset']['num_processes']} process(es)")
    try:
        pre = run_preflight(export_dir, spec)
    except TrainError as exc:
        if not dry_run:
            raise
        click.echo(click.style(f"warning: pre-flight skipped: {exc}", fg="yellow"), err=True)
        from curate.train.preflight import dependency_warnings

        for warning in dependency_warnings(spec):
            click.echo(click.style(f"warning: {warning}", fg="yellow"), err=True)
        pre = None
    if pre is not None:
        _print_preflight(pre)
    click.echo(("launch: " if multi else "equivalent command: ") + launch.render(argv))
    if pre is not None and pre.refusal:
        if not dry_run:
            raise TrainError(pre.refusal)
        click.echo(click.style(f"warning: training would be refused: {pre.refusal}", fg="yellow"), err=True)
    if dry_run:
        return

    out_dir.mkdir(parents=True, exist_ok=True)
    specmod.save(spec, out_dir / "train_config.json")
    if pre is not None:
        import json

        from curate.io import atomic_write_text

        atomic_write_text(out_dir / "preflight.json", json.dumps(pre.as_dict(), indent=2, ensure_ascii=False) + "\n")
    if multi:
        code = subprocess.run(argv, check=False).returncode
        if code != 0:
            raise TrainError(f"accelerate launch exited with code {code} (see its output above)")
        click.echo(f"done: {out_dir}")
        return

    from curate.train.guard import NonFiniteError, fmt
    from curate.train.trainer import train as run_training

    try:
        result = run_training(export_dir, out_dir, spec, resume=resume, pre=pre)
    except NonFiniteError as exc:
        raise TrainError(f"{exc} (per-step metrics up to it: {out_dir / 'metrics.json'})") from None
    final = result.metrics.get("summary", {}).get("final", {})
    shown = ", ".join(f"{k} {fmt(final[k])}" for k in ("loss", "nll_loss", "reward_accuracy") if k in final)
    click.echo(f"trained {result.global_step} steps ({shown}); {result.model_dir.name} in {result.model_dir}")
    evaluation = result.metrics.get("evaluation")
    if evaluation:
        for when, error in (evaluation.get("errors") or {}).items():
            click.echo(click.style(f"warning: evaluation {when} training failed: {error}", fg="yellow"), err=True)
        if evaluation.get("before") or evaluation.get("after"):
            _print_evaluation(evaluation)
    click.echo(f"metrics: {out_dir / 'metrics.json'}, plot: {out_dir / 'metrics.png'}, card: {out_dir / 'README.md'}")


def _print_evaluation(evaluation: dict) -> None:
    from curate.train.evaluate import table

    click.echo(click.style(f"evaluation on the {evaluation['split']} split", bold=True)
               + f" ({evaluation['pairs_kept']} pairs):")
    for line in table(evaluation):
        click.echo(line)


@click.command("tiny-model")
@click.argument("export_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--vocab-size", default=1000, show_default=True, help="BPE vocabulary trained on the export's text.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
def tiny_model(export_dir: Path, out_dir: Path, vocab_size: int, seed: int) -> None:
    """Build a tiny random Gemma2 + tokenizer for EXPORT_DIR in OUT_DIR, to try `curate train` on a CPU."""
    from curate.train.tiny import build_tiny

    path = build_tiny(export_dir, out_dir, vocab_size=vocab_size, seed=seed)
    click.echo(f"tiny model in {path}: curate train {export_dir} --model {path} --preset tiny-cpu --out RUN")


@click.command("eval")
@click.argument("export_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model", required=True, metavar="PATH_OR_NAME",
              help="Model to evaluate: a curate run's model/ or adapter/ (its train_config.json is used), or any "
                   "model with --preset.")
@click.option("--preset", default=None, metavar="PRESET",
              help="max_length, beta, dtype … for a model outside a curate run (e.g. tiny-cpu, gemma2-9b-lora).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Write eval.json and generations.jsonl here (default: print only).")
@click.option("--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE",
              help="Override a configuration value, e.g. --set curate.eval_generations=5 (repeatable).")
def eval_command(export_dir: Path, model: str, preset: str | None, out_dir: Path | None,
                 overrides: tuple[str, ...]) -> None:
    """ORPO loss, reward accuracy and margin per language on EXPORT_DIR's test split, and a few answers."""
    from curate.train.evaluate import evaluate_model, resolve_eval_spec, table
    from curate.train.preflight import manifest_sha256

    spec = resolve_eval_spec(model, preset, overrides)
    manifest_sha256(export_dir)
    result = evaluate_model(export_dir, spec, out_dir)
    click.echo(click.style(f"{result['model']} on {result['split']}", bold=True)
               + f": {result['pairs_kept']} of {result['pairs']} pairs evaluated"
               + (f" ({result['dropped']} dropped: prompt fills max_length={result['max_length']})"
                  if result["dropped"] else ""))
    for line in table({"after": result["metrics"]}):
        click.echo(line)
    for g in result["generations"][:2]:
        click.echo(f"[{g['lang']}] {g['answer'][:200]!r}")
    if out_dir is not None:
        click.echo(f"wrote {out_dir / 'eval.json'}, {out_dir / 'generations.jsonl'}")
