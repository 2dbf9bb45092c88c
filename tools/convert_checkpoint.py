"""Convert model checkpoints between Hugging Face and flantune.

    python -m tools.convert_checkpoint hf-to-flantune HF_DIR OUT_DIR [--scan-layers]
    python -m tools.convert_checkpoint flantune-to-hf SOURCE OUT_DIR \
        [--max-shard-size 5GB] [--dtype bfloat16] [--vocabulary SPM_MODEL | --no-tokenizer]

SOURCE is a training run's MODEL_DIR (its newest step), a step directory or hf-to-flantune's
output; see `flantune.export.command` for the options.

The implementation is `flantune.export.command.main(argv)`, which the `flantune convert`
command can call directly.
"""

from __future__ import annotations

import sys

from flantune.export.command import main, parse_size

__all__ = ["main", "parse_size"]

if __name__ == "__main__":
    sys.exit(main())
