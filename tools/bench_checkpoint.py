"""How long the training loop is blocked by an asynchronous checkpoint save, against a
synchronous save of the same train state, in the same run.

Builds a T5 v1.1-small train state (flantune's T5 parameters + an optax optimizer state, step,
RNG), then alternates `Checkpointer.save` with `async_save=True` (timing only the call: what the
loop waits for) and with `async_save=False` (the whole write), waiting for each background write
to finish before the next timed call. Ends with one JSON line of headline figures.

    python tools/bench_checkpoint.py [--optimizer adafactor|adamw] [--repeats 6] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

import jax
import jax.numpy as jnp
import optax

from flantune.models import T5Config, build_model, model_params
from flantune.train.checkpoints import CheckpointConfig, Checkpointer

OPTIMIZERS = {"adafactor": lambda: optax.adafactor(1e-3), "adamw": lambda: optax.adamw(1e-3)}


def train_state(optimizer: str) -> dict:
    """T5-small parameters and the optimizer's state after one update (so no leaf is trivial)."""
    params = model_params(build_model(T5Config()))
    tx = OPTIMIZERS[optimizer]()

    @jax.jit
    def init_and_update(params):
        opt_state = tx.init(params)
        grads = jax.tree.map(lambda p: 1e-3 * p, params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = init_and_update(params)
    return {"params": params, "opt_state": opt_state, "step": jnp.asarray(0, jnp.int32),
            "rng": jax.random.PRNGKey(0)}


def state_bytes(state: dict) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


def timed_save(checkpointer: Checkpointer, step: int, state: dict) -> float:
    """Seconds the caller is blocked by one `save` call."""
    start = time.perf_counter()
    checkpointer.save(step, state, data_state=json.dumps({"position": step}), force=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adafactor")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write (default: a temporary directory, removed after)")
    args = parser.parse_args(argv)

    state = train_state(args.optimizer)
    jax.block_until_ready(state)
    size = state_bytes(state)
    print(f"T5-small train state with {args.optimizer}: {size / 1e6:.1f} MB in "
          f"{len(jax.tree.leaves(state))} arrays")

    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        async_ckpt = Checkpointer(Path(root) / "async", CheckpointConfig(keep=1, async_save=True))
        sync_ckpt = Checkpointer(Path(root) / "sync", CheckpointConfig(keep=1, async_save=False))
        # One untimed save each: first-call setup (directory metadata, thread pools).
        timed_save(async_ckpt, 0, state)
        async_ckpt.wait_until_finished()
        timed_save(sync_ckpt, 0, state)
        blocked, background, sync = [], [], []
        for step in range(1, args.repeats + 1):
            blocked.append(timed_save(async_ckpt, step, state))
            start = time.perf_counter()
            async_ckpt.wait_until_finished()
            background.append(blocked[-1] + time.perf_counter() - start)
            sync.append(timed_save(sync_ckpt, step, state))
            print(f"round {step}: async call {blocked[-1]:.3f} s (write done after "
                  f"{background[-1]:.2f} s), sync save {sync[-1]:.2f} s")
        async_ckpt.close()
        sync_ckpt.close()

    result = {
        "benchmark": "checkpoint_save",
        "optimizer": args.optimizer,
        "state_mb": round(size / 1e6, 1),
        "repeats": args.repeats,
        "async_blocked_s_median": round(statistics.median(blocked), 4),
        "async_total_s_median": round(statistics.median(background), 3),
        "sync_s_median": round(statistics.median(sync), 3),
        "blocked_over_sync": round(statistics.median(blocked) / statistics.median(sync), 4),
        "goal": 0.1,
    }
    print(f"blocked per async save / synchronous save: {result['blocked_over_sync']:.3f} "
          f"(goal <= 0.1)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
