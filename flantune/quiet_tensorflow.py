"""Imports TensorFlow (which SeqIO needs) without its start-up noise on stderr.

TensorFlow 2.21's C++ start-up logs (``oneDNN custom operations are on``, ``cudart_stub ...
Could not find cuda drivers``, absl's ``All log messages before absl::InitializeLog()``) go to
file descriptor 2 through absl and ignore ``TF_CPP_MIN_LOG_LEVEL``, so the only way to keep a
flantune command's output its own is to capture fd 2 while TensorFlow loads. Only the known
start-up lines are dropped; anything else TensorFlow prints is passed on, and everything is
shown when ``FLANTUNE_TF_LOGS=1``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|Could not find cuda drivers on your machine"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc.*already registered"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|cuda_executor\.cc.*could not open file to read NUMA node"
    r"|Unable to initialize backend 'cuda'"
)


def filter_noise(text: str) -> str:
    """`text` without TensorFlow's known start-up lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.search(line))


def import_tensorflow_quietly() -> None:
    """Imports tensorflow with its start-up lines on stderr removed (a no-op if it is already
    imported, or with FLANTUNE_TF_LOGS=1)."""
    if "tensorflow" in sys.modules or os.environ.get("FLANTUNE_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # older TensorFlow versions read it
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = filter_noise(captured.read().decode("utf-8", errors="replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
