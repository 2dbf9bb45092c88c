"""A wheel of the checkout, installed into a fresh venv and run from another directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level build outputs and caches of the checkout that a wheel build must not see.
NOT_SOURCE = (".git", ".venv", "build", "dist", "runs", "*.egg-info", ".pytest_cache",
              ".ruff_cache")

# Run inside the installed venv: every shipped gin file parses (its includes resolved from
# the package), and the example JSONL files ship with flantune.tasks.
CHECK_INSTALL = """
import importlib.resources, pathlib, sys
import gin
import flantune, flantune.cli as cli
package = pathlib.Path(flantune.__file__).parent
assert package.is_relative_to(sys.prefix), (package, sys.prefix)
configs = sorted(package.glob("gin_configs/**/*.gin"))
assert len(configs) >= 20, configs
for path in configs:
    gin.clear_config()
    cli.parse_gin([str(path.relative_to(package))], [], [])
examples = importlib.resources.files("flantune.tasks") / "examples"
for name in ("alpaca_style.jsonl", "dolly_style.jsonl", "sharegpt_style.jsonl"):
    assert (examples / name).is_file(), name
import flantune.tasks
from flantune.data.tasks import flan_task_for
flan_task, _ = flan_task_for("example_alpaca")
assert str(package) in flan_task.source("train").where(0), flan_task.source("train").where(0)
print("parsed", len(configs))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (f"{command} failed ({done.returncode}):\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the flantune wheel; its dependencies come from the test's venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    top_level = shutil.ignore_patterns(*NOT_SOURCE)
    shutil.copytree(ROOT, source, ignore=lambda d, names: (
        top_level(d, names) if Path(d) == ROOT else set()) | {"__pycache__"} & set(names))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(source)], tmp, env)
    (wheel,) = (tmp / "dist").glob("flantune-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], tmp, env).strip())
    # Dependencies only: the test venv's site-packages as a plain path (its .pth files, which
    # include the editable install of the checkout, are not processed).
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp, env)
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_the_wheel_installs_only_the_flantune_package(installed):
    (record,) = installed.glob("lib/python*/site-packages/flantune-*.dist-info/RECORD")
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    assert tops == {"flantune", record.parent.name, ".."}, tops  # ".." is bin/flantune
    site = record.parent.parent
    assert not (site / "tasks").exists() and not (site / "gin_configs").exists()
    assert (site / "flantune" / "tasks" / "examples" / "alpaca_style.jsonl").is_file()
    assert (site / "flantune" / "gin_configs" / "runs" / "demo.gin").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the chat demo's tokenizer
        assert (site / "flantune" / "assets" / "demo_chat_tokenizer" / name).is_file()


@pytest.mark.slow
def test_the_installed_gin_files_and_examples_work_from_another_directory(installed, tmp_path):
    out = _run([str(installed / "bin" / "python"), "-c", CHECK_INSTALL], tmp_path,
               _clean_env(installed))
    # Every gin file of the checkout is installed and parses (the peft ones included).
    shipped = len(list((ROOT / "gin_configs").glob("**/*.gin")))
    assert out.strip().splitlines()[-1] == f"parsed {shipped}", out


@pytest.mark.slow
def test_the_installed_demo_trains_from_another_directory(installed, tmp_path):
    _run([str(installed / "bin" / "flantune"), "train", "--gin_file=gin_configs/runs/demo.gin",
          "--gin.MODEL_DIR='run'", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=2",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
          "--gin.EVAL_MIXTURE_OR_TASK_NAME=None"], tmp_path, _clean_env(installed))
    operative = (tmp_path / "run" / "operative_config.gin").read_text()
    assert "TRAIN_STEPS = 2" in operative, operative
