"""A real sweep: `flantune sweep` trains and evaluates every variant in its own process, the
report holds every held-out metric, and the same variant run twice gives identical numbers."""

from __future__ import annotations

import csv
import shutil

import pytest

from flantune import cli
from flantune.train.metric_writers import METRICS_JSONL, read_metrics

BASE_GIN = """
include 'gin_configs/models/t5_1_1_tiny.gin'
include 'gin_configs/runs/finetune.gin'
T5Config.vocab_size = 8000
T5Config.emb_dim = 32
T5Config.num_heads = 2
T5Config.head_dim = 16
T5Config.mlp_dim = 64
T5Config.num_encoder_layers = 1
T5Config.num_decoder_layers = 1
MIXTURE_OR_TASK_NAME = @flantune.ablation_mixture()
flantune.ablation_mixture.base = 'test_mix'
flantune.ablation_mixture.cap = 50
TASK_FEATURE_LENGTHS = {'inputs': 48, 'targets': 16}
TRAIN_STEPS = 3
BATCH_SIZE = 4
EVAL_MIXTURE_OR_TASK_NAME = ['test_reverse', 'test_even_zsopt']
flantune.EvalConfig.max_examples_per_task = 4
flantune.EvalConfig.batch_size = 4
flantune.DecodeConfig.max_decode_length = 16
flantune.train_config.progress = False
flantune.train_config.window = 64
flantune.train_config.log_every_steps = 1
"""


@pytest.mark.slow
def test_sweep_trains_evaluates_reports_and_is_deterministic(tmp_path, capsys):
    base = tmp_path / "base.gin"
    base.write_text(BASE_GIN)
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", f"--gin_file={base}", "--module_import=tests.task_fixtures",
            "--axis=flantune.ablation_mixture.templates_per_task=[1, None]",
            f"--sweep_dir={sweep_dir}"]
    assert cli.main(args) == 0, capsys.readouterr().err
    names = ["templates_per_task=1", "templates_per_task=None"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == names
    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == names
    for row in rows:
        assert row["seed"] == "0"
        assert row["test_reverse/exact_match"] != ""
    report = (sweep_dir / "report.md").read_text()
    assert "test_reverse/exact_match" in report and "heldout_metrics.png" in report
    assert (sweep_dir / "training_loss.png").stat().st_size > 0

    # Determinism: the same variant again, from scratch, gives the same losses and metrics.
    first = sweep_dir / names[0]
    losses = read_metrics(first / "train" / METRICS_JSONL)
    evals = read_metrics(first / "eval" / METRICS_JSONL)
    shutil.rmtree(first)
    assert cli.main([*args, f"--only={names[0]}"]) == 0, capsys.readouterr().err
    assert read_metrics(first / "train" / METRICS_JSONL).keys() == losses.keys()
    again = read_metrics(first / "train" / METRICS_JSONL)
    assert {s: m["loss"] for s, m in again.items()} == {s: m["loss"] for s, m in losses.items()}
    assert read_metrics(first / "eval" / METRICS_JSONL) == evals
