"""``flantune self-instruct``: bootstrap a task file with a checkpoint as the generator.

The generator is any flantune or Hugging Face checkpoint (CHECKPOINT_PATH, the model gin file
describing it), with an adapter on top when ADAPTER_PATH is set, decoded by flantune on the
configured mesh; the prompts are tokenized with the configured vocabulary.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import flantune.partitioning as partitioning
from flantune.data.vocabulary import configured_vocabulary
from flantune.evaluation.command import load_params
from flantune.selfinstruct.config import SelfInstructConfig
from flantune.selfinstruct.generator import DecodingGenerator
from flantune.selfinstruct.pipeline import RunState, self_instruct
from flantune.train.state import ModelConfig


@dataclasses.dataclass(frozen=True)
class SelfInstructRun:
    config: SelfInstructConfig
    checkpoint_path: str
    model: ModelConfig
    adapter_path: str | None = None
    inputs_length: int = 512
    batch_size: int = 8
    mesh: partitioning.MeshConfig = dataclasses.field(default_factory=partitioning.MeshConfig)
    rules: str | tuple = "data_parallel"


@dataclasses.dataclass
class RunOutcome:
    state: RunState
    seconds_generating: float
    prompts_cut: int
    tokens_generated: int  # by this run (state.generated_tokens also counts resumed-from runs)


class _Timed:
    """Wraps a generator, adding up the seconds spent in it."""

    def __init__(self, generator: Callable[..., Any]):
        self.generator, self.seconds = generator, 0.0

    def __call__(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.generator(*args)
        finally:
            self.seconds += time.perf_counter() - start


def run(spec: SelfInstructRun,
        on_round: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Loads the generator checkpoint onto the mesh and runs (or resumes) the bootstrap."""
    rules = partitioning.axis_rules(spec.rules) if isinstance(spec.rules, str) \
        else tuple(spec.rules)
    mesh = partitioning.make_mesh(spec.mesh)
    with partitioning.activation_rules(rules, mesh):
        model_spec, params, _ = load_params(spec.checkpoint_path, spec.adapter_path, spec.model,
                                            mesh, rules)
        generator = DecodingGenerator(model_spec, params, configured_vocabulary(),
                                      inputs_length=spec.inputs_length,
                                      batch_size=spec.batch_size, mesh=mesh, rules=rules)
        timed = _Timed(generator)
        state = self_instruct(spec.config, timed, on_round)
    return RunOutcome(state, timed.seconds, generator.prompts_cut, generator.tokens)
