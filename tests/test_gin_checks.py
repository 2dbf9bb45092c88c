"""Unread gin settings are listed, and t5x settings flantune does not honour are errors."""

from __future__ import annotations

import gin
import pytest

from flantune.gin_checks import GinSettingError, check_t5x_macros, unused_settings


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


@gin.configurable("gin_checks_probe")
def _probe(a: int = 1, b: int = 2) -> int:
    return a + b


def test_unread_macros_and_bindings_are_listed_with_a_hint():
    gin.parse_config("""
        STEPS = 3
        STEP = 1
        gin_checks_probe.a = %STEPS
        other/gin_checks_probe.b = 5
    """)
    assert _probe() == 5
    unused = unused_settings()
    assert len(unused) == 2
    assert unused[0].startswith("STEP = 1 (a macro that no binding refers to")
    assert "did you mean STEPS?" in unused[0]
    assert unused[1].startswith("other/")
    assert "gin_checks_probe.b = 5 (never called in scope 'other')" in unused[1]


def test_a_binding_read_in_its_scope_and_an_explicit_argument():
    gin.parse_config("""
        scope_a/gin_checks_probe.b = 5
        gin_checks_probe.a = 7
    """)
    with gin.config_scope("scope_a"):
        assert _probe() == 12
    assert unused_settings() == []
    gin.clear_config()
    gin.parse_config("gin_checks_probe.a = 7")
    assert _probe(a=1) == 3  # the binding is overridden by the call, so it is unread
    [line] = unused_settings()
    assert line.endswith("gin_checks_probe.a = 7 (the parameter is passed explicitly or never "
                         "read)")


def test_a_configurable_never_called_and_macros_read_elsewhere():
    gin.parse_config("gin_checks_probe.a = 7\nSWEEP_DIR = 'x'\nMINE = 1")
    [line] = unused_settings(also_read=["MINE"])
    assert line.endswith("gin_checks_probe.a = 7 (never called by this command)")


@pytest.mark.parametrize(("binding", "advice"), [
    ("EVAL_STEPS = 20", "EVALUATOR_NUM_EXAMPLES"),
    ("TRAIN_STEPS_RELATIVE = 100", "TRAIN_STEPS counts the steps of this run"),
    ("USE_HARDWARE_RNG = True", "threefry"),
    ("JSON_WRITE_N_RESULTS = 10", "writes every prediction"),
    ("VOCABULARY = 1", "flantune.vocabulary.path"),
])
def test_t5x_macros_flantune_does_not_honour_are_errors(binding, advice):
    gin.parse_config(binding)
    with pytest.raises(GinSettingError, match="does not honour") as err:
        check_t5x_macros()
    assert binding.split(" = ")[0] in str(err.value) and advice in str(err.value)


def test_t5x_macros_at_values_flantune_honours_pass():
    gin.parse_config("EVAL_STEPS = None\nUSE_HARDWARE_RNG = False\nJSON_WRITE_N_RESULTS = None\n"
                     "EVALUATOR_USE_MEMORY_CACHE = True")
    check_t5x_macros()


def test_scoped_bindings_apply_to_calls_in_scopes_they_prefix():
    """gin applies `outer/f.b` inside scope outer/inner, but not `inner/f.a` there."""
    gin.parse_config("outer/gin_checks_probe.b = 5\ninner/gin_checks_probe.a = 1")
    with gin.config_scope("outer"), gin.config_scope("inner"):
        assert _probe() == 6
    [line] = unused_settings()
    assert "inner/" in line and "never called in scope 'inner'" in line
