"""Parameter-efficient tuning (flantune.peft): parity with Hugging Face peft, optimizer-state
size and step time of LoRA vs full fine-tuning.

1. Parity: a tiny random Hugging Face T5 (Flan-T5 layout) and Llama, each with a random peft
   adapter (LoRA with B nonzero; prefix tuning; prompt tuning), are loaded into flantune (the
   base through the converter, the adapter through flantune.peft.hf_format) and their float32
   logits compared with peft's. Beside it, peft's own float32 error against the same model in
   float64.
2. Optimizer state: bytes of the AdamW state per device for LoRA r=8 on q and v vs full
   fine-tuning, T5-small (v1.1) shape, one device (so per device = all of it).
3. Step time: the LoRA train step over the full one, T5-small shape, batch 8 x 512 -> 128, both
   compiled in this process and timed in alternating rounds after warm-up steps.

    python tools/bench_peft.py [--steps 3] [--rounds 2] [--skip_step_time]

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
import optax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import synthetic_batch  # noqa: E402  (tools/ is this script's directory)

import flantune.partitioning as partitioning  # noqa: E402
from flantune.models import T5Config  # noqa: E402
from flantune.peft import LoraConfig  # noqa: E402
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
T5_SMALL = T5Config()


def _tree_bytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def optimizer_state_ratio(lora: LoraConfig) -> dict[str, float]:
    optimizer = optax.adamw(1e-3)
    full = ModelSpec.from_config(T5_SMALL)
    adapted = ModelSpec.from_config(T5_SMALL, lora)
    full_bytes = _tree_bytes(jax.eval_shape(optimizer.init, full.abstract_trainable()))
    lora_bytes = _tree_bytes(jax.eval_shape(optimizer.init, adapted.abstract_trainable()))
    return {"full_optimizer_state_bytes": full_bytes, "lora_optimizer_state_bytes": lora_bytes,
            "lora_optimizer_state_bytes_ratio": lora_bytes / full_bytes}


class Step:
    """A jitted train step of T5-small, full or with an adapter (random base)."""

    def __init__(self, adapter: LoraConfig | None):
        self.mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1), jax.devices()[:1])
        self.rules = partitioning.axis_rules("data_parallel")
        spec = ModelSpec.from_config(T5_SMALL, adapter)
        optimizer, schedule = make_optimizer(OptimizerConfig(
            name="adamw", schedule=ScheduleConfig(base_learning_rate=1e-4)))
        with partitioning.activation_rules(self.rules, self.mesh):
            shardings = state_shardings(spec, optimizer, self.mesh, self.rules)
            base_shardings = frozen_shardings(spec, self.mesh, self.rules)
            self.state = init_state(spec, optimizer, shardings)
            key = state_keys(0)[0]  # the base a run of seed 0 would draw
            self.frozen = jax.jit(lambda: spec.split(spec.init_params(key))[1],
                                  out_shardings=base_shardings)()
            self.step = jax.jit(make_train_step(spec, optimizer, schedule, StepConfig()),
                                in_shardings=(shardings, partitioning.batch_sharding(self.mesh),
                                              base_shardings),
                                out_shardings=(shardings, None), donate_argnums=(0,))

    def __call__(self, batch) -> float:
        with partitioning.activation_rules(self.rules, self.mesh):
            self.state, metrics = self.step(self.state, batch, self.frozen)
        return float(metrics["loss"])


def step_time_ratio(lora: LoraConfig, steps: int, rounds: int) -> dict[str, float]:
    batch = synthetic_batch(8, 512, 128, T5_SMALL.vocab_size)
    runs = {"full": Step(None), "lora": Step(lora)}
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
    return {"full_step_s": full, "lora_step_s": adapted,
            "lora_step_time_ratio_vs_full": adapted / full}


def parity_figures() -> dict[str, float]:
    from tests.peft import parity

    return {**parity.lora_parity(), **parity.prefix_parity(), **parity.prompt_parity()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip_step_time", action="store_true")
    args = parser.parse_args()
    lora = LoraConfig(r=8, alpha=16.0)  # q and v (peft's default targets)
    results: dict[str, float] = {}
    results.update(parity_figures())
    print(f"LoRA logits vs peft: max |diff| {results['lora_logits_max_abs_diff_vs_peft']:.3g} "
          f"(peft float32 vs float64: {results['peft_lora_float32_error']:.3g})")
    print(f"prefix logits vs peft: max |diff| "
          f"{results['prefix_logits_max_abs_diff_vs_peft']:.3g} (peft float32 vs float64: "
          f"{results['peft_prefix_float32_error']:.3g})")
    print(f"prompt logits vs peft: max |diff| "
          f"{results['prompt_logits_max_abs_diff_vs_peft']:.3g} (peft float32 vs float64: "
          f"{results['peft_prompt_float32_error']:.3g})")
    results.update(optimizer_state_ratio(lora))
    print(f"AdamW state, T5-small: full {results['full_optimizer_state_bytes'] / 2**20:.1f} MiB, "
          f"LoRA r=8 q,v {results['lora_optimizer_state_bytes'] / 2**20:.2f} MiB, ratio "
          f"{results['lora_optimizer_state_bytes_ratio']:.4f}")
    if not args.skip_step_time:
        results.update(step_time_ratio(lora, args.steps, args.rounds))
        ratio = results["lora_step_time_ratio_vs_full"]
        print(f"train step, T5-small 8 x 512 -> 128: full {results['full_step_s']:.2f} s, LoRA "
              f"{results['lora_step_s']:.2f} s, ratio {ratio:.3f}")
    print(json.dumps({key: round(value, 8) if isinstance(value, float) else value
                      for key, value in results.items()}))


if __name__ == "__main__":
    main()
