"""glibc malloc tuning: applied by `import flantune` before JAX, skipped after it or on request."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from flantune import host_memory

CHECK = ("import {first}, {second}; from flantune.host_memory import malloc_tuned; "
         "print(malloc_tuned())")


def _run(first: str, second: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", CHECK.format(first=first, second=second)],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_importing_flantune_before_jax_tunes_malloc_and_after_it_does_not():
    assert _run("flantune", "jax") == "True"
    assert _run("jax", "flantune") == "False"
    assert _run("flantune", "jax", FLANTUNE_TUNE_MALLOC="0") == "False"


def test_tuning_is_refused_once_jax_is_imported(monkeypatch):
    assert "jax" in sys.modules
    monkeypatch.setattr(host_memory, "_applied", False)
    assert host_memory.tune_malloc() is False
    assert host_memory.malloc_tuned() is False
