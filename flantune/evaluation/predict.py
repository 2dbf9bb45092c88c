"""Predictions: decode each example's inputs with the KV-cache search of
:mod:`flantune.decoding`, in fixed-shape batches, and turn the tokens back into text."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import flantune.partitioning as partitioning
from flantune.decoding import DecodeConfig, make_generate_fn
from flantune.evaluation.examples import truncate
from flantune.evaluation.scoring import process_rows
from flantune.train.state import ModelSpec

PyTree = Any


@dataclasses.dataclass
class Prediction:
    tokens: np.ndarray  # generated ids before EOS
    score: float  # summed log-probability (beam search: the length-penalised score)


def decode_config_for(spec: ModelSpec, config: DecodeConfig, targets_length: int,
                      chat_stop_id: int | None = None) -> DecodeConfig:
    """``config`` with the decode length of the targets feature and, for decoder-only models,
    the sequences flantune's PrefixLM features train on: BOS 0 before each prompt (unless
    ``bos_id`` is set) and bidirectional attention over the prompt. Chat prompts
    (``chat_stop_id`` set) are decoded causally as given, stopping at the end-of-turn id."""
    updates: dict[str, Any] = {"max_decode_length": targets_length}
    if chat_stop_id is not None:
        if spec.family != "decoder":
            raise ValueError("chat tasks decode with decoder-only models.")
        updates.update(prefix_lm=False, bos_id=None, eos_id=chat_stop_id)
    elif spec.family == "decoder":
        updates["prefix_lm"] = True
        if config.bos_id is None:
            updates["bos_id"] = 0
    return dataclasses.replace(config, **updates)


class Predictor:
    """Generates for lists of input token arrays, ``batch_size`` prompts per compiled call."""

    def __init__(self, spec: ModelSpec, decode: DecodeConfig,
                 task_feature_lengths: dict[str, int], batch_size: int,
                 mesh: Mesh | None = None, rules: partitioning.LogicalAxisRules | None = None,
                 chat_stop_id: int | None = None):
        self.spec, self.batch_size, self.mesh = spec, batch_size, mesh
        self.inputs_length = int(task_feature_lengths.get("inputs", 0))
        if not self.inputs_length:
            raise ValueError("decoding needs an 'inputs' length in the task feature lengths.")
        self.config = decode_config_for(spec, decode, int(task_feature_lengths["targets"]),
                                        chat_stop_id)
        if mesh is not None:
            partitioning.check_batch_size(batch_size, mesh)
        # The spec's abstract model: with an adapter attached when it has one.
        self._generate = make_generate_fn(spec.abstract_model(), self.config, mesh, rules)

    def _batch(self, prompts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        length, pad = self.inputs_length, self.config.pad_id
        tokens = np.full((self.batch_size, length), pad, np.int32)
        for row, prompt in enumerate(prompts):
            prompt, _ = truncate(prompt, length, self.config.eos_id)
            if self.spec.family == "enc_dec":
                tokens[row, :prompt.size] = prompt
            else:  # decoder-only prompts are left-padded
                tokens[row, length - prompt.size:] = prompt
        for row in range(len(prompts), self.batch_size):  # dummy rows: one EOS token
            tokens[row, 0 if self.spec.family == "enc_dec" else -1] = self.config.eos_id
        feature = "encoder_input_tokens" if self.spec.family == "enc_dec" else \
            "decoder_input_tokens"
        return {feature: tokens[process_rows(self.batch_size, self.mesh)]}

    def __call__(self, params: PyTree, prompts: Sequence[np.ndarray],
                 rng: jax.Array | None = None,
                 on_batch: Callable[[], None] | None = None) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            key = None if rng is None else jax.random.fold_in(rng, start)
            generated = self._generate(self._batch(chunk), key, params=params)
            for row in range(len(chunk)):
                ids = generated.tokens[row]
                ends = np.flatnonzero(ids == self.config.eos_id)
                ids = ids[:ends[0]] if ends.size else ids[ids != self.config.pad_id]
                out.append(Prediction(tokens=ids, score=float(generated.scores[row])))
            if on_batch is not None:
                on_batch()
        return out
