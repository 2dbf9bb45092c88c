"""What a Self-Instruct run does (`SelfInstructConfig`); defaults follow the paper."""

from __future__ import annotations

import dataclasses

from flantune.selfinstruct.filters import FilterConfig
from flantune.selfinstruct.generator import Sampling


@dataclasses.dataclass(frozen=True)
class SelfInstructConfig:
    """A bootstrapping run.

    Each round writes ``prompts_per_round`` instruction prompts of ``prompt_instructions``
    in-context instructions (``machine_instructions`` of them generated ones once the pool has
    that many, the rest seed tasks), samples continuations with ``instruction_sampling``, keeps
    the instructions that pass the filters and whose ROUGE-L F against every instruction in the
    pool is at most ``similarity_threshold``, asks whether each is a classification task (few
    shot, ``classification_examples`` seed tasks) and generates its instances
    (``instance_examples`` seed tasks of the same kind as examples). The run stops once
    ``num_tasks`` tasks have instances or after ``max_rounds`` rounds.
    """

    output_dir: str
    seed_path: str | None = None  # None: flantune's own seed set
    num_tasks: int = 100
    max_rounds: int = 100
    prompts_per_round: int = 8
    prompt_instructions: int = 8
    machine_instructions: int = 2
    last_number: int = 15  # the list ends at this number (the paper stops at "16.")
    similarity_threshold: float = 0.7
    classification_examples: int = 8
    instance_examples: int = 3
    instruction_sampling: Sampling = Sampling(temperature=0.7, top_p=0.5, max_new_tokens=256)
    classification_sampling: Sampling = Sampling(max_new_tokens=4)
    instance_sampling: Sampling = Sampling(max_new_tokens=256)
    filters: FilterConfig = FilterConfig()
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(rule: str) -> None:
            raise ValueError(f"SelfInstructConfig: {rule}.")

        if not self.output_dir:
            fail("output_dir is required (gin SELF_INSTRUCT_DIR)")
        if self.num_tasks < 1 or self.max_rounds < 1 or self.prompts_per_round < 1:
            fail("num_tasks, max_rounds and prompts_per_round must be >= 1")
        if not 0 <= self.machine_instructions < self.prompt_instructions:
            fail(f"need 0 <= machine_instructions ({self.machine_instructions}) < "
                 f"prompt_instructions ({self.prompt_instructions})")
        if self.last_number <= self.prompt_instructions:
            fail(f"last_number ({self.last_number}) must exceed prompt_instructions "
                 f"({self.prompt_instructions}), or nothing new is asked for")
        if not 0 < self.similarity_threshold <= 1:
            fail("similarity_threshold must be in (0, 1]")
        if self.classification_examples < 2 or self.instance_examples < 1:
            fail("classification_examples must be >= 2 and instance_examples >= 1")

    def fingerprint(self) -> dict:
        """What must match for a run in ``output_dir`` to be resumed (all but the stopping
        rule: a finished run may be extended with more rounds or tasks)."""
        data = dataclasses.asdict(self)
        for key in ("output_dir", "num_tasks", "max_rounds"):
            data.pop(key)
        data["filters"]["blacklist"] = list(data["filters"]["blacklist"])
        data["filters"]["banned_prefixes"] = list(data["filters"]["banned_prefixes"])
        return data
