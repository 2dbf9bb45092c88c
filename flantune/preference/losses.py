"""Sequence log-probabilities of packed pairs and the DPO / IPO / hinge losses over them.

A row holds pairs as consecutive segments (chosen ``2k - 1``, rejected ``2k``; see
flantune.data.preference.converter). A sequence's log-probability is the sum over its
completion tokens (loss weight 1) of ``log p(token)``, in float32, as TRL sums them.

The losses follow TRL's ``DPOTrainer`` (``loss_type`` sigmoid, ipo, hinge) on
``delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)``:

- sigmoid: ``-log sigmoid(beta * delta)``; with label smoothing e, conservative DPO (Mitchell
  2023; TRL's sigmoid loss before 1.0, TRL 1.16's sigmoid has no smoothing)
  ``-(1 - e) log sigmoid(beta * delta) - e log sigmoid(-beta * delta)``;
- ipo: ``(delta_avg - 1 / (2 beta))^2``, the log-ratios averaged over each completion's tokens;
- hinge: ``relu(1 - beta * delta)``.

Rewards are ``beta * (policy - reference)`` per sequence; the reward accuracy is the share of
pairs whose chosen reward is above the rejected one. Losses are averaged over pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from flantune.data.preference.converter import pair_slots
from flantune.preference.config import PreferenceConfig

Batch = Mapping[str, jax.Array]
REFERENCE_FEATURES = ("reference_chosen_logps", "reference_rejected_logps")
PAIR_METRICS = ("reward_accuracy", "chosen_reward", "rejected_reward", "margin",
                "chosen_logps", "rejected_logps")


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``log p(target)`` per position, in float32 (one logsumexp per token)."""
    logits = logits.astype(jnp.float32)
    target = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return target - jax.nn.logsumexp(logits, axis=-1)


def _per_segment(values: jax.Array, segments: jax.Array, count: int) -> jax.Array:
    return jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_segments=count))(values, segments)


def pair_log_probs(logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """Per pair slot of each row ([rows, pairs]): ``chosen`` / ``rejected`` summed completion
    log-probabilities, their token counts, ``valid`` (the slot holds a pair) and ``task`` (its
    task index, 0 where empty)."""
    length = batch["decoder_target_tokens"].shape[-1]
    slots = pair_slots(length)
    count = 2 * slots + 1
    weights = batch["decoder_loss_weights"].astype(jnp.float32)
    segments = batch["decoder_segment_ids"]
    token = token_log_probs(logits, batch["decoder_target_tokens"]) * weights
    sums = _per_segment(token, segments, count)
    tokens = _per_segment(weights, segments, count)
    out = {"chosen": sums[:, 1::2], "rejected": sums[:, 2::2],
           "chosen_tokens": tokens[:, 1::2], "rejected_tokens": tokens[:, 2::2]}
    out["valid"] = (out["chosen_tokens"] > 0) & (out["rejected_tokens"] > 0)
    if "decoder_task_ids" in batch:
        task = jax.vmap(lambda t, s: jax.ops.segment_max(t, s, num_segments=count))(
            batch["decoder_task_ids"], segments)
        out["task"] = jnp.where(out["valid"], task[:, 1::2], 0)
    else:
        out["task"] = jnp.zeros_like(out["chosen"], jnp.int32)
    return out


def pair_losses(policy: Mapping[str, jax.Array], reference_chosen: jax.Array,
                reference_rejected: jax.Array, config: PreferenceConfig
                ) -> dict[str, jax.Array]:
    """Per pair: the loss, both rewards and the margin (see the module docstring)."""
    chosen_ratio = policy["chosen"] - reference_chosen
    rejected_ratio = policy["rejected"] - reference_rejected
    beta = config.beta
    if config.loss == "sigmoid":
        delta = beta * (chosen_ratio - rejected_ratio)
        smoothing = config.label_smoothing
        loss = -jax.nn.log_sigmoid(delta) * (1 - smoothing)
        if smoothing:
            loss = loss - jax.nn.log_sigmoid(-delta) * smoothing
    elif config.loss == "hinge":
        loss = jax.nn.relu(1.0 - beta * (chosen_ratio - rejected_ratio))
    elif config.loss == "ipo":
        average = (chosen_ratio / jnp.maximum(policy["chosen_tokens"], 1.0)
                   - rejected_ratio / jnp.maximum(policy["rejected_tokens"], 1.0))
        loss = jnp.square(average - 1.0 / (2.0 * beta))
    else:  # PreferenceConfig checks the name
        raise AssertionError(config.loss)
    chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
    return {"loss": loss, "chosen_reward": chosen_reward, "rejected_reward": rejected_reward,
            "margin": chosen_reward - rejected_reward,
            "reward_accuracy": (chosen_reward > rejected_reward).astype(jnp.float32),
            "chosen_logps": policy["chosen"], "rejected_logps": policy["rejected"]}


def pair_sums(policy: Mapping[str, jax.Array], reference_chosen: jax.Array,
              reference_rejected: jax.Array, config: PreferenceConfig, num_tasks: int
              ) -> dict[str, jax.Array]:
    """Sums over the batch's pairs (they add over microbatches): the loss, its normalizer
    (``denominator``: the number of pairs), each pair metric, and per task (``task_sum/NAME``,
    ``task_count``) the loss, reward accuracy and margin."""
    per_pair = pair_losses(policy, reference_chosen, reference_rejected, config)
    valid = policy["valid"].astype(jnp.float32)
    # A slot without a pair holds zeros; `where` keeps a NaN of its arithmetic out of the sums.
    masked = {k: jnp.where(policy["valid"], v, 0.0) for k, v in per_pair.items()}
    sums = {"loss": jnp.sum(masked["loss"]), "denominator": jnp.sum(valid)}
    sums.update({name: jnp.sum(masked[name]) for name in PAIR_METRICS})
    if num_tasks:
        ids = policy["task"].reshape(-1)
        sums["task_count"] = jax.ops.segment_sum(valid.reshape(-1), ids, num_tasks)
        for name in ("loss", "reward_accuracy", "margin"):
            sums[f"task_sum/{name}"] = jax.ops.segment_sum(masked[name].reshape(-1), ids,
                                                           num_tasks)
    return sums


def pair_metrics(sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The batch's metrics (besides the loss) from its summed quantities; TRL's names."""
    pairs = jnp.maximum(sums["denominator"], 1.0)
    metrics = {
        "rewards/accuracy": sums["reward_accuracy"] / pairs,
        "rewards/chosen": sums["chosen_reward"] / pairs,
        "rewards/rejected": sums["rejected_reward"] / pairs,
        "rewards/margin": sums["margin"] / pairs,
        "logps/chosen": sums["chosen_logps"] / pairs,
        "logps/rejected": sums["rejected_logps"] / pairs,
        "pairs": sums["denominator"],
    }
    metrics.update({k: v for k, v in sums.items()
                    if k.startswith("task_sum/") or k == "task_count"})
    return metrics
