"""Train-step throughput: flantune vs Hugging Face PyTorch, model FLOP/s vs the matmul peak,
and the real packed data pipeline vs a synthetic batch.

1. The same batch (Flan-T5-small shape, 8 rows of 512 -> 128 random tokens, f32) through a
   flantune train step (jit, donated state, AdamW, cross-entropy without z-loss) and a PyTorch
   ``T5ForConditionalGeneration`` step (forward with labels, backward, ``torch.optim.AdamW``),
   each side alone in a fresh process after two warm-up steps, alternating rounds. PyTorch runs
   twice: with glibc's default malloc (as it runs out of the box) and with the malloc settings
   `import flantune` applies on CPU hosts (flantune.host_memory), which speed it up as well.
2. Model FLOP/s of the flantune step (analytic matmul FLOPs: 3x the forward pass) divided by an
   f32 matmul peak measured in the same run (a large jitted ``jnp.dot``).
3. The step time of the demo model fed by the real demo pipeline (background prefetch, packing,
   global batch assembly) over the step time with one synthetic batch already on device.

    python tools/bench_train.py [--steps 3] [--rounds 2] [--skip_torch] [--compare_kernels]

`--compare_kernels` also times the flantune step with the `xla` attention kernel (batched GEMMs,
what GPUs and TPUs use) beside the CPU default (`auto` = `blocked` here).

The last line is a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc  # noqa: E402

tune_malloc()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flantune.partitioning as partitioning  # noqa: E402
from flantune.data import BatchIterator  # noqa: E402
from flantune.data.prefetch import Prefetcher  # noqa: E402
from flantune.models import T5Config  # noqa: E402
from flantune.train.losses import LossConfig  # noqa: E402
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig, make_optimizer  # noqa
from flantune.train.state import ModelSpec, init_state, state_shardings  # noqa: E402
from flantune.train.step import StepConfig, make_train_step  # noqa: E402

WARMUP_STEPS = 2
FLAN_T5_SMALL = T5Config()  # T5 v1.1 / Flan-T5 small: d 512, ff 1024, 6 heads x 64, 8+8 layers
DEMO = T5Config(vocab_size=8000, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                num_encoder_layers=2, num_decoder_layers=2)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """f32 FLOP/s of a large jitted matmul (best of ``repeats``)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
    dot = jax.jit(lambda x, y: x @ y)
    dot(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def t5_train_flops(config: T5Config, batch: int, inputs: int, targets: int) -> float:
    """Matmul FLOPs of one train step (forward x 3) of an unpacked T5 batch."""
    d, hd, ff, v = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim, \
        config.vocab_size
    mlp = (3 if config.gated_mlp else 2) * d * ff
    encoder = inputs * (4 * d * hd + mlp) + 2 * inputs * inputs * hd
    decoder = (targets * (4 * d * hd + 2 * d * hd + mlp) + inputs * 2 * d * hd
               + 2 * targets * targets * hd + 2 * targets * inputs * hd)
    forward = 2 * (config.num_encoder_layers * encoder + config.num_decoder_layers * decoder
                   + targets * d * v)
    return 3.0 * batch * forward


def synthetic_batch(batch: int, inputs: int, targets: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    target_tokens = rng.integers(3, vocab, size=(batch, targets)).astype(np.int32)
    decoder_inputs = np.concatenate([np.zeros((batch, 1), np.int32), target_tokens[:, :-1]], 1)
    return {"encoder_input_tokens": rng.integers(3, vocab, size=(batch, inputs)).astype(np.int32),
            "decoder_input_tokens": decoder_inputs, "decoder_target_tokens": target_tokens,
            "decoder_loss_weights": np.ones((batch, targets), np.int32)}


class FlantuneStep:
    def __init__(self, config: T5Config, *, z_loss: float = 0.0):
        self.mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1), jax.devices()[:1])
        self.rules = partitioning.axis_rules("data_parallel")
        spec = ModelSpec.from_config(config)
        optimizer, schedule = make_optimizer(OptimizerConfig(
            name="adamw", schedule=ScheduleConfig(base_learning_rate=1e-4)))
        with partitioning.activation_rules(self.rules, self.mesh):
            shardings = state_shardings(spec, optimizer, self.mesh, self.rules)
            self.state = init_state(spec, optimizer, shardings)
            self.step = jax.jit(
                make_train_step(spec, optimizer, schedule,
                                StepConfig(loss=LossConfig(z_loss=z_loss))),
                in_shardings=(shardings, partitioning.batch_sharding(self.mesh)),
                out_shardings=(shardings, None), donate_argnums=(0,))

    def __call__(self, batch) -> float:
        with partitioning.activation_rules(self.rules, self.mesh):
            self.state, metrics = self.step(self.state, batch)
        return float(metrics["loss"])  # waits for the step

    def device_batch(self, batch: dict[str, np.ndarray]):
        return partitioning.global_batch(batch, self.mesh)


