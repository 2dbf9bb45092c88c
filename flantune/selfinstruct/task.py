"""Training on a Self-Instruct output: its task file registered as a flantune task."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from flantune.data import FewShotConfig, JsonlSource, ModuloSplit
from flantune.data.tasks import FlanTask, task
from flantune.data.templates import INSTRUCTION_TEMPLATES, Template
from flantune.metrics import exact_match


def register_self_instruct_task(name: str, path: str | os.PathLike[str], *,
                                holdout_every: int = 5,
                                templates: Sequence[Template] = INSTRUCTION_TEMPLATES,
                                metric_fns: Sequence[Callable] = (exact_match,),
                                few_shot: FewShotConfig | None = None) -> FlanTask:
    """Registers the tasks of a Self-Instruct file (``self_instruct.jsonl`` of a run, or the
    paper's own releases) as the flantune task ``name``: one example per instance, templated
    like the other instruction tasks; every ``holdout_every``-th instance is the validation
    split. ``register_self_instruct_task("my_data", "runs/si/self_instruct.jsonl")``."""
    path = os.fspath(path)

    def source(split: str) -> ModuloSplit:
        return ModuloSplit(JsonlSource(path, format="self_instruct", task=name),
                           n=holdout_every, remainder=holdout_every - 1,
                           holdout=split == "validation")

    source.__doc__ = f"Self-Instruct tasks from {path}."
    return task(name, templates=templates, metric_fns=list(metric_fns),
                few_shot=few_shot)(source)
