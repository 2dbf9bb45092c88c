"""A scripted generator: exact, seed-dependent answers to the three Self-Instruct prompts."""

import numpy as np

from flantune.selfinstruct import Generation

WORDS = ("river mountain budget recipe poem letter stock planet guitar garden lesson city "
         "bridge coffee engine novel market storm health robot soccer theory ocean museum").split()
VERBS = ("Explain", "Summarize", "Compare", "List", "Describe", "Suggest", "Rank", "Classify")


class ScriptedGenerator:
    """Instruction prompts get a numbered list (one truncated item, one too short, one
    blacklisted, one repeat of a seed), the yes/no prompt "Yes" for "Classify" tasks, and
    instance prompts two instances. Records every call."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[tuple[list[str], object, int]] = []
        self.fail_on_call = fail_on_call

    def _instructions(self, rng, seed_instruction):
        items = []
        for _ in range(3):
            words = rng.choice(WORDS, size=6, replace=True)
            items.append(f"{rng.choice(VERBS)} the {' '.join(words)}")
        items += ["Hi there", "Draw the river of the mountain nicely", seed_instruction,
                  "Name the capital city of every country in Europe"]
        listed = "\n".join(f"{n}. {t}" for n, t in enumerate(items, start=9))
        return " " + listed.removeprefix("9. ") + "\n16. Compare the unfinished"

    def __call__(self, prompts, sampling, seed):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("interrupted")
        self.calls.append((list(prompts), sampling, seed))
        out = []
        for row, prompt in enumerate(prompts):
            rng = np.random.default_rng([seed, row])
            task = prompt.rsplit("Task: ", 1)[-1].split("\n")[0]
            if prompt.startswith("Come up with a series of tasks"):
                seed_line = prompt.split("\n")[1].split(". ", 1)[1]
                out.append(Generation(self._instructions(rng, seed_line), truncated=True,
                                      num_tokens=40))
            elif prompt.endswith("Is it classification?"):
                out.append(" Yes" if task.startswith("Classify") else " No")
            elif prompt.endswith("Class label:"):
                out.append(f" Good\nInput: {task[-12:]}\nClass label: Bad\nInput: {row}")
            else:
                out.append(f"\nInput: {task[:10]}\nOutput: {task[-10:]}\nExample 2\n"
                           "Output: Done.\n\nTask: next")
        return out
