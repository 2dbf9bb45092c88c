"""Preference runs on 8 simulated CPU devices (fsdp, data x model) equal the one-device run,
with the reference in the step or precomputed; across 2 processes the precomputed reference
trains as the reference in the step does."""

from __future__ import annotations

import pytest

from flantune.testing.multiprocess import run_python
from tests.preference.sharded_cases import write_pairs

CASE = "import runpy, sys; runpy.run_module('tests.preference.sharded_cases', run_name='__main__')"


def _close(a, b) -> bool:
    return all(x == pytest.approx(y, rel=2e-5, abs=1e-6) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_every_mesh_and_two_processes_give_the_one_device_run(tmp_path):
    pairs = str(tmp_path / "pairs.jsonl")
    write_pairs(pairs)
    (reference,) = run_python(CASE, devices_per_process=1,
                              args=("one_device", pairs, str(tmp_path / "one")), timeout=900)
    (runs,) = run_python(CASE, devices_per_process=8,
                         args=("across_meshes", pairs, str(tmp_path / "meshes")), timeout=900)
    assert reference["losses"][2] < reference["losses"][0]
    for name, run in runs.items():
        assert _close(run["losses"], reference["losses"]), (name, run, reference)
        # (At step 1 policy = reference: a margin is 0 up to rounding, its sign is noise.)
        assert run["accuracy"][1:] == reference["accuracy"][1:], name
        assert _close([run["held_out_loss"]], [reference["held_out_loss"]]), name
    # Two processes: the precomputed reference (each process caches its own rows) trains as
    # the reference in the step does, and the held-out pairs score alike.
    runs = {}
    for mode in ("precompute", "in_step"):
        first, second = run_python(CASE, num_processes=2, devices_per_process=4,
                                   args=("two_processes", pairs, str(tmp_path / mode), mode),
                                   timeout=900)
        assert first["losses"] == second["losses"]
        runs[mode] = first
    assert _close(runs["precompute"]["losses"], runs["in_step"]["losses"]), runs
    assert _close([runs["precompute"]["held_out_loss"]], [runs["in_step"]["held_out_loss"]])
    assert runs["in_step"]["losses"][0] == pytest.approx(reference["losses"][0], abs=1e-6)
