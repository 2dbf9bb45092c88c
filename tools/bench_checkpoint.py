"""How long the training loop is blocked by an asynchronous checkpoint save, against a
synchronous save of the same train state, in the same run.

Builds a T5 v1.1-small train state (flantune's T5 parameters + an optax optimizer state, step,
RNG) and saves it, in rounds, in three ways: `async_save=False` (the whole write: the
reference), `async_save=True` as shipped (in one process orbax's save call runs on the
checkpointer's writer thread with a snapshot of the state) and `async_save=True,
save_in_thread=False` (orbax called on the loop's thread). Two figures per async way:

- the `save` call: what the loop waits for before it can dispatch its next step;
- the loop's cost: a stand-in train step (jitted f32 matmuls, ~1 s on 2 cores) is dispatched
  right after the save, then the loop's next checkpointer call (`should_save`, which waits for
  the writer thread) and the step's result; the cost is how much longer that takes than the
  same step without a save (medians over rounds). It includes the work the writer thread and
  the snapshot copy take from the step's cores, which on a 2-core CPU is most of it.

Each background write is finished before the next timed call. Also times the checkpoint
checksums (`flantune.train.fingerprints`) of the whole state on their own: the background work
they add to every save. Ends with one JSON line of headline figures (goal: blocked / sync <=
0.05).

    python tools/bench_checkpoint.py [--optimizer adafactor|adamw] [--repeats 6] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

import jax
import jax.numpy as jnp
import optax

from flantune.models import T5Config, build_model, model_params
from flantune.train.checkpoints import CheckpointConfig, Checkpointer
from flantune.train.fingerprints import start_fingerprint

OPTIMIZERS = {"adafactor": lambda: optax.adafactor(1e-3), "adamw": lambda: optax.adamw(1e-3)}
ASYNC_WAYS = {"thread": {"save_in_thread": True}, "caller": {"save_in_thread": False}}
STEP_MATMULS = 8  # 2048^3 f32 matmuls of the stand-in train step: ~1 s here
GOAL = 0.05


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


def stand_in_step() -> Callable[[], jax.Array]:
    """A jitted computation with a train step's profile: both cores busy for ~1 s."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2048, 2048), jnp.float32) / 64

    @jax.jit
    def step(x):
        for _ in range(STEP_MATMULS):
            x = jnp.tanh(x @ x)
        return x

    jax.block_until_ready(step(x))
    return lambda: step(x)


def checksum_seconds(state: dict) -> float:
    """Seconds to compute (and fetch) the checksums of every array of `state`."""
    start = time.perf_counter()
    start_fingerprint(state).fetch()
    return time.perf_counter() - start


def timed_save(checkpointer: Checkpointer, step: int, state: dict) -> float:
    """Seconds the caller is blocked by one `save` call."""
    start = time.perf_counter()
    checkpointer.save(step, state, data_state=json.dumps({"position": step}), force=True)
    return time.perf_counter() - start


def loop_time(checkpointer: Checkpointer | None, step: int, state: dict,
              train_step: Callable[[], jax.Array]) -> float:
    """Seconds from a save (none if `checkpointer` is None) to the next step's result, as the
    training loop sees them."""
    start = time.perf_counter()
    if checkpointer is not None:
        timed_save(checkpointer, step, state)
    result = train_step()
    if checkpointer is not None:
        checkpointer.should_save(step + 1)
    jax.block_until_ready(result)
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
    train_step = stand_in_step()
    checksum_seconds(state)  # compiles
    checksums = [checksum_seconds(state) for _ in range(3)]
    print(f"checksums of every array: {statistics.median(checksums):.3f} s")

    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        sync_ckpt = Checkpointer(Path(root) / "sync", CheckpointConfig(keep=1, async_save=False))
        async_ckpts = {way: Checkpointer(Path(root) / way,
                                         CheckpointConfig(keep=1, async_save=True, **options))
                       for way, options in ASYNC_WAYS.items()}
        # One untimed save each: first-call setup (directory metadata, thread pools, jit).
        timed_save(sync_ckpt, 0, state)
        for checkpointer in async_ckpts.values():
            timed_save(checkpointer, 0, state)
            checkpointer.wait_until_finished()
        sync: list[float] = []
        no_save: list[float] = []
        call = {way: [] for way in ASYNC_WAYS}
        in_loop = {way: [] for way in ASYNC_WAYS}
        step = 0
        for round_ in range(1, args.repeats + 1):
            step += 1
            sync.append(timed_save(sync_ckpt, step, state))
            no_save.append(loop_time(None, step, state, train_step))
            for way, checkpointer in async_ckpts.items():
                call[way].append(timed_save(checkpointer, step, state))
                checkpointer.wait_until_finished()
                in_loop[way].append(loop_time(checkpointer, step + 1, state, train_step))
                checkpointer.wait_until_finished()
            step += 1
            print(f"round {round_}: sync save {sync[-1]:.2f} s; step alone {no_save[-1]:.3f} s; "
                  + "; ".join(f"{way}: call {call[way][-1]:.3f} s, step after a save "
                              f"{in_loop[way][-1]:.3f} s" for way in ASYNC_WAYS))
        sync_ckpt.close()
        for checkpointer in async_ckpts.values():
            checkpointer.close()

    sync_s = statistics.median(sync)
    step_s = statistics.median(no_save)
    result: dict[str, object] = {
        "benchmark": "checkpoint_save", "optimizer": args.optimizer,
        "state_mb": round(size / 1e6, 1), "repeats": args.repeats,
        "sync_s_median": round(sync_s, 3), "step_s_median": round(step_s, 3),
        "checksum_s_median": round(statistics.median(checksums), 3)}
    for way in ASYNC_WAYS:
        blocked = statistics.median(call[way])
        cost = statistics.median(in_loop[way]) - step_s
        result[f"{way}_call_s_median"] = round(blocked, 4)
        result[f"{way}_loop_cost_s"] = round(cost, 4)
        result[f"{way}_call_over_sync"] = round(blocked / sync_s, 4)
        result[f"{way}_loop_cost_over_sync"] = round(cost / sync_s, 4)
    result["blocked_over_sync"] = result["thread_call_over_sync"]
    result["goal"] = GOAL
    for way in ASYNC_WAYS:
        print(f"{way}: save call / synchronous save {result[f'{way}_call_over_sync']:.3f}, "
              f"loop cost / synchronous save {result[f'{way}_loop_cost_over_sync']:.3f} "
              f"(goal: save call / synchronous save <= {GOAL})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
