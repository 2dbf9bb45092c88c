"""No gin setting is parsed and then ignored.

Two checks over gin's global configuration:

- :func:`check_t5x_macros`: t5x run-file macros that flantune does not honour (or honours only
  for some values) are errors that say what to use instead;
- :func:`unused_settings`: after a command has built its configuration, every macro and binding
  that nothing read (a typo such as ``--gin.TRAIN_STEP=1``, a binding of a configurable the
  command never calls) is listed, with the closest name that was read.

gin keeps what a config binds in ``gin.config._CONFIG`` and what the calls read in
``_OPERATIVE_CONFIG`` (the source of ``operative_config_str``) but has no public API for either,
hence the private access here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import gin

MACRO_SELECTOR = "gin.macro"


def _always_wrong(_: Any) -> bool:
    return False


# t5x macro -> (values flantune honours, what to use instead). flantune's own run configs read
# the t5x macros it does honour (DROPOUT_RATE, Z_LOSS, LABEL_SMOOTHING, LOSS_NORMALIZING_FACTOR,
# RANDOM_SEED, EVAL_PERIOD, EVALUATOR_NUM_EXAMPLES, USE_CACHED_TASKS, BATCH_SIZE, ...).
T5X_MACROS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "EVAL_STEPS": (lambda v: v is None, (
        "flantune has no train-eval loop over loss batches; held-out tasks are decoded and "
        "scored: bind EVAL_MIXTURE_OR_TASK_NAME, EVAL_PERIOD and EVALUATOR_NUM_EXAMPLES")),
    "TRAIN_STEPS_RELATIVE": (lambda v: v is None, (
        "TRAIN_STEPS counts the steps of this run from 0, also after INITIAL_CHECKPOINT_PATH "
        "(README, 'TRAIN_STEPS'); rerunning the command resumes, so a count relative to the "
        "restored step would train again. Set TRAIN_STEPS")),
    "USE_HARDWARE_RNG": (lambda v: v is False, (
        "flantune uses JAX's default (threefry) RNG so that runs reproduce across shardings; "
        "remove USE_HARDWARE_RNG or set it to False")),
    "EVALUATOR_USE_MEMORY_CACHE": (lambda v: v is True, (
        "flantune's evaluator always builds each task's examples once and keeps them in "
        "memory; remove EVALUATOR_USE_MEMORY_CACHE")),
    "JSON_WRITE_N_RESULTS": (lambda v: v is None, (
        "flantune writes every prediction (MODEL_DIR/eval/step_N/, EVAL_OUTPUT_DIR); limit the "
        "examples with EVALUATOR_NUM_EXAMPLES (training) or EVAL_MAX_EXAMPLES (flantune eval)")),
    "INFER_OUTPUT_DIR": (_always_wrong, "flantune infer writes to EVAL_OUTPUT_DIR"),
    "VOCABULARY": (_always_wrong, (
        "bind flantune.vocabulary.path = 'spm.model' (and flantune.vocabulary.extra_ids)")),
    "OPTIMIZER": (_always_wrong, (
        "bind flantune.OptimizerConfig (name = 'adafactor' or 'adamw', schedule, ...)")),
    "MODEL": (_always_wrong, (
        "add a model gin file (gin_configs/models/*.gin, which binds model_config.config)")),
}

# Macros read by another flantune command than the one running (a sweep's gin files are passed
# on to each variant's `flantune train`).
READ_ELSEWHERE = frozenset({"SWEEP_DIR", "SWEEP_AXES"})


class GinSettingError(ValueError):
    """A gin setting flantune cannot honour, with what to use instead."""


def _bound_macros() -> dict[str, Any]:
    config = gin.config._CONFIG  # noqa: SLF001 - see the module docstring
    return {scope: params.get("value") for (scope, selector), params in config.items()
            if selector == MACRO_SELECTOR}


def check_t5x_macros() -> None:
    """Raises a GinSettingError naming every t5x macro bound to a value flantune ignores."""
    problems = []
    for name, value in sorted(_bound_macros().items()):
        if name in T5X_MACROS:
            honoured, advice = T5X_MACROS[name]
            if not honoured(value):
                problems.append(f"{name} = {value!r}: {advice}.")
    if problems:
        raise GinSettingError("t5x setting(s) flantune does not honour: " + " ".join(problems))


def _short(selector: str) -> str:
    return selector.rsplit(".", 1)[-1] if selector.startswith("__main__.") else selector


def _scope_applies(bound_scope: str, called_scope: str) -> bool:
    """Whether a binding made in `bound_scope` applies to a call made in `called_scope`."""
    if not bound_scope:
        return True
    bound, called = bound_scope.split("/"), called_scope.split("/")
    return called[:len(bound)] == bound  # gin applies the bindings of the active scope's prefixes


def _read_parameters() -> dict[str, list[tuple[str, set[str]]]]:
    """selector -> [(scope it was called in, parameters the call read)]."""
    read: dict[str, list[tuple[str, set[str]]]] = {}
    for (scope, selector), params in gin.config._OPERATIVE_CONFIG.items():  # noqa: SLF001
        read.setdefault(selector, []).append((scope, set(params)))
    return read


def unused_settings(also_read: Iterable[str] = (), defaults_only: Iterable[str] = ()
                    ) -> list[str]:
    """Every macro and binding in gin's configuration that no configurable call has read, as
    ``NAME = VALUE`` lines (with a did-you-mean hint where a read name is close). Macros in
    `defaults_only` (defaults of flantune's own gin files that the user did not bind) are not
    listed: a user who binds the parameter a default macro feeds leaves it unread."""
    also_read = set(also_read) | set(defaults_only) | READ_ELSEWHERE
    read = _read_parameters()
    read_macros = {scope for scope, _ in read.get(MACRO_SELECTOR, [])}
    read_bindings = {f"{_short(sel)}.{p}" for sel, calls in read.items() if sel != MACRO_SELECTOR
                     for _, params in calls for p in params}
    unused = []
    for (scope, selector), params in gin.config._CONFIG.items():  # noqa: SLF001
        if selector == MACRO_SELECTOR:
            if scope in read_macros or scope in also_read:
                continue
            hint = _closest(scope, read_macros)
            unused.append(f"{scope} = {params.get('value')!r} (a macro that no binding "
                          f"refers to{hint})")
            continue
        calls = read.get(selector, [])
        for param, value in params.items():
            if any(param in got and _scope_applies(scope, called) for called, got in calls):
                continue
            plain = f"{_short(selector)}.{param}"
            name = f"{scope}/{plain}" if scope else plain
            if not calls:
                why, hint = "never called by this command", _closest(plain, read_bindings)
            elif scope and not any(_scope_applies(scope, called) for called, _ in calls):
                why, hint = f"never called in scope '{scope}'", ""
            else:
                why, hint = "the parameter is passed explicitly or never read", ""
            unused.append(f"{name} = {value!r} ({why}{hint})")
    return unused


def _closest(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.8)
    return f"; did you mean {match[0]}?" if match else ""
