"""The FLAN library's mixtures.

- ``flan2021``: every library task (zero-shot; with options where the task has them), mixed
  examples-proportionally with FLAN 2021's cap of 3,000 examples per task.
- ``flan2021_{cluster}``: one cluster's tasks, the same rates.
- ``flan2021_without_{cluster}`` / ``flan2021_heldout_{cluster}``: leave-one-cluster-out
  training mixture, and the held-out cluster's tasks (equal rates) to evaluate on.
- ``flan2022_style``: the Flan 2022 submixture structure over the same tasks: one
  examples-proportional submixture per variant (zero-/few-shot x options/no options, cap
  30,000 as Flan 2022's FLAN submix), weighted by :data:`VARIANT_WEIGHTS`.

Rates are counts of the ``train`` split, read when a mixture is first sampled, so importing
registers the mixtures without touching any data. For that reason they are added to SeqIO's
registry directly rather than with ``flantune.data.register_mixture``, which evaluates every
rate when it registers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import seqio

from flantune.data import examples_proportional, registered_flan_tasks
from flantune.data.tasks import FlanTask
from flantune.data.variants import Variant

from . import (  # noqa: F401 - registers the tasks mixed here
    closed_book_qa,
    commonsense,
    coreference,
    nli,
    paraphrase,
    reading_comprehension,
    sentiment,
    struct_to_text,
    summarization,
    translation,
)
from .common import CLUSTERS, DATASETS

FLAN2021_CAP = 3000
FLAN2022_CAP = 30_000
# Weights of the Flan 2022-style submixtures (Flan 2022 found an even zero-/few-shot mix
# works well; options and no-options split each half evenly).
VARIANT_WEIGHTS = {Variant.ZS_OPT: 0.25, Variant.ZS_NOOPT: 0.25, Variant.FS_OPT: 0.25,
                   Variant.FS_NOOPT: 0.25}


def library_tasks(cluster: str | None = None) -> list[FlanTask]:
    """The library's tasks (of one cluster), in registration order."""
    return [t for t in registered_flan_tasks()
            if t.name in DATASETS and (cluster is None or t.cluster == cluster)]


def add_mixture(name: str, members: Sequence[tuple[str, float | Callable]]) -> seqio.Mixture:
    """Adds (or replaces) a seqio mixture without evaluating its rates."""
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, list(members))


def capped(tasks: Sequence[FlanTask], cap: int = FLAN2021_CAP,
           variant: Variant | None = None) -> list[tuple[str, Callable]]:
    """Each task's default (or given) variant, examples-proportional with ``cap``."""
    rate = examples_proportional(cap)
    return [(t.task_name(variant) if variant else t.name, rate) for t in tasks
            if variant is None or variant in t.variants]


def register_flan2021() -> None:
    add_mixture("flan2021", capped(library_tasks()))
    for cluster in CLUSTERS:
        inside = library_tasks(cluster)
        outside = [t for t in library_tasks() if t.cluster != cluster]
        add_mixture(f"flan2021_{cluster}", capped(inside))
        add_mixture(f"flan2021_without_{cluster}", capped(outside))
        add_mixture(f"flan2021_heldout_{cluster}", [(t.name, 1.0) for t in inside])


def register_flan2022_style(weights: dict[Variant, float] = VARIANT_WEIGHTS) -> None:
    members = []
    for variant, weight in weights.items():
        tasks = capped(library_tasks(), FLAN2022_CAP, variant)
        if tasks and weight > 0:
            add_mixture(f"flan2022_style_{variant.suffix}", tasks)
            members.append((f"flan2022_style_{variant.suffix}", weight))
    add_mixture("flan2022_style", members)


register_flan2021()
register_flan2022_style()
