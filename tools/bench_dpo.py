"""Preference tuning (flantune.preference): parity with TRL's DPOTrainer, and the step time of
LoRA DPO (reference = the base with the adapter off) against full DPO (a frozen reference copy).

1. Parity: random tiny Hugging Face Llamas as policy and reference, and a peft LoRA policy
   against its disabled adapter; loss, chosen / rejected rewards, margin and reward accuracy of
   the same token pairs from flantune vs TRL's DPOTrainer (sigmoid; IPO and hinge beside it).
2. Step time: one jitted DPO train step of a Llama-style decoder (emb 512, 8 layers, GQA),
   batch 8 rows x 512 tokens of packed pairs, LoRA r=8 on q and v vs full fine-tuning with a
   reference copy, both compiled in this process and timed in alternating rounds after warm-up.

    python tools/bench_dpo.py [--steps 3] [--rounds 2] [--skip_step_time]

The last line is a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flantune.host_memory import tune_malloc  # noqa: E402

tune_malloc()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flantune.partitioning as partitioning  # noqa: E402
from flantune.data.preference import PreferenceFeatureConverter  # noqa: E402
from flantune.models import DecoderConfig  # noqa: E402
from flantune.peft import LoraConfig  # noqa: E402
from flantune.preference import PairStep, PreferenceConfig  # noqa: E402
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig, make_optimizer  # noqa
from flantune.train.state import (  # noqa: E402
    ModelSpec,
    frozen_shardings,
    init_state,
    state_keys,
    state_shardings,
)
from flantune.train.step import StepConfig, make_train_step  # noqa: E402

WARMUP_STEPS = 2
DECODER = DecoderConfig(vocab_size=8000, emb_dim=512, num_heads=8, num_kv_heads=4, head_dim=64,
                        mlp_dim=1408, num_layers=8)


def pair_batch(rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of packed random pairs (prompts 40-120 tokens, completions 10-80)."""
    rng = np.random.default_rng(seed)
    converter = PreferenceFeatureConverter(pack=True)
    examples: list[dict] = []
    while True:
        prompt = rng.integers(4, DECODER.vocab_size, rng.integers(40, 120))
        completions = [rng.integers(4, DECODER.vocab_size, rng.integers(10, 80))
                       for _ in range(2)]
        examples.append({"chosen": np.r_[prompt, completions[0]],
                         "rejected": np.r_[prompt, completions[1]],
                         "prompt_length": prompt.size})
        batch, stats = converter.convert(examples, {"targets": length})
        if stats.rows > rows:
            batch, _ = converter.convert(examples[:-1], {"targets": length})
            return {k: v[:rows] for k, v in batch.items()}


class DpoStep:
    """A jitted DPO train step, full (with a reference copy) or LoRA (adapter-disabled base)."""

    def __init__(self, adapter: LoraConfig | None):
        self.mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1), jax.devices()[:1])
        self.rules = partitioning.axis_rules("data_parallel")
        spec = ModelSpec.from_config(DECODER, adapter)
        plain = ModelSpec.from_config(DECODER)
        optimizer, schedule = make_optimizer(OptimizerConfig(
            name="adamw", schedule=ScheduleConfig(base_learning_rate=1e-5)))
        source = "adapter_disabled" if adapter is not None else "params"
        objective = PairStep(PreferenceConfig(), source, plain, 0)
        with partitioning.activation_rules(self.rules, self.mesh):
            shardings = state_shardings(spec, optimizer, self.mesh, self.rules)
            base_shardings = frozen_shardings(spec, self.mesh, self.rules)
            self.state = init_state(spec, optimizer, shardings)
            key = state_keys(0)[0]
            self.frozen = jax.jit(lambda: spec.split(spec.init_params(key))[1],
                                  out_shardings=base_shardings)()
            reference_shardings = None
            self.reference = None
            if adapter is None:  # a frozen copy of the starting model
                reference_shardings = shardings["params"]
                self.reference = jax.jit(lambda: plain.init_params(key),
                                         out_shardings=reference_shardings)()
            self.step = jax.jit(
                make_train_step(spec, optimizer, schedule, StepConfig(), objective),
                in_shardings=(shardings, partitioning.batch_sharding(self.mesh), base_shardings,
                              reference_shardings),
                out_shardings=(shardings, None), donate_argnums=(0,))

    def __call__(self, batch) -> float:
        with partitioning.activation_rules(self.rules, self.mesh):
            self.state, metrics = self.step(self.state, batch, self.frozen, self.reference)
        return float(metrics["loss"])


def step_time_ratio(steps: int, rounds: int) -> dict[str, float]:
    batch = pair_batch(8, 512)
    runs = {"full": DpoStep(None), "lora": DpoStep(LoraConfig(r=8, alpha=16.0, dropout=0.0))}
    device_batch = {name: partitioning.global_batch(batch, run.mesh) for name, run in runs.items()}
    for name, run in runs.items():
        for _ in range(WARMUP_STEPS):
            run(device_batch[name])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                run(device_batch[name])
            times[name].append((time.perf_counter() - start) / steps)
    full, adapted = min(times["full"]), min(times["lora"])
    pairs = int((batch["decoder_segment_ids"].max(axis=1) // 2).sum())
    return {"full_dpo_step_s": full, "lora_dpo_step_s": adapted, "pairs_per_batch": pairs,
            "lora_dpo_step_time_ratio_vs_full_dpo": adapted / full}


def parity_figures() -> dict[str, float]:
    from tests.preference.parity import compare

    figures = {}
    sigmoid = compare("sigmoid")
    lora = compare("sigmoid", lora=True)
    keys = ("loss", "rewards/chosen", "rewards/rejected")
    figures["dpo_loss_max_abs_diff_vs_trl"] = max(d[k] for d in (sigmoid, lora) for k in keys)
    figures["dpo_metrics_max_abs_diff_vs_trl"] = max(max(d.values()) for d in (sigmoid, lora))
    figures["hinge_max_abs_diff_vs_trl"] = max(compare("hinge").values())
    figures["ipo_max_abs_diff_vs_trl"] = max(compare("ipo", beta=1.0).values())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip_step_time", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = parity_figures()
    print(f"DPO vs TRL (full and LoRA): loss and rewards max |diff| "
          f"{results['dpo_loss_max_abs_diff_vs_trl']:.3g}, every metric "
          f"{results['dpo_metrics_max_abs_diff_vs_trl']:.3g}; hinge "
          f"{results['hinge_max_abs_diff_vs_trl']:.3g}; IPO (beta 1) "
          f"{results['ipo_max_abs_diff_vs_trl']:.3g}")
    if not args.skip_step_time:
        results.update(step_time_ratio(args.steps, args.rounds))
        print(f"DPO train step, decoder emb 512 x 8 layers, 8 x 512 tokens "
              f"({results['pairs_per_batch']} pairs): full {results['full_dpo_step_s']:.2f} s, "
              f"LoRA {results['lora_dpo_step_s']:.2f} s, ratio "
              f"{results['lora_dpo_step_time_ratio_vs_full_dpo']:.3f}")
    print(json.dumps({key: round(value, 10) if isinstance(value, float) else value
                      for key, value in results.items()}))


if __name__ == "__main__":
    main()
