"""How many parameters an adapter trains, said at the start of a run and by `flantune inspect`."""

from __future__ import annotations

import math
from typing import Any

import jax

from flantune.models.config import ModelConfig
from flantune.peft.config import AdapterConfig, LoraConfig, PrefixConfig, PromptConfig
from flantune.peft.targets import select


def parameter_count(tree: Any) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def adapter_summary(model_config: ModelConfig, adapter: AdapterConfig, trainable: Any,
                    frozen: Any) -> str:
    """One line: the adapter, where it is attached, trainable vs frozen parameter counts."""
    n_train, n_frozen = parameter_count(trainable), parameter_count(frozen)
    share = 100.0 * n_train / max(n_train + n_frozen, 1)
    if isinstance(adapter, LoraConfig):
        chosen = select(model_config, adapter.target_modules)
        names = sorted({p.name.rsplit("/", 1)[-1] for p in chosen})
        what = (f"LoRA r={adapter.r}, alpha={adapter.alpha:g}"
                f"{' (rsLoRA)' if adapter.use_rslora else ''} on {len(chosen)} projections "
                f"({', '.join(names)})")
    elif isinstance(adapter, PrefixConfig):
        what = (f"prefix tuning, {adapter.num_virtual_tokens} virtual tokens"
                f"{' (MLP reparameterisation)' if adapter.projection else ''}")
    elif isinstance(adapter, PromptConfig):
        what = f"prompt tuning, {adapter.num_virtual_tokens} virtual tokens"
    else:
        what = type(adapter).__name__
    return (f"{what}: {n_train:,} trainable parameters, {n_frozen:,} frozen "
            f"({share:.3g}% trained).")