class TorchStep:
    def __init__(self, config: T5Config):
        import torch
        from transformers import T5Config as HFConfig
        from transformers import T5ForConditionalGeneration

        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        hf = HFConfig(vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim,
                      d_ff=config.mlp_dim, num_layers=config.num_encoder_layers,
                      num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        self.model = T5ForConditionalGeneration(hf)
        # The Flan-T5 layout has its own output head (transformers 5 ties it by default).
        self.model.lm_head.weight = torch.nn.Parameter(
            torch.randn(config.vocab_size, config.emb_dim) * config.emb_dim ** -0.5)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> float:
        torch = self.torch
        out = self.model(input_ids=torch.from_numpy(batch["encoder_input_tokens"]).long(),
                         decoder_input_ids=torch.from_numpy(batch["decoder_input_tokens"]).long(),
                         labels=torch.from_numpy(batch["decoder_target_tokens"]).long())
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(out.loss)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def worker(side: str, steps: int, kernel: str = "auto") -> dict[str, float]:
    """Times ``steps`` train steps of one side (after WARMUP_STEPS) alone in this process;
    the flantune side (attention ``kernel``) also measures the matmul peak."""
    batch = synthetic_batch(8, 512, 128, FLAN_T5_SMALL.vocab_size)
    if side == "flantune":
        step = FlantuneStep(dataclasses.replace(FLAN_T5_SMALL, attention_kernel=kernel))
        batch = step.device_batch(batch)
    else:
        step = TorchStep(FLAN_T5_SMALL)
    for _ in range(WARMUP_STEPS):  # compile, then let the allocator reach its steady state
        step(batch)
    times = [timed(step, batch) for _ in range(steps)]
    result = {"step_s": times}
    if side == "flantune":
        result["matmul_peak"] = matmul_peak()
    return result


def _run_worker(side: str, steps: int, kernel: str = "auto", *,
                tuned_malloc: bool = True) -> dict[str, float]:
    env = {**os.environ, "FLANTUNE_TUNE_MALLOC": "1" if tuned_malloc else "0"}
    output = subprocess.run([sys.executable, __file__, "--worker", side, "--steps", str(steps),
                             "--attention_kernel", kernel],
                            check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare_with_torch(steps: int, rounds: int, skip_torch: bool,
                       compare_kernels: bool) -> dict[str, float]:
    """Each side runs alone in a fresh process (PyTorch's OpenMP threads keep spinning after
    its ops and would slow an XLA step timed right after them), alternating for ``rounds``."""
    ours_times, xla_times, torch_times, torch_tuned_times, peaks = [], [], [], [], []
    for _ in range(rounds):
        ours = _run_worker("flantune", steps)
        ours_times += ours["step_s"]
        peaks.append(ours["matmul_peak"])
        if compare_kernels:
            xla = _run_worker("flantune", steps, "xla")
            xla_times += xla["step_s"]
            peaks.append(xla["matmul_peak"])
        if not skip_torch:
            # PyTorch as it runs out of the box (glibc's default malloc), and with the malloc
            # settings flantune applies (flantune.host_memory), which help it as much.
            torch_times += _run_worker("torch", steps, tuned_malloc=False)["step_s"]
            torch_tuned_times += _run_worker("torch", steps)["step_s"]
    peak = max(peaks)
    tokens = 8 * (512 + 128)
    flops = t5_train_flops(FLAN_T5_SMALL, 8, 512, 128)
    ours_s = float(np.median(ours_times))
    result = {"flantune_step_s": round(ours_s, 3),
              "flantune_tokens_per_s": round(tokens / ours_s, 1),
              "matmul_peak_gflops": round(peak / 1e9, 1),
              "flantune_mfu_vs_matmul_peak": round(flops / ours_s / peak, 3)}
    print(f"Flan-T5-small train step, batch 8 x 512 -> 128, f32: {flops / 1e12:.2f} TFLOP/step; "
          f"matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"  flantune: {ours_s:.2f} s/step (median of {len(ours_times)}), "
          f"{tokens / ours_s:,.0f} tokens/s, {flops / ours_s / 1e9:.0f} GFLOP/s = "
          f"{flops / ours_s / peak:.2f} of the peak")
    if xla_times:
        xla_s = float(np.median(xla_times))
        result.update({"flantune_xla_attention_step_s": round(xla_s, 3),
                       "blocked_over_xla_attention_speedup": round(xla_s / ours_s, 3)})
        print(f"  flantune with the xla attention kernel: {xla_s:.2f} s/step; the default "
              f"(blocked on this CPU) is {xla_s / ours_s:.2f}x faster")
    if torch_times:
        torch_s = float(np.median(torch_times))
        result.update({"torch_step_s": round(torch_s, 3),
                       "tokens_per_s_ratio_vs_torch": round(torch_s / ours_s, 3),
                       "torch_mfu_vs_matmul_peak": round(flops / torch_s / peak, 3)})
        print(f"  PyTorch:  {torch_s:.2f} s/step (median of {len(torch_times)}), "
              f"{tokens / torch_s:,.0f} tokens/s, {flops / torch_s / peak:.2f} of the peak; "
              f"flantune / PyTorch tokens/s = {torch_s / ours_s:.2f}")
        tuned_s = float(np.median(torch_tuned_times))
        result.update({"torch_tuned_malloc_step_s": round(tuned_s, 3),
                       "tokens_per_s_ratio_vs_torch_tuned_malloc": round(tuned_s / ours_s, 3)})
        print(f"  PyTorch with flantune's malloc settings: {tuned_s:.2f} s/step; "
              f"flantune / PyTorch tokens/s = {tuned_s / ours_s:.2f}")
    return result


def pipeline_vs_synthetic(steps: int) -> dict[str, float]:
    importlib.import_module("flantune.tasks")
    lengths = {"inputs": 512, "targets": 128}
    ours = FlantuneStep(DEMO, z_loss=1e-4)
    data = BatchIterator("demo", task_feature_lengths=lengths, batch_size=8, converter="enc_dec")
    synthetic = ours.device_batch(next(data))
    ours(synthetic)  # compile
    with Prefetcher(data) as batches:
        next(batches)
        real_times, synthetic_times = [], []
        for _ in range(steps):
            start = time.perf_counter()
            ours(ours.device_batch(next(batches)[0]))
            real_times.append(time.perf_counter() - start)
            synthetic_times.append(timed(ours, synthetic))
    real, fixed = float(np.median(real_times)), float(np.median(synthetic_times))
    print(f"Demo model, 8 x 512/128 packed rows: {real:.3f} s/step with the demo pipeline, "
          f"{fixed:.3f} s/step with a batch already on device: ratio {real / fixed:.3f}")
    return {"pipeline_over_synthetic_step_time": round(real / fixed, 3)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (T5-small)")
    parser.add_argument("--pipeline_steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating fresh-process rounds per side")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--compare_kernels", action="store_true",
                        help="also time flantune with the xla attention kernel")
    parser.add_argument("--attention_kernel", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("flantune", "torch"), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.steps, args.attention_kernel)
        print(json.dumps(result))
        return result
    headline = compare_with_torch(args.steps, args.rounds, args.skip_torch, args.compare_kernels)
    headline.update(pipeline_vs_synthetic(args.pipeline_steps))
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
