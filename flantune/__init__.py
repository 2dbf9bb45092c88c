"""flantune: FLAN-style multi-task instruction tuning in JAX, built on SeqIO."""

# First, before anything imports JAX: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

# SeqIO imports TensorFlow: load it now, without its C++ start-up lines on stderr.
from flantune.quiet_tensorflow import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from flantune.data import (  # noqa: E402
    FewShotConfig,
    Template,
    cot_template,
    examples_proportional,
    inverted,
    mixture,
    task,
    temperature_scaled,
)
from flantune.data.chat import chat_task  # noqa: E402
from flantune.data.preference import preference_task  # noqa: E402

__version__ = "0.1.0"


def registered_task_names() -> list[str]:
    """Every task name in SeqIO's registry (flantune's and plain seqio tasks)."""
    import seqio

    return sorted(seqio.TaskRegistry.names())


__all__ = [
    "FewShotConfig", "Template", "chat_task", "cot_template", "examples_proportional", "inverted",
    "mixture", "preference_task", "registered_task_names", "task", "temperature_scaled",
]
