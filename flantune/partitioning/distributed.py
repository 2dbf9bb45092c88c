"""Starting JAX's multi-process runtime from arguments or the environment."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence

import jax

from flantune.partitioning.errors import DistributedInitError
from flantune.partitioning.watchdog import DEFAULT_TIMEOUT_SECONDS, jax_heartbeat_timeout

# Environment variables read when an argument is not given (FLANTUNE_* first).
ADDRESS_ENV = ("FLANTUNE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")
NUM_PROCESSES_ENV = "FLANTUNE_NUM_PROCESSES"
PROCESS_ID_ENV = "FLANTUNE_PROCESS_ID"
LOCAL_DEVICE_IDS_ENV = "FLANTUNE_LOCAL_DEVICE_IDS"
# Markers of the cluster environments JAX detects by itself (Slurm, Open MPI, Cloud TPU).
CLUSTER_ENV_MARKERS = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                       "MEGASCALE_COORDINATOR_ADDRESS")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError as err:
        raise DistributedInitError(f"environment variable {name}={text!r} is not an int.") from err


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedInitError(
            f"coordinator address {address!r} must be host:port (e.g. 10.0.0.1:1234), the "
            "address of process 0 and a free port on it.")


def _wait_for_coordinator(address: str, timeout_seconds: float, who: str) -> None:
    """Waits until something listens at `address`. JAX's runtime aborts the whole process (no
    Python exception) when it cannot reach the coordinator, so a clear error must come first."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedInitError(
                    f"{who} could not reach the coordinator at {address} within "
                    f"{timeout_seconds} s ({err}). Check that process 0 runs, that the address "
                    "and port are reachable from every process, and that all processes agree on "
                    "them.") from err
            time.sleep(0.2)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Sequence[int] | None = None,
                           *, timeout_seconds: int = 300,
                           peer_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """Calls `jax.distributed.initialize` unless this is a single-process run.

    `peer_timeout_seconds` is the `PeerWatchdog` timeout the run will use: JAX's heartbeat
    timeout is derived from it so that JAX's abort of the survivors of a dead process (a C++
    check failure) comes well after the watchdog's named stop (see `jax_heartbeat_timeout`).
    Unset arguments come from FLANTUNE_COORDINATOR_ADDRESS (or JAX_COORDINATOR_ADDRESS),
    FLANTUNE_NUM_PROCESSES, FLANTUNE_PROCESS_ID and FLANTUNE_LOCAL_DEVICE_IDS (comma-separated),
    else from JAX's cluster auto-detection (Slurm, Open MPI, Cloud TPU). Returns whether the
    multi-process runtime is running. Must be called before any other JAX computation.
    """
    if jax.distributed.is_initialized():
        return True
    env = os.environ
    if coordinator_address is None:
        coordinator_address = next((env[name] for name in ADDRESS_ENV if env.get(name)), None)
    if num_processes is None:
        num_processes = _env_int(env, NUM_PROCESSES_ENV)
    if process_id is None:
        process_id = _env_int(env, PROCESS_ID_ENV)
    if local_device_ids is None and env.get(LOCAL_DEVICE_IDS_ENV):
        text = env[LOCAL_DEVICE_IDS_ENV]
        try:
            local_device_ids = [int(part) for part in text.split(",")]
        except ValueError as err:
            raise DistributedInitError(
                f"{LOCAL_DEVICE_IDS_ENV}={text!r} must be comma-separated ints.") from err
    if num_processes == 1:
        return False
    in_cluster = any(env.get(name) for name in CLUSTER_ENV_MARKERS)
    if coordinator_address is None and num_processes is None and not in_cluster:
        return False
    if coordinator_address is not None:
        _check_address(coordinator_address)
    if num_processes is not None and num_processes < 1:
        raise DistributedInitError(f"num_processes={num_processes} must be >= 1.")
    if process_id is not None and num_processes is not None and not (
            0 <= process_id < num_processes):
        raise DistributedInitError(
            f"process_id={process_id} must be in [0, {num_processes}) for num_processes="
            f"{num_processes}.")
    try:
        heartbeat_timeout = jax_heartbeat_timeout(peer_timeout_seconds)
    except ValueError as err:
        raise DistributedInitError(str(err)) from None
    who = f"process {process_id} of {num_processes}"
    if coordinator_address is not None and process_id not in (None, 0):
        _wait_for_coordinator(coordinator_address, timeout_seconds, who)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=timeout_seconds,
                                   heartbeat_timeout_seconds=heartbeat_timeout)
    except Exception as err:  # the runtime raises bare RuntimeErrors / XlaRuntimeErrors
        raise DistributedInitError(
            f"{who} could not start the multi-process runtime with coordinator "
            f"{coordinator_address} within {timeout_seconds} s: {err}. Check that process 0 "
            "runs, that the address and port are reachable from every process, and that all "
            "processes agree on them.") from err
    return True
