"""Starting the multi-process runtime: single-process no-ops and clear errors."""

from __future__ import annotations

import pytest

from flantune.partitioning import DistributedInitError, initialize_distributed
from flantune.testing import free_port, run_python


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("FLANTUNE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS",
                 "FLANTUNE_NUM_PROCESSES", "FLANTUNE_PROCESS_ID", "FLANTUNE_LOCAL_DEVICE_IDS",
                 "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                 "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_is_a_no_op(clean_env):
    assert initialize_distributed() is False
    assert initialize_distributed("127.0.0.1:1234", num_processes=1, process_id=0) is False
    clean_env.setenv("FLANTUNE_NUM_PROCESSES", "1")
    assert initialize_distributed() is False


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 0},
     r"coordinator address '127.0.0.1' must be host:port"),
    ({"coordinator_address": "127.0.0.1:99999", "num_processes": 2, "process_id": 0},
     r"must be host:port"),
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
     r"process_id=2 must be in \[0, 2\)"),
])
def test_bad_arguments_are_rejected_before_starting(clean_env, kwargs, message):
    with pytest.raises(DistributedInitError, match=message):
        initialize_distributed(**kwargs)


def test_bad_environment_values_name_the_variable(clean_env):
    clean_env.setenv("FLANTUNE_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    clean_env.setenv("FLANTUNE_NUM_PROCESSES", "two")
    with pytest.raises(DistributedInitError, match=r"FLANTUNE_NUM_PROCESSES='two' is not an int"):
        initialize_distributed()


def test_unreachable_coordinator_times_out_with_a_clear_error():
    code = (
        "import json\n"
        "from flantune.partitioning import DistributedInitError, initialize_distributed\n"
        "try:\n"
        "    initialize_distributed(timeout_seconds=3)\n"
        "    print(json.dumps(None))\n"
        "except DistributedInitError as err:\n"
        "    print(json.dumps(str(err)))\n")
    # Process 1 of 2 with nobody listening at the coordinator's port.
    env = {"FLANTUNE_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}",
           "FLANTUNE_NUM_PROCESSES": "2", "FLANTUNE_PROCESS_ID": "1"}
    message = run_python(code, env=env, timeout=120)[0]
    assert message is not None
    assert message.startswith("process 1 of 2 could not reach the coordinator at 127.0.0.1:")
    assert "Check that process 0 runs" in message
