"""Runs in a fresh interpreter with 8 simulated CPU devices (see test_sharded.py): decodes the
tiny partitioning models on sharded meshes and on one device, printing one JSON line."""

from __future__ import annotations

import json

import jax
import numpy as np
from flax import nnx

from flantune import partitioning as pt
from flantune.decoding import DecodeConfig, left_pad_prompts, make_generate_fn
from flantune.models import build_model
from tests.partitioning import tiny_models as tm

CONFIGS = {
    "greedy": DecodeConfig(max_decode_length=8, eos_id=63),
    "sample": DecodeConfig(max_decode_length=8, eos_id=63, method="sample", top_k=20),
    "beam": DecodeConfig(max_decode_length=6, eos_id=63, method="beam", num_beams=3),
}


def _batch(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    if name == "t5":
        enc = rng.integers(2, 64, (tm.BATCH, 12)).astype(np.int32)
        enc[3, 7:] = 0
        return {"encoder_input_tokens": enc}
    return left_pad_prompts([rng.integers(2, 64, n).tolist() for n in (3, 9, 5, 1, 7, 9, 2, 4)])


def main() -> None:
    assert jax.device_count() == 8, jax.device_count()
    report: dict = {}
    for name, spec in tm.MODELS.items():
        model = build_model(spec, nnx.Rngs(0))
        batch = _batch(name)
        for method, config in CONFIGS.items():
            key = jax.random.key(7)
            alone = make_generate_fn(model, config)(batch, key)
            entry = {"rows_differ": len({tuple(r) for r in alone.tokens}) > 1}
            for mesh_name in ("data8", "data4_model2"):
                mesh = pt.make_mesh(pt.MeshConfig(**tm.MESHES[mesh_name]))
                rules = pt.axis_rules(tm.PRESET_FOR_MESH[mesh_name])
                sharded = make_generate_fn(model, config, mesh=mesh, rules=rules)(batch, key)
                entry[mesh_name] = {
                    "tokens_equal": bool(np.array_equal(sharded.tokens, alone.tokens)),
                    "score_max_abs_diff": float(np.abs(sharded.scores - alone.scores).max()),
                }
            report.setdefault(name, {})[method] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
