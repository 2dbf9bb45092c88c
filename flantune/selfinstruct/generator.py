"""The generator interface: prompts in, generated texts out.

Anything with the signature of :class:`Generator` can drive a Self-Instruct run: a user's
served model wrapped in a function, a scripted generator in tests, or
:class:`DecodingGenerator`, flantune's own batched (and mesh-sharded) decoding of a flantune,
Hugging Face or adapter checkpoint. A callable may return plain strings; they count as
finished generations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to sample one kind of generation (temperature 0: greedy)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"Sampling{dataclasses.astuple(self)}: need temperature >= 0, "
                             "0 < top_p <= 1 and max_new_tokens >= 1.")


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    truncated: bool = False  # stopped by max_new_tokens rather than by the end of sequence
    num_tokens: int = 0  # generated tokens (0 when the generator does not say)


class Generator(Protocol):
    def __call__(self, prompts: Sequence[str], sampling: Sampling,
                 seed: int) -> Sequence[Generation | str]: ...


def as_generations(outputs: Sequence[Generation | str], prompts: Sequence[str]
                   ) -> list[Generation]:
    """A generator's outputs checked (one per prompt) and made Generations."""
    outputs = list(outputs)
    if len(outputs) != len(prompts):
        raise ValueError(f"the generator returned {len(outputs)} outputs for {len(prompts)} "
                         "prompts; it must return one per prompt, in order.")
    result = []
    for index, out in enumerate(outputs):
        if isinstance(out, str):
            out = Generation(out)
        if not isinstance(out, Generation):
            raise TypeError(f"generator output {index} is a {type(out).__name__}; return str "
                            "or flantune.selfinstruct.Generation.")
        result.append(out)
    return result


class DecodingGenerator:
    """flantune's decoding as a generator: prompts are tokenized with ``vocabulary``, EOS
    appended as flantune tasks do, cut from the left to ``inputs_length`` (the end of a prompt
    says what to write next) and decoded ``batch_size`` at a time by
    :class:`flantune.evaluation.predict.Predictor` (sharded over ``mesh`` when given)."""

    def __init__(self, spec: Any, params: Any, vocabulary: Any, *, inputs_length: int = 512,
                 batch_size: int = 8, mesh: Any = None, rules: Any = None):
        self.spec, self.params, self.vocabulary = spec, params, vocabulary
        self.inputs_length, self.batch_size = inputs_length, batch_size
        self.mesh, self.rules = mesh, rules
        self._predictors: dict[Sampling, Any] = {}
        self.prompts_cut = 0  # prompts longer than inputs_length (their start was dropped)
        self.tokens = 0  # generated tokens, all calls

    def _predictor(self, sampling: Sampling) -> Any:
        from flantune.decoding import DecodeConfig
        from flantune.evaluation.predict import Predictor

        if sampling not in self._predictors:
            method = "sample" if sampling.temperature > 0 else "greedy"
            config = DecodeConfig(method=method, temperature=sampling.temperature or 1.0,
                                  top_p=sampling.top_p, eos_id=self.vocabulary.eos_id,
                                  pad_id=self.vocabulary.pad_id)
            self._predictors[sampling] = Predictor(
                self.spec, config, {"inputs": self.inputs_length,
                                    "targets": sampling.max_new_tokens},
                self.batch_size, mesh=self.mesh, rules=self.rules)
        return self._predictors[sampling]

    def _tokens(self, prompt: str) -> np.ndarray:
        ids = [*self.vocabulary.encode(prompt), self.vocabulary.eos_id]
        if len(ids) > self.inputs_length:
            self.prompts_cut += 1
            ids = ids[len(ids) - self.inputs_length:]
        return np.asarray(ids, np.int32)

    def __call__(self, prompts: Sequence[str], sampling: Sampling,
                 seed: int) -> list[Generation]:
        predictor = self._predictor(sampling)
        rng = jax.random.key(seed) if sampling.temperature > 0 else None
        predictions = predictor(self.params, [self._tokens(p) for p in prompts], rng)
        out = []
        for prediction in predictions:
            ids = [int(i) for i in prediction.tokens]
            # Predictor cuts at EOS; a full-length row without it hit the length limit.
            out.append(Generation(self.vocabulary.decode(ids),
                                  truncated=len(ids) >= sampling.max_new_tokens,
                                  num_tokens=len(ids)))
        self.tokens += sum(g.num_tokens for g in out)
        return out
