"""`flantune convert`: Hugging Face safetensors checkpoints <-> flantune checkpoints.

    flantune convert hf-to-flantune HF_DIR OUT_DIR [--scan-layers] [--param-dtype float32]
    flantune convert flantune-to-hf SOURCE OUT_DIR [--max-shard-size 5GB] [--dtype bfloat16]
        [--vocabulary SPM_MODEL [--extra-ids N] | --no-tokenizer] [--force]
        [--merge [--base BASE]]

HF_DIR holds config.json and model.safetensors (or shards with model.safetensors.index.json) for
T5 v1.0, T5 v1.1 / Flan-T5, Llama or Mistral. hf-to-flantune writes a flantune parameter
checkpoint: config.json (the configuration dataclass) and an Orbax checkpoint under params/.
SOURCE is any flantune checkpoint: a training run's MODEL_DIR (its newest step), a step
directory, or a parameter checkpoint. The export carries the ids the model was trained with,
generation_config.json and a tokenizer checked to encode as flantune does (the run's vocabulary
from its config.gin, or --vocabulary). An adapter run (flantune.peft) exports as a peft adapter
directory, or with --merge as one full model (its base: the one the run recorded, or --base).
A decoder trained as a prefix LM is refused without --force: transformers' causal attention
cannot reproduce it.
"""

from __future__ import annotations

import argparse
import re
import sys

from flantune.models.convert import CheckpointError, load_hf_checkpoint
from flantune.models.convert.native import save_params

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
    vocab = to_hf.add_mutually_exclusive_group()
    vocab.add_argument("--vocabulary", default=None,
                       help="SentencePiece model for the tokenizer (default: the run's)")
    vocab.add_argument("--no-tokenizer", action="store_true",
                       help="write no tokenizer (AutoTokenizer will not load the export)")
    to_hf.add_argument("--extra-ids", type=int, default=None,
                       help="T5 sentinel ids after the vocabulary (default: the run's, or 0)")
    to_hf.add_argument("--force", action="store_true",
                       help="export a prefix-LM decoder although transformers attends causally")
    to_hf.add_argument("--merge", action="store_true",
                       help="an adapter run: write one full model with the adapter folded in "
                            "(default: a peft adapter directory)")
    to_hf.add_argument("--base", default=None,
                       help="an adapter run's base checkpoint (default: the one it recorded)")
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
            from flantune.export.hf import export_to_hf

            result = export_to_hf(args.source, args.destination,
                                  max_shard_size=args.max_shard_size, dtype=args.dtype,
                                  vocabulary=args.vocabulary, extra_ids=args.extra_ids,
                                  tokenizer=not args.no_tokenizer, force=args.force,
                                  merge=args.merge, base=args.base)
            for warning in result.warnings:
                print(warning, file=sys.stderr)
            if any(f.name == "adapter_config.json" for f in result.files):
                print(f"wrote adapter_config.json and adapter_model.safetensors to "
                      f"{args.destination}")
                return 0
            shards = sum(f.suffix == ".safetensors" for f in result.files)
            ids = result.token_ids
            print(f"wrote config.json, generation_config.json, {shards} safetensors file(s)"
                  f"{' and a tokenizer' if result.tokenizer_files else ''} to "
                  f"{args.destination} (pad {ids.pad}, eos {ids.eos}"
                  f"{'' if ids.bos is None else f', bos {ids.bos}'}"
                  f"{'' if ids.decoder_start is None else f', decoder start {ids.decoder_start}'})")
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


