"""Self-Instruct (Wang et al. 2022): bootstrap instruction data from a model and seed tasks.

``self_instruct(SelfInstructConfig(output_dir=...), generator)`` runs rounds of instruction
generation, filtering (with an exact, fast ROUGE-L novelty check), classification
identification and instance generation, writing ``self_instruct.jsonl`` and a report;
``register_self_instruct_task`` makes the result a task to train on.
"""

from flantune.selfinstruct.config import SelfInstructConfig
from flantune.selfinstruct.filters import FilterConfig
from flantune.selfinstruct.generator import DecodingGenerator, Generation, Generator, Sampling
from flantune.selfinstruct.novelty import NoveltyIndex, rouge_l_fmeasure
from flantune.selfinstruct.pipeline import RunState, SelfInstruct, SelfInstructError, self_instruct
from flantune.selfinstruct.seeds import Instance, SeedTask, default_seed_path, load_seed_tasks
from flantune.selfinstruct.task import register_self_instruct_task

__all__ = [
    "DecodingGenerator", "FilterConfig", "Generation", "Generator", "Instance", "NoveltyIndex",
    "RunState", "Sampling", "SeedTask", "SelfInstruct", "SelfInstructConfig",
    "SelfInstructError", "default_seed_path", "load_seed_tasks", "register_self_instruct_task",
    "rouge_l_fmeasure", "self_instruct",
]
