"""Per-device bytes of parameters + optimizer state for T5-small (`T5Config()`) with the FSDP
preset over 8 simulated CPU devices, against the same state on 1 device.

Bytes are read from the actual device buffers (`addressable_shards`), largest device first.
Runs the measurement in a subprocess started with 8 devices; prints a table and ends with one
JSON line of headline ratios (goal: <= 0.15; ideal 1/8 = 0.125).

    python tools/bench_memory.py
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from typing import Any

MEASURE_FLAG = "--measure"


def _per_device_bytes(*trees: Any) -> dict[int, int]:
    import jax

    totals: dict[int, int] = collections.Counter()
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            for shard in leaf.addressable_shards:
                totals[shard.device.id] += shard.data.nbytes
    return dict(totals)


def measure() -> dict[str, Any]:
    """Run inside the 8-device interpreter: bytes per device for each optimizer and mesh."""
    import jax
    import optax
    from flax import nnx

    from flantune import partitioning as pt
    from flantune.models import T5Config, build_model

    config = T5Config()
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0))),
                                nnx.Param)
    rules = pt.axis_rules("fsdp")
    optimizers = {"adafactor": optax.adafactor(1e-3), "adamw": optax.adamw(1e-3)}
    meshes = {"fsdp8": pt.make_mesh(pt.MeshConfig(data=1, fsdp=8)),
              "one_device": pt.make_mesh(pt.MeshConfig(data=1), devices=jax.devices()[:1])}
    results: dict[str, Any] = {}
    for mesh_name, mesh in meshes.items():
        shardings = pt.param_shardings(state, mesh, rules)
        params = jax.jit(lambda: nnx.state(build_model(config, nnx.Rngs(0)),
                                           nnx.Param).to_pure_dict(),
                         out_shardings=shardings)()
        param_bytes = _per_device_bytes(params)
        for opt_name, tx in optimizers.items():
            opt_shapes = jax.eval_shape(tx.init, params)
            opt_shardings = pt.opt_state_shardings(opt_shapes, shardings, mesh,
                                                   param_shapes=params)
            opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
            opt_bytes = _per_device_bytes(opt_state)
            total = {d: param_bytes.get(d, 0) + opt_bytes.get(d, 0) for d in param_bytes}
            results.setdefault(opt_name, {})[mesh_name] = {
                "devices": len(total),
                "max_param_bytes": max(param_bytes.values()),
                "max_opt_bytes": max(opt_bytes.values()),
                "max_total_bytes": max(total.values()),
                "min_total_bytes": min(total.values()),
            }
            del opt_state
        del params
    results["num_params"] = sum(int(v.size) for v in jax.tree.leaves(state))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(MEASURE_FLAG, action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().measure:
        print(json.dumps(measure()))
        return
    from flantune.testing import run_python

    code = ("import runpy, sys; sys.argv = ['bench_memory.py', '--measure']; "
            "runpy.run_path('tools/bench_memory.py', run_name='__main__')")
    results = run_python(code, devices_per_process=8, timeout=1800)[0]
    mib = 2 ** 20
    print(f"T5-small (T5Config()): {results['num_params']:,} parameters, float32, fsdp preset")
    print(f"{'optimizer':<10} {'mesh':<11} {'params MiB/dev':>15} {'opt MiB/dev':>12} "
          f"{'total MiB/dev (max)':>20} {'(min)':>8}")
    headline = {}
    for opt_name in ("adafactor", "adamw"):
        for mesh_name in ("one_device", "fsdp8"):
            r = results[opt_name][mesh_name]
            print(f"{opt_name:<10} {mesh_name:<11} {r['max_param_bytes'] / mib:>15.1f} "
                  f"{r['max_opt_bytes'] / mib:>12.1f} {r['max_total_bytes'] / mib:>20.1f} "
                  f"{r['min_total_bytes'] / mib:>8.1f}")
        ratio = (results[opt_name]["fsdp8"]["max_total_bytes"]
                 / results[opt_name]["one_device"]["max_total_bytes"])
        headline[f"fsdp8_bytes_ratio_{opt_name}"] = round(ratio, 4)
    print(json.dumps(headline))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
