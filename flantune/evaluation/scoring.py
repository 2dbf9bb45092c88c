"""Log-likelihood of given targets, for score metrics and rank classification.

A score is the sum of the log-probabilities of a target's tokens (EOS included) given its
inputs, from one forward pass, like t5x's ``score_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

import flantune.partitioning as partitioning
from flantune.data.batches import make_converter
from flantune.train.state import ModelSpec
from flantune.train.step import model_inputs

PyTree = Any


def sequence_log_likelihood(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                            segment_ids: jax.Array | None = None,
                            max_segments: int | None = None) -> jax.Array:
    """Summed target log-probabilities: [rows] for unpacked rows, or [rows, max_segments] for
    packed rows (entry s - 1 holds segment id s; absent segments score 0)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    token = token * weights.astype(jnp.float32)
    if segment_ids is None:
        return token.sum(axis=-1)
    if max_segments is None:
        raise ValueError("packed rows need max_segments (the most segments a row can hold).")
    one_hot = jax.nn.one_hot(segment_ids - 1, max_segments, dtype=jnp.float32)
    return jnp.einsum("bl,bls->bs", token, one_hot)


def gather(array: jax.Array) -> np.ndarray:
    """A (possibly multi-process) global array as one host numpy array on every process."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def process_rows(rows: int, mesh: Mesh | None) -> slice:
    """This process's share of a global batch of ``rows`` rows (see
    ``partitioning.global_batch``)."""
    if mesh is None or jax.process_count() == 1:
        return slice(0, rows)
    processes, index = jax.process_count(), jax.process_index()
    per = rows // processes
    return slice(index * per, (index + 1) * per)


class Scorer:
    """Scores (inputs, targets) token pairs in fixed-shape batches with one compiled program.

    ``batch_size`` rows per call (the last batch is padded with a dummy pair); with a mesh the
    batch is split over its batch axes and parameters keep their training shardings.
    """

    def __init__(self, spec: ModelSpec, task_feature_lengths: dict[str, int], batch_size: int,
                 mesh: Mesh | None = None, rules: partitioning.LogicalAxisRules | None = None,
                 param_shardings: PyTree | None = None, eos_id: int = 1):
        self.spec, self.lengths, self.batch_size = spec, dict(task_feature_lengths), batch_size
        self.mesh, self.rules = mesh, rules
        # eos_id: what a truncated feature ends with (the vocabulary's EOS).
        self.converter = make_converter(spec.family, pack=False, eos_id=eos_id)
        family = spec.family

        def score(params: PyTree, batch: dict[str, jax.Array]) -> jax.Array:
            logits = spec.merge(params)(**model_inputs(batch, family), deterministic=True)
            return sequence_log_likelihood(logits, batch["decoder_target_tokens"],
                                           batch["decoder_loss_weights"])

        if mesh is None:
            self._score = jax.jit(score)
        else:
            partitioning.check_batch_size(batch_size, mesh)
            self._score = jax.jit(score, in_shardings=(param_shardings,
                                                       partitioning.batch_sharding(mesh)))

    def __call__(self, params: PyTree, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                 on_batch: Callable[[], None] | None = None) -> np.ndarray:
        """Log-likelihood of each pair's target tokens given its input tokens ([len(pairs)]).
        Tokens longer than the task feature lengths are truncated (EOS kept)."""
        out = []
        dummy = (np.asarray([1], np.int32), np.asarray([1], np.int32))
        for start in range(0, len(pairs), self.batch_size):
            chunk = list(pairs[start:start + self.batch_size])
            real = len(chunk)
            chunk += [dummy] * (self.batch_size - real)
            examples = [{"inputs": i, "targets": t} for i, t in chunk]
            if "inputs" not in self.lengths:
                examples = [{"targets": np.concatenate([i, t])} for i, t in chunk]
            features, _ = self.converter.convert(examples, self.lengths)
            local = {k: v[process_rows(self.batch_size, self.mesh)] for k, v in features.items()}
            if self.mesh is None:
                scores = self._score(params, {k: jnp.asarray(v) for k, v in local.items()})
            else:
                with partitioning.activation_rules(self.rules, self.mesh):
                    scores = self._score(params, partitioning.global_batch(local, self.mesh))
            out.append(gather(scores)[:real])
            if on_batch is not None:
                on_batch()
        return np.concatenate(out) if out else np.zeros(0, np.float32)
