"""2 processes x 4 CPU devices (coordinator on 127.0.0.1) against 1 process x 8 devices: each
process feeds only its own rows; the sharded forward must agree with the single-process run."""

from __future__ import annotations

import numpy as np
import pytest

from flantune.testing import run_python

pytestmark = pytest.mark.slow

CODE = "from tests.partitioning.multihost import main; main()"


@pytest.fixture(scope="module")
def single() -> dict:
    return run_python(CODE, num_processes=1, devices_per_process=8, timeout=600)[0]


@pytest.fixture(scope="module")
def multi() -> list[dict]:
    return run_python(CODE, num_processes=2, devices_per_process=4, timeout=600)


def test_two_processes_joined_with_four_devices_each(multi):
    assert [(r["process_count"], r["local_devices"]) for r in multi] == [(2, 4), (2, 4)]


def test_replicas_are_laid_out_one_per_process(single, multi):
    assert multi[0]["replica_processes"] == [[0], [1]]
    assert single["replica_processes"] == [[0], [0]]


@pytest.mark.parametrize("mesh", ["data4_model2", "fsdp8", "replica2"])
def test_multi_process_forward_equals_single_process(single, multi, mesh):
    np.testing.assert_allclose(single[mesh], single["unsharded"], rtol=1e-5, atol=1e-4)
    for result in multi:
        np.testing.assert_allclose(result[mesh], single[mesh], rtol=1e-5, atol=1e-4)
