"""Runs a sweep's variants one after another, each in its own MODEL_DIR, skipping finished ones.

Each variant is an ordinary ``flantune train`` run (a subprocess, so gin and JAX start clean)
of the base gin files plus the variant's bindings, with ``MODEL_DIR = SWEEP_DIR/<variant>``.
Evaluation is part of the run (configure eval during training in the base gin); the report
reads what the runs wrote. A variant counts as finished when its run exited cleanly and
``sweep_variant.json`` records it; an interrupted variant resumes from its own checkpoint.
The same variants can be launched separately on a cluster with ``--only NAME``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flantune.sweep.grid import Axis, SweepError, Variant, variants

VARIANT_FILE = "sweep_variant.json"
SWEEP_FILE = "sweep.json"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    sweep_dir: str
    gin_files: tuple[str, ...]
    axes: tuple[Axis, ...]
    bindings: tuple[str, ...] = ()  # extra gin bindings "NAME = VALUE" for every variant
    gin_search_paths: tuple[str, ...] = ()
    module_imports: tuple[str, ...] = ()


def train_command(config: SweepConfig, variant: Variant) -> list[str]:
    """The ``flantune train`` command line of one variant."""
    model_dir = os.path.join(config.sweep_dir, variant.name)
    command = [sys.executable, "-m", "flantune.cli", "train"]
    command += [f"--gin_file={f}" for f in config.gin_files]
    command += [f"--gin_search_path={p}" for p in config.gin_search_paths]
    command += [f"--module_import={m}" for m in config.module_imports]
    for binding in config.bindings:
        name, _, value = binding.partition("=")
        command.append(f"--gin.{name.strip()}={value.strip()}")
    command += variant.gin_bindings()
    command += [f"--gin.MODEL_DIR={model_dir!r}"]
    return command


def variant_record(model_dir: str | os.PathLike) -> dict | None:
    path = Path(model_dir) / VARIANT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise SweepError(f"{path} is damaged ({err}); delete it to rerun the variant.") from None


def is_finished(config: SweepConfig, variant: Variant) -> bool:
    record = variant_record(Path(config.sweep_dir) / variant.name)
    if record is None or record.get("status") != "finished":
        return False
    if record.get("bindings") != _jsonable(variant.as_dict()):
        raise SweepError(
            f"{Path(config.sweep_dir) / variant.name} was finished with other bindings "
            f"({record.get('bindings')}); use another SWEEP_DIR or delete that directory.")
    return True


def _jsonable(value):
    return json.loads(json.dumps(value))


def _write_record(model_dir: Path, variant: Variant, command: Sequence[str], status: str,
                  seconds: float | None = None) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    record = {"variant": variant.name, "bindings": _jsonable(variant.as_dict()),
              "command": list(command), "status": status}
    if seconds is not None:
        record["seconds"] = round(seconds, 1)
    (model_dir / VARIANT_FILE).write_text(json.dumps(record, indent=1))


def write_sweep_file(config: SweepConfig) -> None:
    """Records the sweep definition in SWEEP_DIR (the report reads the axes from it)."""
    path = Path(config.sweep_dir)
    path.mkdir(parents=True, exist_ok=True)
    description = {"gin_files": list(config.gin_files), "bindings": list(config.bindings),
                   "axes": [{"name": a.name, "values": _jsonable(list(a.values))}
                            for a in config.axes]}
    (path / SWEEP_FILE).write_text(json.dumps(description, indent=1))


Launcher = Callable[[list[str]], int]


def _subprocess_launcher(command: list[str]) -> int:
    return subprocess.run(command, check=False).returncode


def run_sweep(config: SweepConfig, *, only: Sequence[str] | None = None,
              launch: Launcher = _subprocess_launcher,
              log: Callable[[str], None] = print) -> dict[str, str]:
    """Runs every unfinished variant (or only the named ones); returns name -> outcome
    (``finished``, ``skipped`` or ``failed (exit N)``). A failed variant does not stop the
    others; the caller reports the failures."""
    grid = variants(config.axes)
    if only:
        unknown = sorted(set(only) - {v.name for v in grid})
        if unknown:
            raise SweepError(f"--only names unknown variants {unknown}; the variants are "
                             f"{[v.name for v in grid]}.")
        grid = [v for v in grid if v.name in only]
    write_sweep_file(config)
    outcomes: dict[str, str] = {}
    for index, variant in enumerate(grid, 1):
        model_dir = Path(config.sweep_dir) / variant.name
        if is_finished(config, variant):
            outcomes[variant.name] = "skipped"
            log(f"[{index}/{len(grid)}] {variant.name}: finished earlier, skipped")
            continue
        command = train_command(config, variant)
        log(f"[{index}/{len(grid)}] {variant.name}: training in {model_dir}")
        _write_record(model_dir, variant, command, "running")
        start = time.perf_counter()
        code = launch(command)
        seconds = time.perf_counter() - start
        if code == 0:
            _write_record(model_dir, variant, command, "finished", seconds)
            outcomes[variant.name] = "finished"
        else:
            _write_record(model_dir, variant, command, f"failed (exit {code})", seconds)
            outcomes[variant.name] = f"failed (exit {code})"
            log(f"[{index}/{len(grid)}] {variant.name}: failed with exit code {code}; "
                "rerun the sweep to retry it")
    return outcomes
