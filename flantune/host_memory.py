"""glibc malloc settings that keep XLA:CPU's freed buffers in the process (CPU hosts only).

XLA:CPU allocates the temporary buffers of every executed program (hundreds of MB for a T5-small
train step) with malloc. By default glibc serves such large blocks with fresh `mmap`s, or from
per-thread arenas that it shrinks again, so each step page-faults its whole working set back in
(~70k faults per T5-small encoder layer's forward and backward) and the kernel zeroes every page.
One malloc arena that never unmaps or trims freed memory removes that: measured here, a
T5-small train step takes ~11% less time (6.6 -> 5.9 s on 2 cores).

The settings must be in place before JAX starts its threads, so `import flantune` applies them
when `jax` is not imported yet (`import flantune` before `import jax` in scripts). Freed memory
then stays with the process (as with tcmalloc), so its resident size is its peak. On GPU and TPU
hosts device buffers do not come from malloc and the settings only change how host memory is
reused. FLANTUNE_TUNE_MALLOC=0 leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int; glibc stores the trim threshold as a size_t, so -1 means "never trim"
# (any positive int would cap it at 2 GB, less than a T5-small train step's temporaries).
_NEVER = -1

_applied = False


def tune_malloc() -> bool:
    """Applies the settings above once per process; returns whether they are in effect.

    Skipped (False) when FLANTUNE_TUNE_MALLOC=0, when the C library is not glibc, or when JAX
    is already imported (its threads may hold arenas of their own; the settings would then
    make no difference).
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("FLANTUNE_TUNE_MALLOC", "1") == "0" or "jax" in sys.modules:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    _applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER)))
    return _applied


def malloc_tuned() -> bool:
    """Whether `tune_malloc` took effect in this process."""
    return _applied
