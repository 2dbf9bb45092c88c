"""Input-pipeline throughput: flantune's BatchIterator vs SeqIO's own pipeline, same mixture.

Both produce packed encoder-decoder batches of the demo mixture (same tasks, templates and
rates): flantune renders records by index, tokenizes with SentencePiece in batches and packs
best-fit; SeqIO runs ``seqio.get_dataset`` (tf.data: the tasks' generators, TF SentencePiece
tokenization, ``sample_from_datasets`` and ``EncDecFeatureConverter(pack=True)``). The two run
alternately, each alone in a fresh process, after a warm-up batch each; rounds repeat so the
machine's noise hits both.

    python tools/bench_pipeline.py [--mixture demo] [--rounds 2]

flantune reads and packs a window of slots (4,096 by default) at a time, then slices batches
from it; each round gives it enough batches to cross several windows, so window loads count.

The last line is a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import seqio  # noqa: E402

from flantune.data import BatchIterator  # noqa: E402


def count(batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """(examples, real tokens) in a packed encoder-decoder batch."""
    segments = batch["decoder_segment_ids"]
    examples = sum(len(np.unique(row[row > 0])) for row in segments)
    tokens = int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"]
                                                               > 0).sum())
    return examples, tokens


def seqio_batches(mixture: str, lengths: dict[str, int], batch_size: int, seed: int
                  ) -> Iterator[dict[str, np.ndarray]]:
    dataset = seqio.get_dataset(
        mixture, task_feature_lengths=lengths, dataset_split="train", shuffle=True,
        num_epochs=None, use_cached=False, seed=seed,
        feature_converter=seqio.EncDecFeatureConverter(pack=True))
    return dataset.batch(batch_size, drop_remainder=True).as_numpy_iterator()


def timed(iterator: Iterator[dict[str, np.ndarray]], batches: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    examples = tokens = 0
    for _ in range(batches):
        e, t = count(next(iterator))
        examples, tokens = examples + e, tokens + t
    return time.perf_counter() - start, examples, tokens


def worker(args: argparse.Namespace) -> None:
    """Runs one pipeline (after a warm-up batch) and prints seconds, examples, tokens as JSON."""
    importlib.import_module(args.module_import)
    lengths = {"inputs": args.inputs, "targets": args.targets}
    if args.worker == "flantune":
        iterator = BatchIterator(args.mixture, task_feature_lengths=lengths,
                                 batch_size=args.batch_size, converter="enc_dec", seed=args.seed)
        batches = args.flantune_batches
    else:
        iterator = seqio_batches(args.mixture, lengths, args.batch_size, seed=args.seed)
        batches = args.seqio_batches
    next(iterator)  # warm-up: generator start, first window / tf.data graph
    seconds, examples, tokens = timed(iterator, batches)
    print(json.dumps({"seconds": seconds, "examples": examples, "tokens": tokens,
                      "batches": batches}))


def run_worker(name: str, args: argparse.Namespace, round_index: int) -> dict[str, float]:
    """Each pipeline runs alone in its own process: tf.data's background threads would
    otherwise keep working (and prefetching) while flantune is being timed."""
    command = [sys.executable, __file__, "--worker", name, "--seed", str(round_index)]
    for option in ("mixture", "module_import", "flantune_batches", "seqio_batches",
                   "batch_size", "inputs", "targets"):
        command += [f"--{option}", str(getattr(args, option))]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixture", default="demo")
    parser.add_argument("--module_import", default="flantune.tasks")
    parser.add_argument("--flantune_batches", type=int, default=300, help="per round")
    parser.add_argument("--seqio_batches", type=int, default=60, help="per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--targets", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["flantune", "seqio"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    totals = {"flantune": [0.0, 0, 0, 0], "seqio": [0.0, 0, 0, 0]}
    for round_index in range(args.rounds):
        for name in ("flantune", "seqio"):
            result = run_worker(name, args, round_index)
            for i, key in enumerate(("seconds", "examples", "tokens", "batches")):
                totals[name][i] += result[key]

    print(f"{args.mixture}: packed rows of {args.inputs}/{args.targets}, batch "
          f"{args.batch_size}; {args.rounds} rounds, each pipeline alone in its own process")
    print(f"{'pipeline':<10} {'examples/s':>12} {'tokens/s':>12} {'examples/batch':>15}")
    rates = {}
    for name, (seconds, examples, tokens, batches) in totals.items():
        rates[name] = (examples / seconds, tokens / seconds)
        print(f"{name:<10} {examples / seconds:>12.0f} {tokens / seconds:>12.0f} "
              f"{examples / batches:>15.1f}")
    headline = {
        "flantune_examples_per_s": round(rates["flantune"][0], 1),
        "seqio_examples_per_s": round(rates["seqio"][0], 1),
        "examples_per_s_ratio": round(rates["flantune"][0] / rates["seqio"][0], 2),
        "tokens_per_s_ratio": round(rates["flantune"][1] / rates["seqio"][1], 2),
    }
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
