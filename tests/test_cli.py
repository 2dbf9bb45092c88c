"""The flantune command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from flantune import cli

FIXTURES = "--module_import=tests.task_fixtures"


def test_inspect_prints_shares_lengths_and_examples(capsys):
    code = cli.main(["inspect", "test_nested", FIXTURES, "--examples", "400",
                     "--task_feature_lengths", "inputs=16,targets=8"])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("test_plain_seqio", "test_even_zsopt", "expected", "realized",
                 "inputs p50/p95/max", "truncated", "example 1", "25.00%"):
        assert text in out
    assert "feature lengths inputs=16, targets=8" in out


def test_inspect_reads_gin_macros(tmp_path, capsys):
    gin_file = tmp_path / "run.gin"
    gin_file.write_text("MIXTURE_OR_TASK_NAME = 'test_reverse'\n"
                        "TASK_FEATURE_LENGTHS = {'inputs': 20, 'targets': 10}\n")
    code = cli.main(["inspect", FIXTURES, f"--gin_file={gin_file}", "--examples", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "test_reverse: 1 tasks" in out and "inputs=20, targets=10" in out


def test_unknown_name_is_a_clear_error(capsys):
    code = cli.main(["inspect", "test_revers", FIXTURES])
    err = capsys.readouterr().err
    assert code == 2 and "No task or mixture named 'test_revers'" in err
    assert "Did you mean" in err and "test_reverse" in err


def test_bad_gin_binding_and_file_are_clear_errors(capsys):
    assert cli.main(["inspect", "test_reverse", FIXTURES, "--gin.no_such.thing=1"]) == 2
    assert "no_such.thing" in capsys.readouterr().err
    assert cli.main(["inspect", "test_reverse", FIXTURES, "--gin_file=nope.gin"]) == 2
    assert "Gin file 'nope.gin' not found" in capsys.readouterr().err
    assert cli.main(["inspect", "test_reverse", "--module_import=no_such_module"]) == 2
    assert "Cannot import task module 'no_such_module'" in capsys.readouterr().err
    assert cli.main(["inspect", "test_reverse", FIXTURES, "--gin.MALFORMED"]) == 2
    assert "--gin.NAME=VALUE" in capsys.readouterr().err


def _flantune(*args: str, cwd) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it (its sys.path has no working dir)."""
    script = os.path.join(os.path.dirname(sys.executable), "flantune")
    return subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_console_script_imports_a_module_of_the_working_directory_quietly(tmp_path):
    """--module_import finds a module in the working directory, adds to (does not replace)
    flantune's own tasks, and a clean run prints nothing but flantune's output: no gin search
    path lookups, no TensorFlow start-up lines."""
    (tmp_path / "my_tasks.py").write_text(
        "import seqio\n\nseqio.MixtureRegistry.add('my_mix', [('rg_gcd', 1.0)])\n")
    (tmp_path / "my_gin_module.py").write_text("import gin\n\nMARK = gin.constant('MARK', 1)\n")
    (tmp_path / "run.gin").write_text("import my_gin_module\ninclude "
                                      "'gin_configs/runs/demo.gin'\n")
    done = _flantune("inspect", "my_mix", "--module_import=my_tasks", "--examples", "20",
                     "--rendered", "1", "--gin_file=run.gin", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "members: rg_gcd" in done.stdout
    assert done.stderr == ""


def test_a_mixture_over_an_unknown_name_names_the_mixture_file_and_line(tmp_path):
    (tmp_path / "bad_tasks.py").write_text(
        "import seqio\n\nseqio.MixtureRegistry.add('bad_mix', [('rg_gdc', 1.0)])\n")
    done = _flantune("inspect", "bad_mix", "--module_import=bad_tasks", cwd=tmp_path)
    assert done.returncode == 2
    assert "mixture 'bad_mix' refers to 'rg_gdc'" in done.stderr
    assert "bad_tasks.py:3" in done.stderr and "Did you mean: rg_gcd" in done.stderr
    assert "Traceback" not in done.stderr


def test_t5x_flag_spellings(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "lengths.gin").write_text("TASK_FEATURE_LENGTHS = {'inputs': 20, 'targets': 10}\n")
    code = cli.main(["inspect", FIXTURES, f"--gin_search_paths=/nonexistent,{configs}",
                     "--gin_file=lengths.gin", "--gin_bindings=MIXTURE_OR_TASK_NAME = "
                     "'test_reverse'", "--examples", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "test_reverse: 1 tasks" in out and "inputs=20, targets=10" in out


def test_a_setting_nothing_reads_is_a_warning_naming_it(tmp_path, capsys):
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     f"--gin.MODEL_DIR='{tmp_path}/run'", "--gin.TRAIN_STEP=1",
                     "--gin.MIXTURE_OR_TASK_NAME='no_such_mixture'"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_mixture" in err  # stops before training, after the check
    assert "warning: 1 gin setting(s) that nothing reads" in err
    assert "TRAIN_STEP = 1 (a macro that no binding refers to; did you mean TRAIN_STEPS?)" in err


def test_a_run_gin_without_the_run_include_is_one_clear_line(tmp_path, capsys):
    run = tmp_path / "run.gin"
    run.write_text(f"include 'gin_configs/models/t5_1_1_tiny.gin'\nMODEL_DIR = '{tmp_path}'\n"
                   "MIXTURE_OR_TASK_NAME = 'demo'\nTRAIN_STEPS = 3\n"
                   "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n")
    assert cli.main(["train", f"--gin_file={run}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--gin_file=gin_configs/runs/finetune.gin" in err


def test_t5x_macros_read_with_t5x_meaning(tmp_path):
    import gin

    from flantune import gin_config

    gin.clear_config()
    try:
        cli.parse_gin(["gin_configs/models/t5_1_1_tiny.gin", "gin_configs/runs/finetune.gin"], [
            f"MODEL_DIR = '{tmp_path}'", "MIXTURE_OR_TASK_NAME = 'demo'", "TRAIN_STEPS = 5",
            "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}", "DROPOUT_RATE = 0.3",
            "Z_LOSS = 0.0", "LABEL_SMOOTHING = 0.1", "LOSS_NORMALIZING_FACTOR = None",
            "RANDOM_SEED = 7", "EVAL_PERIOD = 50", "EVALUATOR_NUM_EXAMPLES = 9",
            "EVAL_MIXTURE_OR_TASK_NAME = 'demo_heldout'"], [])
        config = gin_config.train_config()
        assert config.batch_size == 128  # t5x's BATCH_SIZE default
        assert config.model.dropout_rate == 0.3 and config.seed == 7
        loss = config.step.loss
        assert (loss.z_loss, loss.label_smoothing, loss.constant) == (0.0, 0.1, 1.0)
        assert loss.normalization.value == "CONSTANT"  # None: the summed loss, as in t5x
        evaluation = config.evaluation.config
        assert evaluation.every_steps == 50 and evaluation.max_examples_per_task == 9
        assert cli.unused_settings(also_read=cli.READ_BY_CLI) == []
        for binding, message in (("RANDOM_SEED = None", "RANDOM_SEED = None"),
                                 ("USE_CACHED_TASKS = True", "USE_CACHED_TASKS = True")):
            cli.parse_gin([], [binding], [])
            with pytest.raises(ValueError, match=message):
                gin_config.train_config()
            gin.parse_config("RANDOM_SEED = 7\nUSE_CACHED_TASKS = False")
    finally:
        gin.clear_config()


def test_a_default_macro_bypassed_by_a_direct_binding_is_not_reported(tmp_path, capsys):
    """finetune.gin's EVALUATOR_NUM_EXAMPLES stays unread when the user binds the parameter it
    feeds: no warning about a setting the user never made; a user's own unread macro warns."""
    run = tmp_path / "run.gin"
    run.write_text("include 'gin_configs/runs/demo.gin'\n"
                   "flantune.EvalConfig.max_examples_per_task = 4\nMY_UNREAD = 3\n")
    code = cli.main(["train", f"--gin_file={run}", f"--gin.MODEL_DIR='{tmp_path}/run'",
                     "--gin.MIXTURE_OR_TASK_NAME='no_such_mixture'"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_mixture" in err
    assert "MY_UNREAD = 3" in err and "EVALUATOR_NUM_EXAMPLES" not in err


def test_an_eval_period_with_nothing_to_evaluate_is_an_error(tmp_path, capsys):
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     f"--gin.MODEL_DIR='{tmp_path}/run'", "--gin.EVAL_PERIOD=50",
                     "--gin.EVAL_MIXTURE_OR_TASK_NAME=None"])
    err = capsys.readouterr().err
    assert code == 2 and "EVAL_PERIOD" in err and "EVAL_MIXTURE_OR_TASK_NAME" in err


def test_a_bad_distributed_setting_is_one_line(capsys):
    code = cli.main(["train", "--gin_file=gin_configs/runs/demo.gin",
                     "--coordinator_address=127.0.0.1:1", "--num_processes=2",
                     "--process_id=0", "--peer_timeout_seconds=1"])
    err = capsys.readouterr().err
    assert code == 2 and "peer" in err.lower() and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_inspect_shows_a_conversation_with_its_trained_tokens(capsys):
    code = cli.main(["inspect", "demo_chat", "--gin_file=gin_configs/runs/demo_chat.gin",
                     "--examples", "60", "--rendered", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "trained/total tokens" in out and "chat_reasoning" in out
    assert "<s>[INST] " in out and " [/INST] " in out
    assert re.search(r"\[\d+ of \d+ tokens trained, shown in bold green\]", out)
