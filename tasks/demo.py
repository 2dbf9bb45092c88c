"""The embedded demo: reasoning-gym generators as FLAN-style templated tasks.

Twelve training tasks (mixed in ``demo``) and four held-out tasks (``demo_heldout``) for
zero-shot evaluation. All data is generated offline, deterministically, by index; the
generators were chosen because they are fast, seed-reproducible across processes and have
single-line answers (``time_intervals`` and ``calendar_arithmetic`` were left out: their items
depend on today's date).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flantune
from flantune.data.seeding import rng_for, stable_hash
from flantune.data.sources import ReasoningGymSource
from flantune.data.templates import COT_TEMPLATES, QA_TEMPLATES, Template, cot_template
from flantune.data.variants import FewShotConfig
from flantune.evaluation.reasoning_gym import reasoning_gym_score, record_target_postprocessor
from flantune.metrics import exact_match

# Records per split; the train sizes differ so that examples-proportional mixing matters.
TRAIN_SIZES = {
    "gsm_symbolic": 20_000, "family_relationships": 8_000, "syllogism": 8_000,
    "basic_arithmetic": 20_000, "chain_sum": 20_000, "gcd": 6_000, "caesar_cipher": 10_000,
    "spell_backward": 6_000, "word_sorting": 10_000, "letter_counting": 6_000,
    "leg_counting": 6_000, "sentence_reordering": 10_000,
}
HELDOUT = ("lcm", "fraction_simplification", "number_sorting", "prime_factorization")
EVAL_SIZE = 500
# reasoning-gym builds item i from Random(seed + i): splits need seeds further apart than
# their sizes, or validation would be the train set shifted by one.
SPLIT_SEEDS = {"train": 0, "validation": 10_000_000, "test": 20_000_000}
MIXTURE_CAP = 10_000
# Few-shot prompts stay within the demo's 512-token inputs.
FEW_SHOT = FewShotConfig(max_exemplars=3, max_input_tokens=480, pool_size=1000)


def generator(name: str, train_size: int = EVAL_SIZE):
    """The task function of a reasoning-gym generator: one seed per split, so splits differ."""

    def records(split: str) -> ReasoningGymSource:
        size = train_size if split == "train" else EVAL_SIZE
        return ReasoningGymSource(name, size=size, seed=SPLIT_SEEDS[split])

    records.__qualname__ = f"demo.{name}"
    return records


def rg_task(name: str, templates, *, record_fn=None, has_options: bool = False,
            cot: bool = False, cluster: str, heldout: bool = False):
    """Registers ``rg_{name}`` for a reasoning-gym generator."""
    size = EVAL_SIZE if heldout else TRAIN_SIZES[name]
    return flantune.task(
        f"rg_{name}", templates=templates, splits=("train", "validation", "test"),
        record_fn=record_fn, has_options=has_options, few_shot=FEW_SHOT,
        postprocess_fn=record_target_postprocessor(chain_of_thought=cot),
        metric_fns=[exact_match, reasoning_gym_score],
        cluster=cluster)(generator(name, size))


def with_fields(**derive):
    """A record_fn adding fields computed from the record (and its metadata)."""

    def record_fn(record: dict[str, Any]) -> dict[str, Any]:
        for field, fn in derive.items():
            record[field] = fn(record, record.get("metadata", {}))
        return record

    return record_fn


# --------------------------------------------------------------------------- arithmetic

def _running_sum(expression: str) -> str:
    tokens = expression.split()
    total, steps = int(tokens[0]), []
    for op, value in zip(tokens[1::2], tokens[2::2], strict=True):
        new = total + int(value) if op == "+" else total - int(value)
        steps.append(f"{total} {op} {value} = {new}")
        total = new
    return ". ".join(steps) + "."


def _euclid(numbers: list[int]) -> str:
    a, b = max(numbers), min(numbers)
    steps = []
    while b:
        steps.append(f"{a} = {a // b} x {b} + {a % b}")
        a, b = b, a % b
    return "By Euclid's algorithm: " + "; ".join(steps) + f". The last non-zero remainder is {a}."


def _gsm_rationale(answer_cot: str) -> str:
    """The generator's worked solution without its "#### <answer>" line."""
    lines = [line for line in answer_cot.strip().splitlines() if not line.startswith("####")]
    return "\n".join(lines).strip()


ARITHMETIC = [
    *QA_TEMPLATES[:4],
    Template("Work out the value.\n\n{question}", "{answer}", name="arith_value"),
    Template("{question}\nReply with a number only.", "{answer}", name="arith_number"),
]
rg_task("basic_arithmetic", ARITHMETIC, cluster="arithmetic")
rg_task("chain_sum", [
    *ARITHMETIC,
    cot_template("{question}\n\nAdd and subtract from left to right.", name="chain_cot"),
    cot_template("Compute step by step: {expression}", name="chain_cot_expression"),
], record_fn=with_fields(rationale=lambda r, m: _running_sum(m["expression"]),
                         expression=lambda r, m: m["expression"]), cot=True, cluster="arithmetic")
