"""Sharded training on 8 simulated CPU devices and across 2 processes (each in subprocesses)."""

from __future__ import annotations

import pytest

from flantune.testing.multiprocess import run_python

CASE = "import runpy, sys; runpy.run_module('tests.train.sharded_cases', run_name='__main__')"


def _close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-5)


@pytest.mark.slow
def test_loss_after_three_steps_is_the_same_on_every_mesh():
    (losses,) = run_python(CASE, devices_per_process=8, args=("losses_across_meshes",),
                           timeout=600)
    reference = losses.pop("one_device")
    assert reference[-1] < reference[0]
    for name, values in losses.items():
        assert all(_close(a, b) for a, b in zip(values, reference, strict=True)), (name, values,
                                                                                   reference)


@pytest.mark.slow
def test_restore_onto_another_mesh_gives_the_same_next_loss(tmp_path):
    (losses,) = run_python(CASE, devices_per_process=8,
                           args=("restore_on_other_meshes", str(tmp_path / "ckpt")), timeout=600)
    assert _close(losses["data4_model2"], losses["fsdp8"])
    assert _close(losses["one_device"], losses["fsdp8"])


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batches():
    first, second = run_python(CASE, num_processes=2, devices_per_process=4,
                               args=("multiprocess_losses",), timeout=600)
    assert first == second  # the loss is global: both processes report it
    (reference,) = run_python(CASE, devices_per_process=8, args=("single_process_reference",),
                              timeout=600)
    assert all(_close(a, b) for a, b in zip(first, reference, strict=True)), (first, reference)
