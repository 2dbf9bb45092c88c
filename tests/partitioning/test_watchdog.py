"""A process of a 2-process run dies: the other stops within a bounded time with a message
naming the dead process, instead of hanging in a collective; clean exits raise no alarm."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flantune.partitioning.watchdog import EXIT_PEER_LOST
from flantune.testing.multiprocess import REPO_ROOT, free_port

WORKER = r"""
import os, sys, time
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flantune.partitioning import initialize_distributed
from flantune.partitioning.watchdog import PeerWatchdog

mode = sys.argv[1]
initialize_distributed()
me = jax.process_index()
mesh = Mesh(np.array(jax.devices()), ("data",))
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
watchdog = PeerWatchdog(timeout_seconds=4, interval_seconds=0.5).start()
for step in range(40):
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")),
                                               np.ones(1, np.float32))
    float(total(x))
    if mode.startswith("die") and me == int(mode[-1]) and step == 5:
        os._exit(3)  # killed: no clean shutdown
    time.sleep(0.1)
watchdog.stop()
if me == 0:
    time.sleep(8)  # the peer has exited cleanly meanwhile: no alarm
print("finished", flush=True)
"""


def _launch(mode: str) -> list[subprocess.Popen]:
    port = free_port()
    processes = []
    for pid in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", FLANTUNE_PROCESS_ID=str(pid),
                   FLANTUNE_NUM_PROCESSES="2", FLANTUNE_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   PYTHONPATH=str(REPO_ROOT), XLA_FLAGS="")
        processes.append(subprocess.Popen([sys.executable, "-c", WORKER, mode], cwd=REPO_ROOT,
                                          env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


def _finish(processes, timeout: float) -> list[tuple[int, str, str]]:
    out = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"a process hung past {timeout} s:\n{stderr[-2000:]}")
        out.append((process.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_survivor_stops_with_a_clear_message_when_a_peer_dies():
    start = time.monotonic()
    (code0, _, err0), (code1, _, _) = _finish(_launch("die1"), timeout=90)
    assert code1 == 3
    assert code0 == EXIT_PEER_LOST, err0[-2000:]
    assert "process 1 of this 2-process run sent no heartbeat" in err0
    assert "restart every process" in err0
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_when_the_coordinator_dies_the_others_stop_with_a_message():
    start = time.monotonic()
    (code0, _, _), (code1, _, err1) = _finish(_launch("die0"), timeout=90)
    assert code0 == 3
    assert code1 != 0
    # Either the watchdog's message or JAX's own abort, which names the dead leader.
    assert ("lost contact with the coordinator" in err1
            or "leader task was preempted/died" in err1), err1[-2000:]
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_clean_exits_do_not_trigger_the_watchdog():
    results = _finish(_launch("clean"), timeout=90)
    for code, stdout, stderr in results:
        assert code == 0, stderr[-2000:]
        assert "finished" in stdout
