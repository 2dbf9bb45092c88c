"""flantune's preference losses vs TRL's DPOTrainer on the same weights and tokens (used by
tests/preference/test_trl_parity.py and tools/bench_dpo.py).

Random tiny Hugging Face Llamas are the policy and the reference (for LoRA: a peft model with a
random adapter, whose reference is its base with the adapter disabled, in both frameworks); both
are loaded into flantune by its converters, the pairs packed by flantune's converter, and the
loss, rewards, margins and reward accuracy compared with TRL's."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flantune.data.preference.converter import PreferenceFeatureConverter
from flantune.models import load_hf_checkpoint
from flantune.peft.hf_format import load_peft_adapter
from flantune.preference import PairStep, PreferenceConfig
from flantune.train.state import ModelSpec
from flantune.train.step import model_inputs
from tests.models import hf_reference as ref
from tests.preference import trl_reference

VOCAB = 8000  # the demo chat tokenizer's (TRL's trainer takes it as processing class)
LOSSES = ("sigmoid", "ipo", "hinge")


def random_pairs(count: int = 6, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """(prompt, chosen, rejected) token ids of varied lengths (ids >= 4: 0 is padding)."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.integers(4, VOCAB, rng.integers(low, high))
                  for low, high in ((2, 9), (1, 7), (1, 7))) for _ in range(count)]


def flantune_metrics(policy_dir: Path, reference_dir: Path | None, pairs: Sequence[tuple],
                     config: PreferenceConfig, adapter_dir: Path | None = None,
                     length: int = 64) -> dict[str, float]:
    """flantune's loss and reward metrics of ``pairs`` packed into rows of ``length``: the
    policy from ``policy_dir`` (+ the peft adapter in ``adapter_dir``), the reference from
    ``reference_dir`` (None: the policy's base with the adapter disabled)."""
    model_config, base = load_hf_checkpoint(policy_dir)
    plain = ModelSpec.from_config(model_config)
    if adapter_dir is not None:
        adapter_config, adapter = load_peft_adapter(adapter_dir, model_config)
        spec = ModelSpec.from_config(model_config, adapter_config)
        params = spec.join(adapter, base)
        step = PairStep(config, "adapter_disabled", plain, 0)
        values_args = (None, base)
    else:
        spec, params = plain, base
        _, reference = load_hf_checkpoint(reference_dir)
        step = PairStep(config, "params", plain, 0)
        values_args = (reference, None)
    examples = [{"chosen": np.r_[p, c], "rejected": np.r_[p, r], "prompt_length": len(p)}
                for p, c, r in pairs]
    batch, _ = PreferenceFeatureConverter(pack=True).convert(examples, {"targets": length})
    values = step.reference_values(batch, *values_args)
    logits = spec.merge(params)(**model_inputs(batch, "decoder"), deterministic=True)
    sums = step.loss_sums(logits, batch, values)
    metrics = {k: float(v) for k, v in step.metrics(sums).items() if np.ndim(v) == 0}
    metrics["loss"] = float(sums["loss"] / sums["denominator"])
    return metrics


def compare(loss_type: str, lora: bool = False, beta: float = 0.1) -> dict[str, float]:
    """Per metric, |flantune - TRL| on random models and pairs."""
    import torch

    config = PreferenceConfig(loss=loss_type, beta=beta)
    pairs = random_pairs()
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir, reference_dir = Path(tmp) / "policy", Path(tmp) / "reference"
        policy = ref.decoder("llama", seed=11, vocab_size=VOCAB)
        ref.save(policy, policy_dir)
        if lora:
            import peft

            torch.manual_seed(4)
            lora_config = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                          target_modules=["q_proj", "v_proj", "down_proj"])
            dpo = trl_reference.trainer(policy, None, loss_type=loss_type, beta=beta,
                                        peft_config=lora_config)
            adapter_dir = Path(tmp) / "adapter"
            dpo.model.save_pretrained(str(adapter_dir))
            expected = trl_reference.trl_metrics(dpo, pairs)
            ours = flantune_metrics(policy_dir, None, pairs, config, adapter_dir)
        else:
            reference = ref.decoder("llama", seed=12, vocab_size=VOCAB)
            ref.save(reference, reference_dir)
            expected = trl_reference.trl_metrics(
                trl_reference.trainer(policy, reference, loss_type=loss_type, beta=beta), pairs)
            ours = flantune_metrics(policy_dir, reference_dir, pairs, config)
    return {key: abs(ours[key] - expected[key]) for key in expected}
