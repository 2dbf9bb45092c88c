"""The flantune command line."""

from __future__ import annotations

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
