"""The sweep runner and report: every variant in its own MODEL_DIR, finished ones skipped,
failures kept apart, and a report built from what the runs wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flantune import cli
from flantune.sweep import SweepConfig, SweepError, run_sweep
from flantune.sweep.grid import parse_axis
from flantune.sweep.report import collect, write_report
from flantune.train.metric_writers import MetricWriter


def _fake_run(calls: list[list[str]], fail: str | None = None):
    """A launcher that writes what a training run with eval writes, with metrics derived
    from the variant's bindings (so the report can be checked by hand)."""

    def launch(command: list[str]) -> int:
        calls.append(command)
        model_dir = Path(eval(next(a for a in command if a.startswith("--gin.MODEL_DIR="))
                              .split("=", 1)[1]))
        share = float(next(a for a in command if a.startswith("--gin.SHARE=")).split("=")[1])
        if fail and fail in str(model_dir):
            return 3
        writer = MetricWriter(model_dir, "train")
        for step in (1, 2):
            writer.scalars(step, {"loss": 5.0 - step * share})
        writer.close()
        evals = MetricWriter(model_dir, "eval")
        evals.scalars(2, {"task_a/exact_match": 100 * share, "task_b/exact_match": 50.0})
        evals.close()
        (model_dir / "operative_config.gin").write_text("train_config.seed = 7\n")
        return 0

    return launch


def _config(tmp_path) -> SweepConfig:
    return SweepConfig(sweep_dir=str(tmp_path / "sweep"), gin_files=("base.gin",),
                       axes=(parse_axis("SHARE=[0.25, 0.5, 1.0]"),),
                       bindings=("TRAIN_STEPS = 2",))


def test_runs_each_variant_once_and_skips_finished_ones(tmp_path):
    calls: list[list[str]] = []
    config = _config(tmp_path)
    outcomes = run_sweep(config, launch=_fake_run(calls), log=lambda _: None)
    assert outcomes == {"SHARE=0.25": "finished", "SHARE=0.5": "finished",
                        "SHARE=1.0": "finished"}
    assert "--gin_file=base.gin" in calls[0] and "--gin.TRAIN_STEPS=2" in calls[0]
    again = run_sweep(config, launch=_fake_run(calls), log=lambda _: None)
    assert set(again.values()) == {"skipped"} and len(calls) == 3


def test_a_failed_variant_does_not_stop_the_others_and_is_retried(tmp_path):
    calls: list[list[str]] = []
    config = _config(tmp_path)
    outcomes = run_sweep(config, launch=_fake_run(calls, fail="SHARE=0.5"), log=lambda _: None)
    assert outcomes["SHARE=0.5"] == "failed (exit 3)"
    assert outcomes["SHARE=1.0"] == "finished"
    retried = run_sweep(config, launch=_fake_run(calls), log=lambda _: None)
    assert retried == {"SHARE=0.25": "skipped", "SHARE=0.5": "finished", "SHARE=1.0": "skipped"}


def test_only_runs_the_named_variants(tmp_path):
    calls: list[list[str]] = []
    outcomes = run_sweep(_config(tmp_path), only=["SHARE=1.0"], launch=_fake_run(calls),
                         log=lambda _: None)
    assert outcomes == {"SHARE=1.0": "finished"}
    with pytest.raises(SweepError, match="unknown variants"):
        run_sweep(_config(tmp_path), only=["SHARE=2"], launch=_fake_run(calls))


def test_report_tables_and_plots(tmp_path):
    config = _config(tmp_path)
    run_sweep(config, launch=_fake_run([]), log=lambda _: None)
    written = write_report(config.sweep_dir)
    with open(written["csv"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["SHARE=0.25", "SHARE=0.5", "SHARE=1.0"]
    assert [float(r["task_a/exact_match"]) for r in rows] == [25.0, 50.0, 100.0]
    assert [float(r["final_train_loss"]) for r in rows] == [4.5, 4.0, 3.0]
    assert {r["seed"] for r in rows} == {"7"}
    text = written["markdown"].read_text()
    assert "| SHARE=0.5 | 0.5 | 7 | 4.0000 | 50 | 50 |" in text
    for image in ("heldout_metrics", "training_loss"):
        assert written[image].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({image}.png)" in text


def test_finished_variant_with_other_bindings_is_not_silently_reused(tmp_path):
    config = _config(tmp_path)
    run_sweep(config, launch=_fake_run([]), log=lambda _: None)
    record = Path(config.sweep_dir) / "SHARE=0.5" / "sweep_variant.json"
    data = json.loads(record.read_text())
    data["bindings"] = {"SHARE": 0.7}
    record.write_text(json.dumps(data))
    with pytest.raises(SweepError, match="other bindings"):
        run_sweep(config, launch=_fake_run([]), log=lambda _: None)


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="run `flantune sweep`"):
        collect(tmp_path)


def test_cli_needs_an_axis_and_a_directory(tmp_path, capsys):
    assert cli.main(["sweep", "--gin_file=gin_configs/runs/demo.gin"]) == 2
    assert "--sweep_dir" in capsys.readouterr().err
    assert cli.main(["sweep", "--gin_file=gin_configs/runs/demo.gin",
                     f"--sweep_dir={tmp_path}"]) == 2
    assert "at least one axis" in capsys.readouterr().err


def test_cluster_means_group_tasks_by_their_cluster_label():
    import flantune.tasks  # noqa: F401  (registers the demo tasks and their clusters)
    from flantune.sweep.report import cluster_means

    means = cluster_means({"rg_gcd_zsnoopt/rg_score": 10.0, "rg_lcm_zsnoopt/rg_score": 30.0,
                           "rg_syllogism_zsopt/rg_score": 50.0, "not_a_task/rg_score": 1.0})
    assert means == {"logic/rg_score": 50.0, "number_theory/rg_score": 20.0}


@pytest.mark.parametrize("name", ["heldout_clusters", "templates_per_task"])
def test_shipped_sweeps_parse_and_name_their_mixtures(name):
    import gin

    import flantune.tasks  # noqa: F401
    from flantune.sweep.grid import axes_from_mapping, variants

    gin.clear_config()
    try:
        cli.parse_gin([f"gin_configs/sweeps/{name}.gin"], [], [])
        grid = variants(axes_from_mapping(cli._macro("SWEEP_AXES")))
        assert len(grid) >= 3
        assert cli._macro("MIXTURE_OR_TASK_NAME").startswith("ablation_")
        assert cli._macro("EVAL_MIXTURE_OR_TASK_NAME")
    finally:
        gin.clear_config()
