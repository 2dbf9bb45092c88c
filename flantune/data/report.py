"""What a task or mixture will feed the model: shares, token lengths, truncation, examples.

``flantune inspect NAME`` prints this report; it is computed here, with no printing, so that
tests and notebooks can use the numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import seqio

from flantune.data.chat.tasks import chat_task_for
from flantune.data.mixtures import get_provider
from flantune.data.preference.tasks import preference_task_for
from flantune.data.stream import ExampleStream
from flantune.data.tasks import flan_task_for


@dataclasses.dataclass
class MemberReport:
    """One leaf task of the mixture."""

    task: str
    rate: float
    expected_share: float
    realized_count: int
    realized_share: float
    input_lengths: tuple[int, int, int]  # p50, p95, max (tokens incl. EOS); zeros if none
    target_lengths: tuple[int, int, int]
    truncated: int  # sampled examples longer than a task feature length
    trained_tokens: int  # tokens the loss is on (targets; a conversation's assistant turns)
    total_tokens: int  # every token fed (inputs and targets; a whole conversation)
    # (location, reason) of the records the task's source left out (on_bad_record="skip").
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class MixtureReport:
    name: str
    split: str
    num_examples: int
    task_feature_lengths: dict[str, int]
    structure: list[tuple[str, str]]  # (member, rate description) of the top level
    members: list[MemberReport]
    examples: list[dict[str, Any]]  # rendered samples with "task"


def _percentiles(lengths: list[int]) -> tuple[int, int, int]:
    if not lengths:
        return (0, 0, 0)
    array = np.asarray(lengths)
    return (int(np.percentile(array, 50)), int(np.percentile(array, 95)), int(array.max()))


def _describe_rate(rate: Any) -> str:
    if callable(rate):
        return getattr(rate, "__name__", repr(rate))
    return f"{float(rate):g}"


def _skipped(task_name: str, split: str) -> list[tuple[str, str]]:
    """The records a flantune task's source left out of ``split`` (none for plain seqio)."""
    entry = flan_task_for(task_name)
    task = entry[0] if entry is not None else (chat_task_for(task_name)
                                               or preference_task_for(task_name))
    return list(task.source(split).skipped) if task is not None else []


def _too_long(example: Mapping[str, Any], lengths: Mapping[str, int]) -> bool:
    """Whether a feature converter would cut ``example`` (a conversation: to the sum of the
    lengths, the decoder's sequence length; a preference pair: both sequences to the row)."""
    if "chosen" in example:
        return len(example["chosen"]) + len(example["rejected"]) - 2 > sum(lengths.values())
    if "loss_weights" in example:
        return len(example["targets"]) > sum(lengths.values())
    return any(len(example[f]) > lengths[f] for f in ("inputs", "targets")
               if f in example and f in lengths)


def _as_sequences(example: Mapping[str, Any]) -> Mapping[str, Any]:
    """A preference pair as the report counts it: the prompt as inputs, both completions as
    targets (all trained), the two sequences' tokens as the total; other examples unchanged."""
    if "chosen" not in example:
        return example
    prompt = int(example["prompt_length"])
    completions = np.r_[example["chosen"][prompt:], example["rejected"][prompt:]]
    return {"inputs": example["chosen"][:prompt], "targets": completions,
            "loss_weights": np.ones(completions.size), "pair_tokens": len(example["chosen"])
            + len(example["rejected"]), "chosen": example["chosen"],
            "rejected": example["rejected"]}


def mixture_report(name: str, *, num_examples: int = 2000, split: str = "train", seed: int = 0,
                   task_feature_lengths: Mapping[str, int] | None = None,
                   num_rendered: int = 3, mixing: str = "exact") -> MixtureReport:
    """Samples the first ``num_examples`` slots of ``name``'s stream and summarizes them."""
    lengths = dict(task_feature_lengths or {"inputs": 512, "targets": 128})
    provider = get_provider(name)
    stream = ExampleStream(name, split=split, seed=seed, mixing=mixing)
    counts = np.zeros(len(stream.task_names), dtype=np.int64)
    examples, _ = stream.read(0, num_examples, counts)
    per_task: dict[int, list[dict[str, Any]]] = {}
    for example in examples:
        per_task.setdefault(example["task_index"], []).append(example)

    if isinstance(provider, seqio.Mixture):
        rates = {t.name: float(provider.get_rate(t)) for t in provider.tasks}
        structure = [(member, _describe_rate(rate))
                     for member, rate in provider.rate_per_task_name.items()]
    else:
        rates, structure = {provider.name: 1.0}, [(provider.name, "1")]

    members = []
    for task_id, task_name in enumerate(stream.task_names):
        mine = [_as_sequences(e) for e in per_task.get(task_id, [])]
        inputs = [len(e["inputs"]) for e in mine if "inputs" in e]
        targets = [len(e["targets"]) for e in mine if "targets" in e]
        truncated = sum(_too_long(e, lengths) for e in mine)
        trained = sum(int(np.sum(e["loss_weights"])) if "loss_weights" in e
                      else len(e["targets"]) for e in mine)
        total = sum(e["pair_tokens"] if "pair_tokens" in e else
                    len(e["targets"]) + len(e.get("inputs", ())) + ("decoder_start" in e)
                    for e in mine)
        members.append(MemberReport(
            task=task_name, rate=rates[task_name], expected_share=float(stream.shares[task_id]),
            realized_count=len(mine), realized_share=len(mine) / max(num_examples, 1),
            input_lengths=_percentiles(inputs), target_lengths=_percentiles(targets),
            truncated=int(truncated), trained_tokens=int(trained), total_tokens=int(total),
            skipped=_skipped(task_name, split)))

    rendered = []
    choices = stream.schedule.choices(0, min(num_rendered, num_examples))
    seen = np.zeros(len(stream.task_names), dtype=np.int64)
    for task_id in choices:
        text = stream.reader(int(task_id)).rendered(int(seen[task_id]))
        seen[task_id] += 1
        rendered.append({"task": stream.task_names[task_id], **text})
    return MixtureReport(name=name, split=split, num_examples=num_examples,
                         task_feature_lengths=lengths, structure=structure, members=members,
                         examples=rendered)
