"""The training loop and `flantune train`: outputs, resume, and errors before any step."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

import tests.task_fixtures  # noqa: F401
from flantune import cli
from flantune.data.mixtures import task_shares
from flantune.models import T5Config
from flantune.train.checkpoints import CheckpointConfig, CheckpointError
from flantune.train.loop import MIXTURE_FILE, TrainConfig, TrainError, train
from flantune.train.metric_writers import METRICS_JSONL, read_metrics
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig

MODEL = T5Config(vocab_size=8000, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                 num_encoder_layers=1, num_decoder_layers=1)


def _config(model_dir, **overrides) -> TrainConfig:
    options = dict(
        model_dir=str(model_dir), mixture_or_task_name="test_mix",
        task_feature_lengths={"inputs": 48, "targets": 16}, train_steps=6, batch_size=4,
        model=MODEL, window=64, log_every_steps=1, progress=False,
        optimizer=OptimizerConfig(name="adamw", schedule=ScheduleConfig(base_learning_rate=3e-3)),
        checkpoint=CheckpointConfig(save_interval_steps=3, async_save=True))
    options.update(overrides)
    return TrainConfig(**options)


def test_run_writes_checkpoints_and_events_and_resumes_exactly(tmp_path):
    straight = train(_config(tmp_path / "straight", train_steps=8))
    assert sorted(straight.losses) == list(range(1, 9))
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "straight" / "train"))
    first = train(_config(tmp_path / "resumed", train_steps=5))
    assert sorted(first.losses) == [1, 2, 3, 4, 5]
    second = train(_config(tmp_path / "resumed", train_steps=8))  # resumes from step 5
    assert sorted(second.losses) == [6, 7, 8]
    for step in range(1, 9):
        expected = straight.losses[step]
        got = first.losses.get(step, second.losses.get(step))
        assert got == expected, (step, got, expected)  # bit-identical
    # The JSON-lines mirror of the events holds the same losses, and mixture.json what was mixed.
    logged = read_metrics(tmp_path / "resumed" / "train" / METRICS_JSONL)
    assert {s: m["loss"] for s, m in logged.items()} == straight.losses
    mixture = json.loads((tmp_path / "straight" / MIXTURE_FILE).read_text())
    assert mixture["mixture"] == "test_mix"
    assert mixture["expected_shares"] == pytest.approx(
        [task_shares("test_mix")[n] for n in mixture["tasks"]])


def test_incompatible_checkpoint_in_model_dir_is_refused_before_training(tmp_path):
    train(_config(tmp_path, train_steps=3))
    other = dataclasses.replace(MODEL, emb_dim=48)
    with pytest.raises((TrainError, CheckpointError), match="3"):
        train(_config(tmp_path, train_steps=6, model=other))


def test_unwritable_model_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises((TrainError, CheckpointError), match="file.txt"):
        train(_config(blocker / "run"))


def test_full_model_dir_fails_before_training(tmp_path, monkeypatch):
    import flantune.train.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "free_bytes", lambda directory: 1000)
    with pytest.raises(CheckpointError, match=r"GiB free, but checkpoints of this run need"):
        train(_config(tmp_path / "run"))
    assert not (tmp_path / "run" / "train").exists()


def test_model_vocabulary_too_small_is_a_clear_error(tmp_path):
    small = dataclasses.replace(MODEL, vocab_size=100)
    with pytest.raises(TrainError, match="vocab_size 100 is smaller"):
        train(_config(tmp_path, model=small))


def test_cli_missing_required_macros_are_listed(capsys):
    code = cli.main(["train", "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                     "--gin_file=gin_configs/runs/finetune.gin", "--gin.TRAIN_STEPS=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Missing required gin macros: MODEL_DIR, MIXTURE_OR_TASK_NAME, " \
           "TASK_FEATURE_LENGTHS" in err


def test_cli_unknown_gin_binding_is_named(capsys):
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     "--gin.flantune.OptimizerConfig.learning_rat=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "learning_rat" in err


@pytest.mark.slow
def test_cli_demo_config_trains_and_writes_its_config(tmp_path, capsys):
    # A relative MODEL_DIR, as `make demo` passes it (orbax itself refuses relative paths).
    relative = os.path.relpath(tmp_path, os.getcwd())
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     f"--gin.MODEL_DIR='{relative}'", "--gin.TRAIN_STEPS=4",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
                     "--gin.BATCH_SIZE=4", "--gin.flantune.train_config.progress=False"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert '"last_logged_step": 4' in out
    assert (tmp_path / "config.gin").read_text().count("MIXTURE_OR_TASK_NAME = 'demo'") == 1
    assert "T5Config.vocab_size = 8000" in (tmp_path / "operative_config.gin").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4"]
    held_out = json.loads((tmp_path / "eval" / "step_4" / "metrics.json").read_text())["tasks"]
    assert sorted(held_out) == ["rg_fraction_simplification_zsnoopt", "rg_lcm_zsnoopt",
                                "rg_number_sorting_zsnoopt", "rg_prime_factorization_zsnoopt"]
    assert all("rg_score" in t["metrics"] and not t["errors"] for t in held_out.values())


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes_bit_identically(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    from flantune.testing.multiprocess import REPO_ROOT

    code = (
        "import json, sys; import tests.task_fixtures; "
        "from tests.train.test_loop import _config; from flantune.train.loop import train; "
        "r = train(_config(sys.argv[1], train_steps=int(sys.argv[2]))); "
        "print(json.dumps({'losses': r.losses, 'final': r.final_step, "
        "'interrupted': r.interrupted}))")
    reference = train(_config(tmp_path / "straight", train_steps=30))
    run_dir = str(tmp_path / "interrupted")
    process = subprocess.Popen([sys.executable, "-c", code, run_dir, "30"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    events = tmp_path / "interrupted" / "train"
    while not (events.exists() and any(events.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until training has started (the first metrics are written)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    first = json.loads(out.strip().splitlines()[-1])
    assert first["interrupted"] and first["final"] < 30, first
    assert "Stopping after step" in out + err
    resumed = train(_config(run_dir, train_steps=30))
    losses = {int(k): v for k, v in first["losses"].items()} | resumed.losses
    assert sorted(losses) == list(range(1, 31))
    assert all(losses[s] == reference.losses[s] for s in losses)


def test_interrupted_at_several_random_steps_resumes_bit_identically(tmp_path):
    """SIGTERM (sent to this process from inside the loop) at three random steps; each resume
    continues the same data stream and the whole loss sequence equals an uninterrupted run."""
    import os
    import signal

    import numpy as np

    steps = 20
    reference = train(_config(tmp_path / "straight", train_steps=steps))
    # Random steps at least 3 apart (a resumed run first logs the step after its checkpoint).
    stops = sorted(np.random.default_rng(7).choice(np.arange(2, steps - 2, 3), 3, replace=False))
    run_dir, losses, resumes = tmp_path / "interrupted", {}, 0
    for stop_at in [*stops, None]:
        def interrupt(step, metrics, stop_at=stop_at):
            if step == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)

        result = train(_config(run_dir, train_steps=steps), on_step=interrupt)
        losses.update(result.losses)
        if stop_at is not None:
            # The signal arrives after step stop_at was logged: the next step finishes, is saved.
            assert result.interrupted and result.final_step == stop_at + 1
            resumes += 1
    assert resumes == 3
    assert sorted(losses) == list(range(1, steps + 1))
    assert all(losses[s] == reference.losses[s] for s in losses), (stops, losses)


def test_token_ids_beyond_the_model_vocabulary_stop_the_run_before_a_checkpoint(tmp_path):
    from flantune.data import DataError
    from tests.data.test_batches import _pretokenized_task

    _pretokenized_task("test_other_vocabulary", top_id=9123)
    with pytest.raises(DataError, match="test_other_vocabulary.*9123"):
        train(_config(tmp_path, mixture_or_task_name="test_other_vocabulary"))
    assert not [p for p in os.listdir(tmp_path) if p.isdigit()]


def test_an_initial_checkpoint_with_a_step_says_how_many_steps_will_run(tmp_path, capsys):
    train(_config(tmp_path / "base", train_steps=3))
    capsys.readouterr()
    result = train(_config(tmp_path / "tuned", train_steps=5,
                           initial_checkpoint_path=str(tmp_path / "base")))
    out = capsys.readouterr().out
    assert "INITIAL_CHECKPOINT_PATH is at step 3; this run starts at step 0" in out
    assert "trains TRAIN_STEPS=5 steps" in out and "set TRAIN_STEPS=2" in out
    assert sorted(result.losses) == [1, 2, 3, 4, 5]  # counted from 0, as documented


def test_an_unreachable_remote_initial_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(TrainError) as err:
        train(_config(tmp_path, initial_checkpoint_path="gs://flantune-no-such-bucket/ckpt"))
    message = str(err.value)
    assert "gs://flantune-no-such-bucket/ckpt" in message and "\n" not in message
    assert "INITIAL_CHECKPOINT_PATH" in message


def test_a_second_run_into_a_locked_model_dir_fails_at_once(tmp_path):
    from flantune.train.run_lock import LOCK_FILE, RunLock

    with RunLock(tmp_path):
        with pytest.raises(TrainError, match=r"is in use by another flantune run .*pid"):
            train(_config(tmp_path, train_steps=2))
        assert not [p for p in os.listdir(tmp_path) if p.isdigit()]  # nothing written
    train(_config(tmp_path, train_steps=2))
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end of the run


def test_cli_unwritable_model_dir_is_one_line_before_config_gin(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     f"--gin.MODEL_DIR='{blocker}/run'"])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable" in err and "file.txt" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sigterm_while_the_last_checkpoint_is_written_keeps_it(tmp_path):
    """The handlers stay until the final write is committed: a SIGTERM then is reported and
    the last step is saved (it killed the process and lost the step)."""
    import subprocess
    import sys
    import textwrap

    from flantune.testing.multiprocess import REPO_ROOT

    code = textwrap.dedent("""
        import os, signal, sys
        import tests.task_fixtures
        from tests.train.test_loop import _config
        from flantune.train import loop
        from flantune.train.checkpoints import Checkpointer

        wait = Checkpointer.wait_until_finished

        def wait_after_sigterm(self):
            os.kill(os.getpid(), signal.SIGTERM)
            return wait(self)

        Checkpointer.wait_until_finished = wait_after_sigterm
        result = loop.train(_config(sys.argv[1], train_steps=4))
        print("final", result.final_step)
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "final 4" in done.stdout
    assert "SIGTERM arrived while the last checkpoint was written" in done.stdout + done.stderr
    assert sorted(int(p) for p in os.listdir(tmp_path) if p.isdigit())[-1] == 4


def test_the_free_space_check_counts_the_runs_own_keep(tmp_path, monkeypatch):
    """Room for 2 copies is not enough for keep=3 (+1 being written): the run's own
    CheckpointConfig decides, not a fixed count."""
    import flantune.train.checkpoints as checkpoints
    from flantune.train.loop import _state_bytes
    from flantune.train.optimizers import make_optimizer
    from flantune.train.state import ModelSpec

    config = _config(tmp_path / "run", checkpoint=CheckpointConfig(keep=3))
    size = _state_bytes(ModelSpec.from_config(MODEL), make_optimizer(config.optimizer)[0])
    monkeypatch.setattr(checkpoints, "free_bytes", lambda directory: int(2.5 * size))
    with pytest.raises(CheckpointError, match=r"up to 4 at once \(keep=3 \+ 1 being written\)"):
        train(config)
    train(dataclasses.replace(config, checkpoint=CheckpointConfig(keep=1), train_steps=1))
