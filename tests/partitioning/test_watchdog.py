"""A process of a 2-process run dies: the other stops within a bounded time with a message
naming the dead process, instead of hanging in a collective, and before JAX's own abort; clean
exits raise no alarm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flantune.partitioning import DistributedInitError, initialize_distributed
from flantune.partitioning import watchdog as wd
from flantune.partitioning.watchdog import EXIT_PEER_LOST, PeerWatchdog
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


def _process_env(pid: int, port: int) -> dict[str, str]:
    """The environment of process `pid` of a 2-process run on 127.0.0.1:`port`."""
    return dict(os.environ, JAX_PLATFORMS="cpu", FLANTUNE_PROCESS_ID=str(pid),
                FLANTUNE_NUM_PROCESSES="2", FLANTUNE_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                PYTHONPATH=str(REPO_ROOT), XLA_FLAGS="")


def _launch(mode: str) -> list[subprocess.Popen]:
    port = free_port()
    processes = []
    for pid in range(2):
        env = _process_env(pid, port)
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


class _FakeClient:
    """The coordination service's key-value store, with process 1's counter either advancing at
    every read (alive) or stuck (dead)."""

    def __init__(self, peer_alive: bool):
        self.store: dict[str, str] = {}
        self.peer_alive, self.reads = peer_alive, 0

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        self.store[key] = value

    def key_value_try_get(self, key: str) -> str:
        if key.endswith("/1"):
            self.reads += 1
            return str(self.reads) if self.peer_alive else "7"
        return self.store[key]


def _watchdog(monkeypatch, peer_alive: bool, failures: list[str]) -> tuple[PeerWatchdog,
                                                                             _FakeClient]:
    client = _FakeClient(peer_alive)
    monkeypatch.setattr(wd, "_client", lambda: client)
    monkeypatch.setattr(wd.jax, "process_index", lambda: 0)
    monkeypatch.setattr(wd.jax, "process_count", lambda: 2)
    return PeerWatchdog(1.0, 0.05, on_failure=failures.append), client


def test_jax_heartbeat_timeout_puts_jax_abort_after_the_watchdog_stop():
    for timeout, interval in ((60.0, 2.0), (4.0, 0.5), (600.0, 10.0), (2.5, 2.0)):
        heartbeat = wd.jax_heartbeat_timeout(timeout, interval)
        # JAX aborts between heartbeat / 2 and heartbeat after a death; the watchdog stops at
        # most one timeout and two intervals after it.
        earliest_jax_abort = heartbeat / 2
        assert earliest_jax_abort - (timeout + 2 * interval) >= wd.JAX_ABORT_MARGIN_SECONDS
    assert wd.jax_heartbeat_timeout() == 188  # JAX's default, 100 s, raced the watchdog's 60 s
    with pytest.raises(ValueError, match="must exceed the heartbeat interval"):
        wd.jax_heartbeat_timeout(2.0, 2.0)


def test_initialize_distributed_gives_jax_the_derived_heartbeat_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(wd.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(wd.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    initialize_distributed("127.0.0.1:1234", 2, 0)
    initialize_distributed("127.0.0.1:1234", 2, 0, peer_timeout_seconds=300)
    assert [c["heartbeat_timeout_seconds"] for c in calls] == [
        wd.jax_heartbeat_timeout(), wd.jax_heartbeat_timeout(300)]
    with pytest.raises(DistributedInitError, match="peer timeout 1 s must exceed"):
        initialize_distributed("127.0.0.1:1234", 2, 0, peer_timeout_seconds=1)


def test_a_failing_process_names_a_dead_peer_instead_of_its_own_error(monkeypatch):
    failures: list[str] = []
    watchdog, client = _watchdog(monkeypatch, peer_alive=False, failures=failures)
    with pytest.raises(RuntimeError, match="Connection reset by peer"):
        with watchdog:
            raise RuntimeError("Gloo all-reduce failed: Connection reset by peer")
    assert len(failures) == 1
    assert "process 1 of this 2-process run sent no heartbeat" in failures[0]
    assert client.store["flantune/heartbeat/0"] != "done"


def test_a_failing_process_with_live_peers_keeps_its_error_and_is_not_marked_done(monkeypatch):
    failures: list[str] = []
    watchdog, client = _watchdog(monkeypatch, peer_alive=True, failures=failures)
    start = time.monotonic()
    with pytest.raises(KeyError):
        with watchdog:
            raise KeyError("a bug of this process")
    assert failures == []
    assert time.monotonic() - start < watchdog.timeout  # the live peer was seen, no timeout
    assert client.store["flantune/heartbeat/0"] != "done"  # its peers notice when it exits


def test_a_clean_stop_marks_the_process_done(monkeypatch):
    failures: list[str] = []
    watchdog, client = _watchdog(monkeypatch, peer_alive=True, failures=failures)
    with watchdog:
        pass
    assert failures == [] and client.store["flantune/heartbeat/0"] == "done"


# `flantune train` on 2 processes with every timeout at its default; process 1 is killed once a
# checkpoint exists. JAX's abort (a C++ check failure, exit -6) used to race the watchdog.
TRAIN = ("-m", "flantune.cli", "train", "--gin_file=gin_configs/runs/demo.gin",
         "--gin.TRAIN_STEPS=1000000", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 16}",
         "--gin.BATCH_SIZE=4", "--gin.EVAL_MIXTURE_OR_TASK_NAME=None",
         "--gin.flantune.CheckpointConfig.save_interval_steps=10")


def _launch_train(model_dir: Path, logs: Path) -> list[subprocess.Popen]:
    port = free_port()
    processes = []
    for pid in range(2):
        env = _process_env(pid, port)
        with open(logs / f"{pid}.log", "wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, *TRAIN, f"--gin.MODEL_DIR='{model_dir}'"], cwd=REPO_ROOT,
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return processes


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))  # JAX's heartbeat phase at the kill differs per run
def test_default_settings_a_killed_process_is_named_before_jax_aborts(tmp_path, run):
    model_dir = tmp_path / "run"
    processes = _launch_train(model_dir, tmp_path)
    try:
        deadline = time.monotonic() + 600  # start-up and 10 steps take ~45 s on 2 cores
        while not (model_dir / "10").is_dir():
            assert all(p.poll() is None for p in processes), (tmp_path / "0.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.2)
        os.kill(processes[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        # Wait past JAX's latest abort, so that losing the race shows as exit -6, not a hang.
        code = processes[0].wait(timeout=wd.jax_heartbeat_timeout() + 60)
        after = time.monotonic() - killed
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log = (tmp_path / "0.log").read_text(errors="replace")
    print(f"run {run}: process 0 exited with {code} {after:.1f} s after process 1 was killed")
    assert code == EXIT_PEER_LOST, (code, after, log[-3000:])
    assert "process 1 of this 2-process run sent no heartbeat for" in log
    assert "(limit 60 s)" in log  # the default --peer_timeout_seconds
    assert "Check failure" not in log and "Terminating process" not in log
    # Within the watchdog's bound, and before JAX's earliest abort.
    assert wd.DEFAULT_TIMEOUT_SECONDS - wd.DEFAULT_INTERVAL_SECONDS <= after
    assert after < wd.detection_bound() + 10 < wd.jax_heartbeat_timeout() / 2
