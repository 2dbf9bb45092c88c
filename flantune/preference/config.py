"""Settings of a preference-tuning run (gin: ``flantune.PreferenceConfig``)."""

from __future__ import annotations

import dataclasses
from typing import Any

LOSSES = ("sigmoid", "ipo", "hinge")
# Where the reference log-probabilities come from (besides a checkpoint path):
AUTO = "auto"  # adapter runs: ADAPTER_DISABLED; full fine-tuning: INITIAL
ADAPTER_DISABLED = "adapter_disabled"  # the frozen base with the adapter switched off
INITIAL = "initial"  # a frozen copy of the policy's start (INITIAL_CHECKPOINT_PATH)
REFERENCE_KINDS = (AUTO, ADAPTER_DISABLED, INITIAL)


class PreferenceConfigError(ValueError):
    """A preference setting that cannot work, with what to use instead."""


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """How pairs are scored against the reference model.

    Attributes:
      loss: ``"sigmoid"`` (DPO, Rafailov et al. 2023), ``"ipo"`` (Azar et al. 2023, on
        log-ratios averaged over completion tokens, as TRL computes it) or ``"hinge"``
        (SLiC-style ``relu(1 - beta * margin)``).
      beta: the strength of the pull towards the reference (IPO's tau).
      label_smoothing: conservative DPO (sigmoid only): the assumed probability that a pair's
        preference is flipped, in [0, 0.5).
      reference: ``"auto"``, ``"adapter_disabled"``, ``"initial"`` or the path of a model
        checkpoint (flantune or Hugging Face) scored as the reference.
      precompute_reference: score the reference on every training batch in a first pass and
        cache the log-probabilities in MODEL_DIR (then no reference weights stay in memory while
        training; TRL's ``precompute_ref_log_probs``).
      eval_split: the split of the mixture's preference tasks evaluated on held-out pairs (loss,
        reward accuracy, margins per task); None: no such evaluation.
      eval_every_steps: evaluate every N steps (0: after the last step only).
      eval_batch_size: rows per evaluation batch (None: the training batch size).
    """

    loss: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    reference: str = AUTO
    precompute_reference: bool = False
    eval_split: str | None = "validation"
    eval_every_steps: int = 0
    eval_batch_size: int | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise PreferenceConfigError(f"PreferenceConfig.loss {self.loss!r} is not one of "
                                        f"{LOSSES}.")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or \
                not self.beta > 0:
            raise PreferenceConfigError(f"PreferenceConfig.beta must be a positive number, got "
                                        f"{self.beta!r}.")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise PreferenceConfigError(f"PreferenceConfig.label_smoothing must be in [0, 0.5) "
                                        f"(the probability a preference is flipped), got "
                                        f"{self.label_smoothing!r}.")
        if self.label_smoothing and self.loss != "sigmoid":
            raise PreferenceConfigError(f"PreferenceConfig.label_smoothing (conservative DPO) "
                                        f"applies to loss='sigmoid', not {self.loss!r}; set it "
                                        "to 0.")
        if not isinstance(self.reference, str) or not self.reference:
            raise PreferenceConfigError(f"PreferenceConfig.reference must be one of "
                                        f"{REFERENCE_KINDS} or a checkpoint path, got "
                                        f"{self.reference!r}.")
        if isinstance(self.eval_every_steps, bool) or not isinstance(self.eval_every_steps, int) \
                or self.eval_every_steps < 0:
            raise PreferenceConfigError("PreferenceConfig.eval_every_steps must be an int >= 0, "
                                        f"got {self.eval_every_steps!r}.")
        if self.eval_batch_size is not None and (
                isinstance(self.eval_batch_size, bool)
                or not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1):
            raise PreferenceConfigError("PreferenceConfig.eval_batch_size must be a positive "
                                        f"int or None, got {self.eval_batch_size!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