rg_task("gsm_symbolic", [
    *QA_TEMPLATES[:4], *COT_TEMPLATES,
    Template("Read the word problem and give the final number.\n\n{question}", "{answer}",
             name="gsm_final_number"),
], record_fn=with_fields(rationale=lambda r, m: _gsm_rationale(m["answer_cot"])), cot=True,
    cluster="arithmetic")
rg_task("gcd", [
    *QA_TEMPLATES[:3],
    Template("What is the greatest common divisor of {numbers}?", "{answer}", name="gcd_short"),
    cot_template("What is the greatest common divisor of {numbers}? Show the steps.",
                 name="gcd_cot"),
], record_fn=with_fields(numbers=lambda r, m: " and ".join(map(str, m["numbers"])),
                         rationale=lambda r, m: _euclid(m["numbers"])), cot=True,
    cluster="number_theory")

# --------------------------------------------------------------------------- logic

RELATIONS = ("mother", "father", "son", "daughter", "husband", "wife", "brother", "sister",
             "grandmother", "grandfather", "grandson", "granddaughter", "uncle", "aunt",
             "nephew", "niece", "mother-in-law", "father-in-law", "son-in-law",
             "daughter-in-law", "brother-in-law", "sister-in-law")


def _relation_options(record: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[str]:
    """The gold relation and three others, in an order seeded by the question."""
    gold = record["answer"]
    rng = rng_for(0, "family_options", stable_hash(record["question"]))
    others = [r for r in RELATIONS if r != gold]
    picks = [others[i] for i in rng.choice(len(others), size=3, replace=False)] + [gold]
    return [picks[i] for i in rng.permutation(len(picks))]


rg_task("family_relationships", [
    *QA_TEMPLATES,
    Template("Family tree:\n{story}\n\nHow is {person1} related to {person2}?\n{options_}",
             "{answer}", name="family_how_related"),
    Template("{story}\n\nQuestion: {person1} is {person2}'s what?\n{options_}", "{answer}",
             name="family_is_what"),
], record_fn=with_fields(options=_relation_options,
                         story=lambda r, m: r["question"].split("\n\n")[0],
                         person1=lambda r, m: m["person1"], person2=lambda r, m: m["person2"]),
    has_options=True, cluster="logic")
rg_task("syllogism", [
    *QA_TEMPLATES,
    Template("Premises: {premise1}. {premise2}.\nConclusion: {conclusion}.\n\nIs the conclusion "
             "valid?\n{options_}", "{answer}", name="syllogism_valid"),
    Template("If {premise1_lower} and {premise2_lower}, must it be true that "
             "{conclusion_lower}?\n{options_}", "{answer}", name="syllogism_must"),
], record_fn=with_fields(options=lambda r, m: ["Yes", "No"],
                         premise1=lambda r, m: m["premise1"], premise2=lambda r, m: m["premise2"],
                         conclusion=lambda r, m: m["conclusion"],
                         premise1_lower=lambda r, m: m["premise1"][0].lower() + m["premise1"][1:],
                         premise2_lower=lambda r, m: m["premise2"][0].lower() + m["premise2"][1:],
                         conclusion_lower=lambda r, m: m["conclusion"][0].lower()
                         + m["conclusion"][1:]),
    has_options=True, cluster="logic")

# --------------------------------------------------------------------------- words and letters


def _spell_rationale(record, metadata) -> str:
    letters = list(metadata["word"])
    return ("The letters are " + ", ".join(letters) + ". In reverse order: "
            + ", ".join(reversed(letters)) + ".")


rg_task("spell_backward", [
    *QA_TEMPLATES[:3],
    Template("Reverse the letters of \"{word}\".", "{answer}", name="spell_reverse"),
    Template("Write {word} from the last letter to the first.", "{answer}", name="spell_last"),
    cot_template("Spell \"{word}\" backwards, letter by letter.", name="spell_cot"),
], record_fn=with_fields(word=lambda r, m: m["word"], rationale=_spell_rationale), cot=True,
    cluster="words")


def _count_rationale(record, metadata) -> str:
    letter = metadata["target_letter"]
    parts = [f"{word}: {word.count(letter)}" for word in metadata["span"]]
    return f"Counting \"{letter}\" word by word: " + ", ".join(parts) + "."


rg_task("letter_counting", [
    *QA_TEMPLATES[:3],
    Template("Count the letter {letter} in: {text}", "{answer}", name="count_short"),
    cot_template("How often does \"{letter}\" occur in \"{text}\"? Count word by word.",
                 name="count_cot"),
], record_fn=with_fields(letter=lambda r, m: m["target_letter"],
                         text=lambda r, m: " ".join(m["span"]), rationale=_count_rationale),
    cot=True, cluster="words")
rg_task("word_sorting", [
    *QA_TEMPLATES[:3],
    Template("Sort in {direction} ASCII order, comma-separated: {words}", "{answer}",
             name="sort_short"),
    Template("Put these words in {direction} order by character codes: {words}", "{answer}",
             name="sort_codes"),
], record_fn=with_fields(direction=lambda r, m: m["direction"],
                         words=lambda r, m: ", ".join(m["transformed_words"])),
    cluster="words")
rg_task("sentence_reordering", [
    *QA_TEMPLATES[:3],
    Template("Unscramble into a sentence: {scrambled}", "{answer}", name="reorder_unscramble"),
    Template("These words are out of order: {scrambled}\nWrite the sentence.", "{answer}",
             name="reorder_write"),
], record_fn=with_fields(scrambled=lambda r, m: r["question"].split(": ", 1)[-1]),
    cluster="words")
rg_task("caesar_cipher", [
    *QA_TEMPLATES[:3],
    Template("Decode \"{cipher}\"; each letter was shifted {rotation} places forward.",
             "{answer}", name="caesar_shift"),
    cot_template("Decrypt the Caesar cipher \"{cipher}\".", name="caesar_cot"),
], record_fn=with_fields(cipher=lambda r, m: m["cipher_text"],
                         rotation=lambda r, m: m["rotation"],
                         rationale=lambda r, m: f"Every letter is shifted {m['rotation']} places;"
                         f" shifting each back by {m['rotation']} gives {m['clear_text']}."),
    cot=True, cluster="words")
rg_task("leg_counting", [
    *QA_TEMPLATES,
    Template("Total legs of {animals}?", "{answer}", name="legs_total"),
], record_fn=with_fields(animals=lambda r, m: ", ".join(f"{n} {a}" for a, n in
                                                         m["animals"].items())),
    cluster="arithmetic")

# --------------------------------------------------------------------------- held out


def _lcm_rationale(record, metadata) -> str:
    a, b = metadata["numbers"][:2]
    return f"gcd({a}, {b}) = {math.gcd(a, b)}, so lcm = {a} x {b} / {math.gcd(a, b)}."


rg_task("lcm", [*QA_TEMPLATES[:4], cot_template("Find the LCM of {numbers}.", name="lcm_cot")],
        record_fn=with_fields(numbers=lambda r, m: " and ".join(map(str, m["numbers"])),
                              rationale=_lcm_rationale), cot=True, cluster="number_theory",
        heldout=True)
rg_task("fraction_simplification", QA_TEMPLATES[:4], cluster="number_theory", heldout=True)
rg_task("prime_factorization", QA_TEMPLATES[:4], cluster="number_theory", heldout=True)
rg_task("number_sorting", QA_TEMPLATES[:4], cluster="words", heldout=True)


# --------------------------------------------------------------------------- mixtures

def _variant_members(names, variants):
    """Each task's registered variants; a task's examples-proportional rate is split evenly
    over its variants, so a task with options is not counted twice."""
    registered = set(flantune.registered_task_names())
    rate = flantune.examples_proportional(MIXTURE_CAP)
    members = []
    for name in names:
        present = [f"rg_{name}_{v}" for v in variants if f"rg_{name}_{v}" in registered]
        share = 1.0 / max(len(present), 1)
        members += [(task, lambda t, share=share: share * rate(t)) for task in present]
    return members


@flantune.mixture("demo_zeroshot")
def demo_zeroshot():
    """Zero-shot variants of the twelve training tasks, examples-proportional with a cap."""
    return _variant_members(TRAIN_SIZES, ("zsnoopt", "zsopt"))


@flantune.mixture("demo_fewshot")
def demo_fewshot():
    """Few-shot variants of the twelve training tasks."""
    return _variant_members(TRAIN_SIZES, ("fsnoopt", "fsopt"))


@flantune.mixture("demo")
def demo():
    """The demo training mixture: 80% zero-shot and 20% few-shot, as nested submixtures."""
    return [("demo_zeroshot", 0.8), ("demo_fewshot", 0.2)]


@flantune.mixture("demo_heldout", default_rate=1.0)
def demo_heldout():
    """Held-out tasks (zero-shot), never in the training mixture."""
    return [f"rg_{n}_zsnoopt" for n in HELDOUT]
