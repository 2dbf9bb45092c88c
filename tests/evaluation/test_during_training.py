"""Evaluation inside the training loop, and `flantune eval` / `flantune infer` on its
checkpoint."""

from __future__ import annotations

import json

import pytest

import tests.task_fixtures  # noqa: F401
from flantune import cli
from flantune.decoding import DecodeConfig
from flantune.evaluation import EvalConfig
from flantune.evaluation.during_training import evaluation_factory
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainError, train
from flantune.train.metric_writers import METRICS_JSONL, read_metrics
from tests.train.test_loop import _config

EVAL = EvalConfig(["test_reverse", "test_even_zsopt"], every_steps=2, max_examples_per_task=4,
                  batch_size=4, decode=DecodeConfig(max_decode_length=16))
MODEL_FLAGS = ["--gin_file=gin_configs/models/t5_1_1_tiny.gin",
               "--gin.T5Config.vocab_size=8000", "--gin.T5Config.emb_dim=32",
               "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=16",
               "--gin.T5Config.mlp_dim=64", "--gin.T5Config.num_encoder_layers=1",
               "--gin.T5Config.num_decoder_layers=1",
               "--module_import=tests.task_fixtures"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    train(_config(model_dir, train_steps=4, evaluation=evaluation_factory(EVAL),
                  checkpoint=CheckpointConfig(save_interval_steps=2, keep_best=1,
                                              best_metric="test_reverse/exact_match")))
    return model_dir


def test_eval_runs_every_n_steps_and_writes_events_and_files(trained):
    metrics = read_metrics(trained / "eval" / METRICS_JSONL)
    assert sorted(metrics) == [2, 4]
    assert {"test_reverse/exact_match"} <= set(metrics[4])
    assert list(trained.glob("eval/events.out.tfevents.*"))
    step = json.loads((trained / "eval" / "step_4" / "metrics.json").read_text())
    assert set(step["tasks"]) == {"test_reverse", "test_even_zsopt"}
    assert (trained / "eval" / "step_4" / "predictions" / "test_reverse.jsonl").exists()


def test_unknown_eval_task_or_best_metric_fails_before_training(tmp_path):
    with pytest.raises(TrainError, match="no_such_task"):
        train(_config(tmp_path, evaluation=evaluation_factory(EvalConfig("no_such_task"))))
    ranked = CheckpointConfig(keep_best=1, best_metric="other_task/exact_match")
    with pytest.raises(TrainError, match="other_task/exact_match"):
        train(_config(tmp_path, evaluation=evaluation_factory(EVAL), checkpoint=ranked))
    with pytest.raises(TrainError, match="no evaluation is configured"):
        train(_config(tmp_path, checkpoint=ranked))
    assert not list(tmp_path.glob("[0-9]*"))


def test_eval_cli_writes_metrics_for_every_task_and_infer_writes_jsonl(trained, tmp_path,
                                                                        capsys):
    common = [*MODEL_FLAGS, f"--gin.CHECKPOINT_PATH='{trained}'",
              "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 16}",
              "--gin.EVAL_MAX_EXAMPLES=3", "--gin.EVAL_BATCH_SIZE=4"]
    tasks = "['test_reverse', 'test_even_zsopt', 'test_plain_seqio', 'test_eval_no_split']"
    out_dir = tmp_path / "eval"
    code = cli.main(["eval", "--gin_file=gin_configs/runs/eval.gin", *common,
                     f"--gin.MIXTURE_OR_TASK_NAME={tasks}".replace(", 'test_eval_no_split'", ""),
                     f"--gin.EVAL_OUTPUT_DIR='{out_dir}'"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out_dir / "metrics.json").read_text())
    assert data["step"] == 4
    assert set(data["tasks"]) == {"test_reverse", "test_even_zsopt", "test_plain_seqio"}
    assert data["tasks"]["test_even_zsopt"]["method"] == "rank"
    markdown = (out_dir / "metrics.md").read_text()
    assert all(f"| {t} |" in markdown for t in data["tasks"])

    infer_dir = tmp_path / "infer"
    code = cli.main(["infer", "--gin_file=gin_configs/runs/infer.gin", *common,
                     "--gin.MIXTURE_OR_TASK_NAME='test_reverse'",
                     f"--gin.EVAL_OUTPUT_DIR='{infer_dir}'"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in
            (infer_dir / "test_reverse.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert {"inputs", "targets", "prediction", "score"} <= set(rows[0])
    assert not (infer_dir / "metrics.json").exists()


def test_eval_cli_split_missing_fails_that_task_only(trained, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code = cli.main(["eval", "--gin_file=gin_configs/runs/eval.gin", *MODEL_FLAGS,
                     f"--gin.CHECKPOINT_PATH='{trained}/4'", "--gin.EVAL_SPLIT='train'",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 16}",
                     "--gin.EVAL_MAX_EXAMPLES=2", "--gin.EVAL_BATCH_SIZE=4",
                     "--gin.MIXTURE_OR_TASK_NAME=['test_reverse', 'test_plain_seqio']",
                     f"--gin.EVAL_OUTPUT_DIR='{out_dir}'"])
    assert code == 0, capsys.readouterr().err  # both have a train split
    code = cli.main(["eval", "--gin_file=gin_configs/runs/eval.gin", *MODEL_FLAGS,
                     f"--gin.CHECKPOINT_PATH='{trained}/4'", "--gin.EVAL_SPLIT='test'",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 16}",
                     "--gin.EVAL_MAX_EXAMPLES=2", "--gin.EVAL_BATCH_SIZE=4",
                     "--gin.MIXTURE_OR_TASK_NAME=['test_reverse']",
                     f"--gin.EVAL_OUTPUT_DIR='{out_dir}'"])
    err = capsys.readouterr().err
    assert code == 1
    assert "task 'test_reverse'" in err and "no split 'test'" in err
    assert "test_reverse" in json.loads((out_dir / "metrics.json").read_text())["tasks"]


def test_eval_cli_needs_its_macros(capsys):
    code = cli.main(["eval", "--gin_file=gin_configs/runs/eval.gin", *MODEL_FLAGS])
    assert code == 2
    assert "CHECKPOINT_PATH" in capsys.readouterr().err
