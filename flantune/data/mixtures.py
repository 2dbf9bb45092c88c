"""Mixtures: the ``@flantune.mixture`` decorator, mixing rates, and exact per-task shares.

Mixtures are ordinary ``seqio.Mixture`` objects in SeqIO's registry, so nesting (a sub-mixture
with a weight) follows SeqIO's semantics: a task's share inside a sub-mixture is scaled by the
sub-mixture's weight over its total rate. :func:`task_shares` turns any mixture into the flat
probability of each leaf task, which is what flantune's sampler draws from.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

import seqio

from flantune.data.errors import DataError, UnknownNameError
from flantune.data.tasks import FlanTask

Rate = float | Callable[[seqio.Task], float]
Member = str | FlanTask | seqio.Task | seqio.Mixture
MemberSpec = Member | tuple[Member, Rate]


def examples_proportional(cap: int | None = None, *, temperature: float = 1.0,
                          scale: float = 1.0, split: str = "train"
                          ) -> Callable[[seqio.Task], float]:
    """Rate = number of examples, capped at ``cap`` (FLAN used 3,000), then ``** (1/temperature)``.

    The same formula as SeqIO's ``mixing_rate_num_examples`` (scale, cap, then temperature);
    written out because SeqIO's version logs a warning on every call for uncached tasks.
    """
    if cap is not None and cap <= 0:
        raise DataError(f"examples_proportional: cap must be positive, got {cap}.")
    if temperature <= 0:
        raise DataError(f"examples_proportional: temperature must be positive, got {temperature}.")

    def rate(task: seqio.Task) -> float:
        count = task.num_input_examples(split)
        if count is None:
            raise DataError(f"Task '{task.name}' does not know its number of '{split}' examples; "
                            "give it a number rate instead of examples_proportional.")
        value = count * scale
        if cap is not None:
            value = min(value, cap)
        return value ** (1.0 / temperature)

    rate.__name__ = f"examples_proportional(cap={cap}, temperature={temperature})"
    return rate


def temperature_scaled(temperature: float, cap: int | None = None) -> Callable[[seqio.Task], float]:
    """Temperature sampling over example counts (T=1 proportional, larger T flatter)."""
    return examples_proportional(cap, temperature=temperature)


def get_provider(name: str) -> seqio.Task | seqio.Mixture:
    """The registered task or mixture called ``name``, or an error listing close names."""
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownNameError(
        f"No task or mixture named '{name}' is registered.{hint} Task modules register names "
        f"when imported (e.g. --module_import=flantune.tasks); {len(known)} names are "
        "registered now.")


def _member_name(member: Member) -> str:
    if isinstance(member, FlanTask):
        return member.name
    if isinstance(member, seqio.Task | seqio.Mixture):
        return member.name
    if isinstance(member, str):
        get_provider(member)  # raises a clear error for unknown names
        return member
    raise DataError(f"A mixture member must be a name, task or mixture, got {member!r}.")


def register_mixture(name: str, members: Iterable[MemberSpec], *,
                     default_rate: Rate | None = None) -> seqio.Mixture:
    """Registers a ``seqio.Mixture`` of tasks and sub-mixtures with rates."""
    entries: list[tuple[str, Rate]] = []
    for spec in members:
        member, rate = spec if isinstance(spec, tuple) else (spec, default_rate)
        if rate is None:
            raise DataError(f"Mixture '{name}': member {spec!r} has no rate and the mixture has no "
                            "default_rate.")
        if isinstance(rate, int | float) and rate < 0:
            raise DataError(f"Mixture '{name}': member {spec!r} has a negative rate.")
        entries.append((_member_name(member), rate))
    if not entries:
        raise DataError(f"Mixture '{name}' has no members.")
    candidate = seqio.Mixture(name, entries)  # validated before it enters the registry
    if sum(float(candidate.get_rate(task)) for task in candidate.tasks) <= 0:
        raise DataError(f"Mixture '{name}': every member has rate 0.")
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, entries)


def mixture(name: str, *, default_rate: Rate | None = None
            ) -> Callable[[Callable[[], Iterable[MemberSpec]]], seqio.Mixture]:
    """Registers the members returned by the decorated function as mixture ``name``.

    The function returns names (or tasks/mixtures), optionally paired with a rate: a number
    or a function of the task such as :func:`examples_proportional`. Sub-mixtures take a number.
    """

    def decorate(fn: Callable[[], Iterable[MemberSpec]]) -> seqio.Mixture:
        return register_mixture(name, fn(), default_rate=default_rate)

    return decorate


def task_shares(provider: seqio.Task | seqio.Mixture | str) -> dict[str, float]:
    """The probability of each leaf task (sorted by name) in a mixture; a task is ``{name: 1}``."""
    if isinstance(provider, str):
        provider = get_provider(provider)
    if isinstance(provider, seqio.Task):
        return {provider.name: 1.0}
    rates = {task.name: float(provider.get_rate(task)) for task in provider.tasks}
    total = sum(rates.values())
    if total <= 0:
        raise DataError(f"Mixture '{provider.name}' has a total rate of 0.")
    return {name: rate / total for name, rate in sorted(rates.items())}


def leaf_tasks(provider: seqio.Task | seqio.Mixture | str) -> list[seqio.Task]:
    """The leaf tasks of a mixture (sorted by name), or ``[task]``."""
    if isinstance(provider, str):
        provider = get_provider(provider)
    if isinstance(provider, seqio.Task):
        return [provider]
    return list(provider.tasks)


def task_names(provider: seqio.Task | seqio.Mixture | str) -> Sequence[str]:
    return [task.name for task in leaf_tasks(provider)]
