"""Attention core forward + backward: the `blocked` kernel vs the `xla` kernel, side by side.

The T5-small shapes of one train step (8 rows, 6 heads of 64): encoder self-attention (512 x 512
with a position bias shared by the batch and a padding mask), decoder cross-attention (128 x
512, padding mask only) and decoder self-attention (128 x 128, position bias and causal mask).
Each case jits the gradient of a scalar function of the attention output with respect to
queries, keys, values and the position bias, checks both kernels agree, then times them
alternately (median of ``--repeats``). Ends with one JSON line of headline figures.

    python tools/bench_attention.py [--repeats 11]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from flantune.models.attention import MASK_VALUE, blocked_attention, xla_attention  # noqa

BATCH, HEADS, HEAD_DIM = 8, 6, 64
# name: (query length, key length, position bias?, causal?)
CASES = {"encoder_self": (512, 512, True, False), "cross": (128, 512, False, False),
         "decoder_self": (128, 128, True, True)}
KERNELS = {"blocked": blocked_attention, "xla": xla_attention}


def case_inputs(q_len: int, k_len: int, position: bool, causal: bool):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(BATCH, HEADS, q_len, HEAD_DIM)).astype(np.float32) * 0.3
    k, v = (rng.normal(size=(BATCH, HEADS, k_len, HEAD_DIM)).astype(np.float32) * 0.3
            for _ in range(2))
    lengths = rng.integers(k_len // 4, k_len + 1, BATCH)
    allowed = np.arange(k_len)[None, None, None, :] < lengths[:, None, None, None]
    if causal:
        allowed = allowed & np.tril(np.ones((q_len, k_len), bool))[None, None]
    mask = np.where(np.broadcast_to(allowed, (BATCH, 1, q_len, k_len)), 0.0, MASK_VALUE)
    bias = rng.normal(size=(1, HEADS, q_len, k_len) if position else (1, 1, 1, 1))
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v, bias, mask))


def gradient_fn(kernel: Callable, mask: jax.Array, position: bool) -> Callable:
    """Gradients for q, k, v and, if the case has one, the position bias."""
    def loss(q, k, v, bias):
        out = kernel(q, k, v, (bias, mask) if position else (mask,))
        return jnp.sum(out * out)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3) if position else (0, 1, 2)))


def time_case(name: str, repeats: int) -> dict[str, float]:
    q, k, v, bias, mask = case_inputs(*CASES[name])
    fns = {kernel: gradient_fn(fn, mask, CASES[name][2]) for kernel, fn in KERNELS.items()}
    grads = {kernel: jax.block_until_ready(fn(q, k, v, bias)) for kernel, fn in fns.items()}
    worst = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
                for a, b in zip(grads["blocked"], grads["xla"], strict=True))
    times: dict[str, list[float]] = {kernel: [] for kernel in fns}
    for _ in range(repeats):
        for kernel, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(q, k, v, bias))
            times[kernel].append(time.perf_counter() - start)
    median = {kernel: statistics.median(ts) for kernel, ts in times.items()}
    q_len, k_len = CASES[name][:2]
    flops = 3 * 2 * 2 * BATCH * HEADS * q_len * k_len * HEAD_DIM  # forward's GEMMs x 3
    print(f"{name:13s} blocked {median['blocked'] * 1e3:7.1f} ms "
          f"({flops / median['blocked'] / 1e9:5.1f} GFLOP/s), xla {median['xla'] * 1e3:7.1f} ms; "
          f"xla / blocked {median['xla'] / median['blocked']:.2f}x; "
          f"max relative gradient difference {worst:.1e}")
    return {f"{name}_blocked_ms": round(median["blocked"] * 1e3, 1),
            f"{name}_xla_ms": round(median["xla"] * 1e3, 1),
            f"{name}_xla_over_blocked": round(median["xla"] / median["blocked"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    result: dict[str, float] = {}
    for name in CASES:
        result.update(time_case(name, args.repeats))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
