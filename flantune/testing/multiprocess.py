"""Run Python code in fresh interpreters with simulated CPU devices, one or several processes.

Device counts are fixed when JAX starts (`--xla_force_host_platform_device_count`), so code that
needs several devices runs in its own interpreter. With several processes, each gets the
variables `flantune.partitioning.initialize_distributed` reads (coordinator on 127.0.0.1 and a
free port), so the code only has to call it. Each process must print one JSON value as the last
line of its stdout; the results come back in process order. A process that fails, or a run past
its timeout, stops every process and raises with their stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


class MultiprocessError(RuntimeError):
    """A launched process failed, printed no JSON result, or the run timed out."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _xla_flags(devices: int) -> str:
    kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
            if not flag.startswith(DEVICE_COUNT_FLAG)]
    return " ".join([*kept, f"{DEVICE_COUNT_FLAG}={devices}"])


def _process_env(process_id: int, num_processes: int, devices: int, port: int | None,
                 extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "XLA_FLAGS": _xla_flags(devices),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        "FLANTUNE_PROCESS_ID": str(process_id),
        "FLANTUNE_NUM_PROCESSES": str(num_processes),
    })
    if port is not None:
        env["FLANTUNE_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
    env.update(extra or {})
    return env


def _kill(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for process in processes:
        process.wait()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _last_json(stdout: str, process_id: int, stderr: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as err:
        raise MultiprocessError(
            f"process {process_id} printed no JSON as its last stdout line.\nstdout:\n"
            f"{_tail(stdout)}\nstderr:\n{_tail(stderr)}") from err


def run_python(code: str, *, num_processes: int = 1, devices_per_process: int = 1,
               env: Mapping[str, str] | None = None, timeout: float = 300.0,
               args: tuple[str, ...] = ()) -> list[Any]:
    """Runs `python -c code *args` in `num_processes` processes with `devices_per_process` CPU
    devices each and returns each process's last stdout line parsed as JSON."""
    port = free_port() if num_processes > 1 else None
    with tempfile.TemporaryDirectory(prefix="flantune_mp_") as tmp:
        logs = [(Path(tmp) / f"{i}.out", Path(tmp) / f"{i}.err") for i in range(num_processes)]
        processes: list[subprocess.Popen] = []
        try:
            for i, (out, err) in enumerate(logs):
                with open(out, "wb") as stdout, open(err, "wb") as stderr:
                    processes.append(subprocess.Popen(
                        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, stdout=stdout,
                        stderr=stderr, start_new_session=True,
                        env=_process_env(i, num_processes, devices_per_process, port, env)))
            deadline = time.monotonic() + timeout
            timed_out = False
            while any(p.poll() is None for p in processes):
                if any(p.poll() not in (None, 0) for p in processes):
                    break  # one failed: the others may wait for it forever
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:
            _kill(processes)
        outputs = [(out.read_text(errors="replace"), err.read_text(errors="replace"))
                   for out, err in logs]
    failed = [i for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        reason = f"timed out after {timeout:.0f} s" if timed_out else "failed"
        details = "\n".join(
            f"--- process {i} (exit code {processes[i].returncode}) stderr:\n"
            f"{_tail(outputs[i][1])}" for i in failed)
        raise MultiprocessError(f"{len(failed)} of {num_processes} processes {reason}.\n"
                                f"{details}")
    return [_last_json(stdout, i, stderr) for i, (stdout, stderr) in enumerate(outputs)]
