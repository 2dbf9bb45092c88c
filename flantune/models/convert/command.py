"""`flantune convert`: Hugging Face safetensors checkpoints <-> flantune parameter checkpoints.

    flantune convert hf-to-flantune HF_DIR OUT_DIR [--scan-layers] [--param-dtype float32]
    flantune convert flantune-to-hf FLANTUNE_DIR OUT_DIR [--max-shard-size 5GB] [--dtype bfloat16]

HF_DIR holds config.json and model.safetensors (or shards with model.safetensors.index.json) for
T5 v1.0, T5 v1.1 / Flan-T5, Llama or Mistral. A flantune directory holds config.json (the
configuration dataclass) and an Orbax checkpoint of the parameters under params/.
"""

from __future__ import annotations

import argparse
import re
import sys

from flantune.models.convert import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from flantune.models.convert.native import load_params, save_params

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes from '5GB', '500MB', '2GiB' or a plain integer."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; use e.g. 5GB, 500MB, 2GiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flantune convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="direction", required=True)
    to_ours = sub.add_parser("hf-to-flantune", help="Hugging Face safetensors -> flantune")
    to_ours.add_argument("source")
    to_ours.add_argument("destination")
    to_ours.add_argument("--scan-layers", action="store_true",
                         help="stack layer parameters for a scanned model")
    to_ours.add_argument("--param-dtype", default="float32")
    to_hf = sub.add_parser("flantune-to-hf", help="flantune -> Hugging Face safetensors")
    to_hf.add_argument("source")
    to_hf.add_argument("destination")
    to_hf.add_argument("--max-shard-size", type=parse_size, default=parse_size("5GB"))
    to_hf.add_argument("--dtype", default=None, help="stored dtype (default: as the params)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one conversion; returns the process exit status (1 on a bad checkpoint)."""
    args = _parser().parse_args(argv)
    try:
        if args.direction == "hf-to-flantune":
            config, params = load_hf_checkpoint(args.source, param_dtype=args.param_dtype,
                                                scan_layers=args.scan_layers)
            save_params(config, params, args.destination)
            print(f"wrote {type(config).__name__} parameters to {args.destination}")
        else:
            config, params = load_params(args.source)
            files = save_hf_checkpoint(config, params, args.destination,
                                       max_shard_size=args.max_shard_size, dtype=args.dtype)
            print(f"wrote config.json and {len(files)} safetensors file(s) to {args.destination}")
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


