"""Entry point that `accelerate launch` runs on every process of a multi-GPU training.

`curate train` writes the effective configuration to OUT/train_config.json first and then runs

    accelerate launch --config_file <curate/train/accelerate/*.yaml> --num_processes N \
        -m curate.train.launch OUT/train_config.json --export EXPORT_DIR --out OUT [--resume]

so every process trains from the same resolved file, and the file saved with the run is the one that was used.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from curate.train import spec as specmod


def command(spec: dict[str, Any], export_dir: str | Path, out_dir: str | Path, resume: bool = False) -> list[str]:
    """The exact `accelerate launch` argv for a multi-process preset (the config is read from OUT)."""
    config = specmod.accelerate_config_path(spec)
    if shutil.which("accelerate"):
        head = ["accelerate", "launch"]
    else:  # same launcher, when the console script isn't on PATH (e.g. a venv that isn't activated)
        head = [sys.executable, "-m", "accelerate.commands.launch"]
    argv = [
        *head,
        "--config_file", str(config),
        "--num_processes", str(spec["preset"]["num_processes"]),
        "-m", "curate.train.launch",
        str(Path(out_dir) / "train_config.json"),
        "--export", str(export_dir),
        "--out", str(out_dir),
    ]
    return argv + (["--resume"] if resume else [])


def single_command(export_dir: str | Path, out_dir: str | Path, resume: bool = False) -> list[str]:
    """The equivalent one-process command (what `curate train` runs in-process for single-GPU/CPU presets)."""
    argv = ["python", "-m", "curate.train.launch", str(Path(out_dir) / "train_config.json"),
            "--export", str(export_dir), "--out", str(out_dir)]
    return argv + (["--resume"] if resume else [])


def render(argv: list[str]) -> str:
    return shlex.join(argv)


def main(argv: list[str] | None = None) -> int:
    from curate.errors import CurateError
    from curate.train.trainer import train

    p = argparse.ArgumentParser(prog="python -m curate.train.launch")
    p.add_argument("config", help="train_config.json written by curate train")
    p.add_argument("--export", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    try:
        train(args.export, args.out, specmod.load(args.config), resume=args.resume)
    except CurateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
