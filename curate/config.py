"""Pipeline files (TOML) → typed, frozen configs, with errors that name the bad key.

A pipeline file looks like:

    [pipeline]
    name = "default"
    seed = 42
    stages = ["clean", "language", "dedup", "balance"]   # in order; export always runs last

    [clean]                 # one table per stage, named by the stage's key (never an import path)
    max_chars = 32000

    [export]
    test_size = 0.05

    [ingest]                # optional: how ingest reads inputs (curate.ingest.options)
    binarize = "best-worst"

Every table becomes the stage module's frozen `Config` dataclass; an unknown key, an unknown stage, a value of
the wrong type, not one of a `Literal`'s choices, or outside the range a field declares (`metadata={"min": 1}`,
`"max"`, `"above"` for an exclusive lower bound) is a ConfigError naming it, before any data moves. A `seed`
field in a stage's Config defaults to the pipeline seed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from curate.io import canonical_name

PIPELINE_KEYS = {"name", "seed", "stages", "description", "engine", "ray_address"}


@dataclass(frozen=True)
class Pipeline:
    name: str
    seed: int
    stages: tuple[tuple[str, Any], ...]  # (stage name, its Config instance), in order
    export: Any  # curate.export.Config
    path: str | None = None
    raw: dict = field(default_factory=dict)  # the resolved tables, as written to the run folder
    ingest: Any = None  # curate.ingest.options.Config ([ingest]; defaults when the file has none)
    # How the steps run, not what they compute (the result is the same under every engine), so it stays out of
    # `raw`, the step markers and the export: a run started locally can be resumed on Ray and the other way round.
    engine: str = field(default="local", metadata={"help": "Engine: 'local' (one process, Polars) or 'ray' "
                        "(Ray Data; needs the curate[ray] extra; docs/scaling.md)."})
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster to join with engine = 'ray' "
                                    "('auto', 'ray://host:10001'); none: start a local one."})

    def stage_config(self, name: str) -> Any:
        for n, cfg in self.stages:
            if n == name:
                return cfg
        raise KeyError(name)


def help_of(cls: type) -> dict[str, str]:
    """Field → help text, from `metadata={"help": ...}` (each option is documented once, on its dataclass)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def build(cls: type, table: dict[str, Any], where: str, seed: int | None = None) -> Any:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = dict(table)
    if seed is not None and "seed" in fields and "seed" not in values:
        values["seed"] = seed
    for key, value in values.items():
        values[key] = _check(value, hints[key], f"{where}.{key}")
        _check_range(values[key], fields[key].metadata, f"{where}.{key}")
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return obj


def _check_range(value: Any, meta: Any, where: str) -> None:
    """Ranges declared on a field: `metadata={"min": 1}`, `{"max": ...}`, `{"above": 0}` (exclusive); checked on
    numbers, and on every number of a list or table value. Part of building a config, so before data moves."""
    lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
    if lo is None and hi is None and above is None:
        return
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (above is not None and v <= above):
            bounds = " and ".join(b for b in (f">= {lo}" if lo is not None else "", f"> {above}" if above is not None
                                              else "", f"<= {hi}" if hi is not None else "") if b)
            raise ConfigError(f"{where}: {v!r} is out of range (must be {bounds})")


def _check(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in args:
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check(value, arm, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: must not be null")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_check(k, kt, where): _check(v, vt, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if math.isnan(value):  # TOML allows nan; no setting means anything by it
            raise ConfigError(f"{where}: expected a number, got nan")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a dataclass type (hints are never instances)
        return value if isinstance(value, hint) else build(hint, value, where)
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """`stage.key=value` (value in TOML syntax, bare words taken as strings) → (stage, key, value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected STAGE.KEY=VALUE, e.g. --set clean.max_chars=8000")
    lhs, rhs = text.split("=", 1)
    table, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {rhs}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs
    return table, key, value


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
         skip: list[str] | tuple[str, ...] = ()) -> Pipeline:
    """Read and check a pipeline file (None: the built-in default) before any data moves.

    `skip` leaves listed stages out (`curate run --skip STAGE`). A table for a known stage that isn't run (not
    listed, or skipped) is still checked, so a typo in it is caught before the stage is turned on, but not run.
    """
    from curate import export
    from curate.ingest import options as ingest_options
    from curate.stages import STAGES, stage_module

    if path is None:
        path = Path(__file__).resolve().parent.parent / "pipelines" / "default.toml"
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipeline file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a pipeline file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the pipeline file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: can't be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides:
        table, key, value = parse_override(item)
        target = doc.setdefault(table, {})
        *parents, leaf = key.split(".")  # dedup.near.threshold → [dedup.near] threshold
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: {table}.{part} is not a table")
        target[leaf] = value

    head = doc.get("pipeline", {})
    unknown = sorted(set(head) - PIPELINE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: [pipeline] unknown key {unknown[0]!r} (known: {', '.join(sorted(PIPELINE_KEYS))})")
    seed = head.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"{path}: [pipeline] seed must be an integer from 0 to 2**63-1, got {seed!r}")
    names = head.get("stages", ["clean"])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: [pipeline] stages must be a list of stage names")
    for name in names:
        if name not in STAGES:
            raise ConfigError(f"{path}: unknown stage {name!r} (known stages: {', '.join(STAGES)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a stage is listed twice in [pipeline] stages")
    for name in skip:
        if name not in names:
            raise ConfigError(f"--skip {name}: not a stage of {path} (its stages: {', '.join(names) or 'none'})")
    skipped = [n for n in names if n in skip]
    names = [n for n in names if n not in skip]
    tables = set(doc) - {"pipeline", "export", "ingest"}
    stray = sorted(t for t in tables if t not in STAGES)
    if stray:
        raise ConfigError(f"{path}: table [{stray[0]}] is not a known stage (known stages: {', '.join(STAGES)})")
    for name in sorted(tables - set(names)):  # checked, not run
        build(stage_module(name).Config, doc[name], f"{path}: [{name}] (not run)", seed)

    engine, ray_address = head.get("engine", "local"), head.get("ray_address")
    if engine not in ("local", "ray"):
        raise ConfigError(f"{path}: [pipeline] engine must be 'local' or 'ray', got {engine!r}")
    if ray_address is not None and not isinstance(ray_address, str):
        raise ConfigError(f"{path}: [pipeline] ray_address must be a string, got {ray_address!r}")

    stages = []
    for name in names:
        module = stage_module(name)
        stages.append((name, build(module.Config, doc.get(name, {}), f"{path}: [{name}]", seed)))
    export_cfg = build(export.Config, doc.get("export", {}), f"{path}: [export]", seed)
    ingest_cfg = build(ingest_options.Config, doc.get("ingest", {}), f"{path}: [ingest]", seed)
    raw = {"pipeline": {"name": head.get("name", path.stem), "seed": seed, "stages": names}}
    raw["ingest"] = _plain(dataclasses.asdict(ingest_cfg))
    if skipped:
        raw["pipeline"]["skipped"] = skipped
    raw.update({n: _plain(dataclasses.asdict(c)) for n, c in stages})
    raw["export"] = _plain(dataclasses.asdict(export_cfg))
    return Pipeline(head.get("name", path.stem), seed, tuple(stages), export_cfg, canonical_name(path), raw, ingest_cfg,
                    engine, ray_address)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
