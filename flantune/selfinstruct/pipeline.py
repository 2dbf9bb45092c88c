"""The Self-Instruct round loop: prompt, generate, parse, filter, classify, make instances.

Every random choice comes from ``numpy.random.default_rng([seed, round, stage])`` and every
sampled generation from the seed ``(seed * 1_000_003 + round) * 4 + stage``, so the same seed,
generator and configuration give the same file, and a run resumed after any round (its state
is written atomically after each one) continues exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flantune.selfinstruct import filters, parsing, prompts
from flantune.selfinstruct.config import SelfInstructConfig
from flantune.selfinstruct.generator import Generation, Generator, Sampling, as_generations
from flantune.selfinstruct.novelty import NoveltyIndex
from flantune.selfinstruct.output import read_json, write_outputs
from flantune.selfinstruct.seeds import Instance, SeedTask, load_seed_tasks

STATE_FILE = "state.json"
STATE_VERSION = 1
INSTRUCTIONS, CLASSIFY, INSTANCES = 0, 1, 2


class SelfInstructError(RuntimeError):
    """A run cannot start or resume; the message says why and what to do."""


@dataclasses.dataclass
class RunState:
    """Everything a resumed run needs: written after each round."""

    rounds_done: int = 0
    pool: list[str] = dataclasses.field(default_factory=list)  # generated instructions
    tasks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per-round counts
    similarities: list[float] = dataclasses.field(default_factory=list)  # max ROUGE-L each
    generated_tokens: int = 0


def _rng(config: SelfInstructConfig, round_number: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, round_number, stage])


def _generation_seed(config: SelfInstructConfig, round_number: int, stage: int) -> int:
    return ((config.seed * 1_000_003 + round_number) * 4 + stage) % (2**31)


def _sample(rng: np.random.Generator, items: Sequence[Any], count: int) -> list[Any]:
    return [items[i] for i in rng.choice(len(items), size=count, replace=False)]


def classification_examples(seeds: Sequence[SeedTask], count: int) -> list[SeedTask]:
    """The few-shot examples of the yes/no prompt: seed tasks alternating no/yes, in file
    order, so that both answers are shown."""
    yes = [t for t in seeds if t.is_classification]
    no = [t for t in seeds if not t.is_classification]
    if not yes or not no:
        raise SelfInstructError("the seed tasks need both classification and other tasks: "
                                "the classification prompt shows an example of each answer.")
    chosen = []
    for index in range(count):
        side = no if index % 2 == 0 else yes
        if index // 2 < len(side):
            chosen.append(side[index // 2])
    return chosen


class SelfInstruct:
    """One run: ``SelfInstruct(config, generator).run()`` (resumes what ``output_dir`` holds)."""

    def __init__(self, config: SelfInstructConfig, generator: Generator,
                 on_round: Callable[[dict[str, Any]], None] | None = None):
        self.config, self.generator, self.on_round = config, generator, on_round
        self.seeds = load_seed_tasks(config.seed_path)
        human = config.prompt_instructions - config.machine_instructions
        if len(self.seeds) < config.prompt_instructions:
            raise SelfInstructError(
                f"{len(self.seeds)} seed tasks, but each prompt shows "
                f"{config.prompt_instructions} instructions ({human} of them seed tasks before "
                "the pool has generated ones); add seed tasks or lower prompt_instructions.")
        self.examples = classification_examples(self.seeds, config.classification_examples)
        self.dir = Path(config.output_dir)
        self.state = self._load_state()
        self.index = NoveltyIndex([t.instruction for t in self.seeds] + self.state.pool,
                                  threshold=config.similarity_threshold)

    # -- state
    def _identity(self) -> dict[str, Any]:
        seed_text = "\n".join(json.dumps(t.record(), sort_keys=True) for t in self.seeds)
        return {"version": STATE_VERSION, "config": self.config.fingerprint(),
                "seed_tasks_sha256": hashlib.sha256(seed_text.encode()).hexdigest()}

    def _load_state(self) -> RunState:
        path = self.dir / STATE_FILE
        if not path.exists():
            return RunState()
        try:
            saved = read_json(path)
        except ValueError as err:
            raise SelfInstructError(str(err)) from None
        if saved.get("identity") != self._identity():
            raise SelfInstructError(
                f"{path} belongs to a run with another configuration or seed set; resume it "
                "with the same settings, or give a new output_dir (SELF_INSTRUCT_DIR).")
        return RunState(**saved["state"])

    def _save(self) -> None:
        write_outputs(self.dir, {"identity": self._identity(),
                                 "state": dataclasses.asdict(self.state)},
                      self.state, self.config)

    # -- generation
    def _generate(self, texts: list[str], sampling: Sampling, round_number: int,
                  stage: int) -> list[Generation]:
        if not texts:
            return []
        out = as_generations(self.generator(texts, sampling,
                                            _generation_seed(self.config, round_number, stage)),
                             texts)
        self.state.generated_tokens += sum(g.num_tokens for g in out)
        return out

    def instruction_prompts(self, round_number: int) -> list[str]:
        """This round's instruction prompts (seeded sample of seed and generated
        instructions, shuffled)."""
        rng = _rng(self.config, round_number, INSTRUCTIONS)
        seeds = [t.instruction for t in self.seeds]
        texts = []
        for _ in range(self.config.prompts_per_round):
            machine = min(self.config.machine_instructions, len(self.state.pool))
            chosen = _sample(rng, self.state.pool, machine) + _sample(
                rng, seeds, self.config.prompt_instructions - machine)
            rng.shuffle(chosen)
            texts.append(prompts.instruction_prompt(chosen))
        return texts

    def _new_instructions(self, round_number: int, counts: Counter) -> list[str]:
        generations = self._generate(self.instruction_prompts(round_number),
                                     self.config.instruction_sampling, round_number,
                                     INSTRUCTIONS)
        kept = []
        for generation in generations:
            items = parsing.parse_instructions(
                generation.text, self.config.prompt_instructions + 1, self.config.last_number,
                generation.truncated)
            for item in items:
                counts["instructions_generated"] += 1
                text = filters.normalize_instruction(item.text)
                reason = filters.instruction_rejection(text, item.complete, self.config.filters)
                if reason is None:
                    novel, score, _ = self.index.check_and_add(text)
                    self.state.similarities.append(float(score))
                    if not novel:
                        reason = "similar"
                if reason is None:
                    kept.append(text)
                    self.state.pool.append(text)
                    counts["instructions_kept"] += 1
                else:
                    counts[f"instruction_rejected/{reason}"] += 1
        return kept

    def _classify(self, instructions: list[str], round_number: int,
                  counts: Counter) -> list[bool]:
        texts = [prompts.classification_prompt(self.examples, i) for i in instructions]
        answers = self._generate(texts, self.config.classification_sampling, round_number,
                                 CLASSIFY)
        flags = []
        for answer in answers:
            flag = parsing.parse_is_classification(answer.text)
            if flag is None:
                counts["classification_unclear"] += 1
            flags.append(bool(flag))
            counts["classification_yes" if flag else "classification_no"] += 1
        return flags

    def _instances(self, instructions: list[str], flags: list[bool], round_number: int,
                   counts: Counter) -> list[dict[str, Any]]:
        rng = _rng(self.config, round_number, INSTANCES)
        texts = []
        for instruction, flag in zip(instructions, flags, strict=True):
            same_kind = [t for t in self.seeds if t.is_classification == flag]
            examples = _sample(rng, same_kind, min(self.config.instance_examples,
                                                   len(same_kind)))
            texts.append(prompts.instance_prompt(examples, instruction, flag))
        generations = self._generate(texts, self.config.instance_sampling, round_number,
                                     INSTANCES)
        tasks = []
        for instruction, flag, generation in zip(instructions, flags, generations, strict=True):
            parse = parsing.parse_output_first if flag else parsing.parse_input_first
            instances: list[Instance] = parse(generation.text, generation.truncated)
            counts["instances_generated"] += len(instances)
            verdict = filters.filter_instances(instances)
            for reason, number in verdict.rejected.items():
                counts[f"instance_rejected/{reason}"] += number
            if verdict.task_rejection is not None:
                counts[f"task_rejected/{verdict.task_rejection}"] += 1
                continue
            counts["instances_kept"] += len(verdict.kept)
            counts["tasks_kept"] += 1
            tasks.append({"id": f"self_instruct_{round_number}_{len(tasks)}",
                          "instruction": instruction,
                          "instances": [{"input": i.input, "output": i.output}
                                        for i in verdict.kept],
                          "is_classification": flag, "round": round_number})
        return tasks

    def round(self) -> dict[str, Any]:
        """Runs the next round, saves the state and outputs, and returns its counts."""
        number = self.state.rounds_done
        counts: Counter = Counter()
        instructions = self._new_instructions(number, counts)
        flags = self._classify(instructions, number, counts)
        self.state.tasks += self._instances(instructions, flags, number, counts)
        summary = {"round": number, **dict(sorted(counts.items()))}
        self.state.rounds.append(summary)
        self.state.rounds_done = number + 1
        self._save()
        if self.on_round is not None:
            self.on_round(summary)
        return summary

    def done(self) -> bool:
        return (len(self.state.tasks) >= self.config.num_tasks
                or self.state.rounds_done >= self.config.max_rounds)

    def run(self) -> RunState:
        """Rounds until ``num_tasks`` tasks are kept or ``max_rounds`` have run."""
        while not self.done():
            self.round()
        if not self.state.rounds:
            self._save()
        return self.state


def self_instruct(config: SelfInstructConfig, generator: Generator,
                  on_round: Callable[[dict[str, Any]], None] | None = None) -> RunState:
    """Runs (or resumes) a Self-Instruct run; see :class:`SelfInstruct`."""
    return SelfInstruct(config, generator, on_round).run()
