"""Packing efficiency of flantune's converters against SeqIO's, on the same demo examples.

Efficiency = lower bound on rows (the largest, over token features, of total tokens / feature
length) / rows actually used. Occupancy = real tokens / slots, per feature. In encoder-decoder
packing only the binding feature can fill up; the other's occupancy is capped by the data's
target/input ratio, so efficiency (not total occupancy) is the measure. That lower bound is not
always reachable: an example whose targets fill the whole decoder row (truncated targets) can
share its row with no other example, so the table also gives efficiency against a bound that
counts such solitary examples as one row each.

Both sides get identical examples: the first ``--examples`` of the mixture's stream, truncated
per feature as flantune does (first L-1 tokens, then EOS: SeqIO's ``append_eos_after_trim``).
flantune packs windows of ``--windows`` examples (the batch iterator's ``window``); SeqIO packs
the whole stream with ``EncDecFeatureConverter(pack=True)`` or
``DecoderFeatureConverter(pack=True)``.

    python tools/bench_packing.py [--mixture demo] [--examples 16384] [--windows 1024,4096,16384]

Prints a table and ends with one JSON line of headline figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence

import numpy as np

LENGTHS = ({"inputs": 512, "targets": 128}, {"inputs": 1024, "targets": 256})
EOS_ID = 1


def truncated(examples: Sequence[Mapping], lengths: Mapping[str, int]) -> list[dict]:
    """Each feature cut to its length as the converters do: first L-1 tokens, then EOS."""
    out = []
    for ex in examples:
        d = {}
        for k, limit in lengths.items():
            v = np.asarray(ex[k], np.int32)
            d[k] = np.append(v[: limit - 1], EOS_ID).astype(np.int32) if v.size > limit else v
        out.append(d)
    return out


def solitary_bound(example_lengths: np.ndarray, capacities: Sequence[int]) -> float:
    """A tighter lower bound on rows: examples that no other example can join count one row each.

    An example is solitary if, in some feature, it leaves less room than the shortest other
    example needs (e.g. targets truncated to the full decoder length: every example has at least
    EOS in its targets). The rest need at least max over features of tokens / length rows.
    """
    caps = np.asarray(capacities)
    shortest = example_lengths.min(axis=0)
    solitary = np.any(example_lengths + shortest > caps, axis=1)
    rest = example_lengths[~solitary].sum(axis=0) / caps
    return float(solitary.sum() + (rest.max() if rest.size else 0.0))


def summarize(rows: int, tokens: Mapping[str, int], lengths: Mapping[str, int],
              seconds: float, tight_bound: float) -> dict:
    """Efficiency and per-feature occupancy of ``rows`` rows holding ``tokens`` real tokens."""
    lower_bound = max(tokens[k] / lengths[k] for k in tokens)
    return {"rows": rows, "lower_bound_rows": round(lower_bound, 1),
            "efficiency": lower_bound / rows, "solitary_bound_rows": round(tight_bound, 1),
            "efficiency_vs_solitary_bound": tight_bound / rows,
            "occupancy": {k: tokens[k] / (rows * lengths[k]) for k in tokens},
            "seconds": seconds}


def run_flantune(converter, examples: list[dict], lengths: Mapping[str, int], window: int,
                 model_lengths: Mapping[str, int], tight_bound: float) -> dict:
    from flantune.data import ConversionStats

    stats = ConversionStats()
    start = time.perf_counter()
    for i in range(0, len(examples), window):
        _, window_stats = converter.convert(examples[i:i + window], lengths)
        stats = stats + window_stats
    seconds = time.perf_counter() - start
    assert sum(stats.truncated.values()) == 0, "examples arrive truncated"
    return summarize(stats.rows, stats.tokens, model_lengths, seconds, tight_bound)


def run_seqio(converter, examples: list[dict], lengths: Mapping[str, int],
              token_features: Sequence[str], model_lengths: Mapping[str, int],
              tight_bound: float) -> dict:
    import tensorflow as tf

    keys = list(lengths)
    ds = tf.data.Dataset.from_generator(
        lambda: ({k: ex[k] for k in keys} for ex in examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in keys})
    start = time.perf_counter()
    rows, tokens = 0, dict.fromkeys(token_features, 0)
    for batch in converter(ds, lengths).batch(256).as_numpy_iterator():
        rows += len(batch[token_features[0]])
        for k in token_features:
            tokens[k] += int((batch[k] != 0).sum())
    return summarize(rows, tokens, model_lengths, time.perf_counter() - start, tight_bound)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixture", default="demo")
    parser.add_argument("--examples", type=int, default=16384)
    parser.add_argument("--windows", default="1024,4096,16384",
                        help="comma-separated flantune window sizes (examples per window)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]

    import seqio

    import flantune.tasks  # noqa: F401  (registers the demo tasks and mixtures)
    from flantune.data import DecoderFeatureConverter, EncDecFeatureConverter, sample_examples

    start = time.perf_counter()
    examples = sample_examples(args.mixture, args.examples, seed=args.seed)
    print(f"{len(examples)} examples of '{args.mixture}' in {time.perf_counter() - start:.1f} s")

    results = []
    for lengths in LENGTHS:
        ex = truncated(examples, lengths)
        cut = {k: sum(np.asarray(e[k]).size > n for e in examples) for k, n in lengths.items()}
        label = f"{lengths['inputs']}/{lengths['targets']}"
        dec_len = {"decoder_target_tokens": sum(lengths.values())}
        enc_dec_len = {"encoder_input_tokens": lengths["inputs"],
                       "decoder_target_tokens": lengths["targets"]}
        setups = (
            ("enc-dec", EncDecFeatureConverter(), seqio.EncDecFeatureConverter(pack=True),
             enc_dec_len),
            ("decoder", DecoderFeatureConverter(), seqio.DecoderFeatureConverter(pack=True),
             dec_len),
        )
        per_feature = np.array([[e["inputs"].size, e["targets"].size] for e in ex])
        bounds = {"enc-dec": solitary_bound(per_feature, [lengths["inputs"], lengths["targets"]]),
                  "decoder": solitary_bound(per_feature.sum(axis=1, keepdims=True),
                                            [sum(lengths.values())])}
        for arch, ours, ref, model_lengths in setups:
            for window in windows:
                r = run_flantune(ours, ex, lengths, window, model_lengths, bounds[arch])
                results.append({"lengths": label, "arch": arch, "packer": f"flantune w={window}",
                                "window": window, "truncated": cut, **r})
            r = run_seqio(ref, ex, lengths, list(model_lengths), model_lengths, bounds[arch])
            results.append({"lengths": label, "arch": arch, "packer": "seqio", "window": None,
                            "truncated": cut, **r})

    print("\nbound = max over features of tokens / length; effic. = bound / rows; waste = 1 - "
          "effic.\nsolitary = bound counting examples no other example can join as one row each")
    print(f"{'lengths':<9} {'arch':<8} {'packer':<20} {'rows':>6} {'bound':>8} {'effic.':>7} "
          f"{'waste':>6} {'solitary':>8} {'effic.':>7} {'enc occ':>8} {'dec occ':>8} {'sec':>6}")
    for r in results:
        occ = r["occupancy"]
        enc = f"{occ['encoder_input_tokens']:.1%}" if "encoder_input_tokens" in occ else "-"
        print(f"{r['lengths']:<9} {r['arch']:<8} {r['packer']:<20} {r['rows']:>6} "
              f"{r['lower_bound_rows']:>8} {r['efficiency']:>7.2%} {1 - r['efficiency']:>6.2%} "
              f"{r['solitary_bound_rows']:>8} {r['efficiency_vs_solitary_bound']:>7.2%} "
              f"{enc:>8} {occ['decoder_target_tokens']:>8.1%} {r['seconds']:>6.2f}")
    print("truncated examples per feature:",
          {r["lengths"]: r["truncated"] for r in results})

    headline_window = 4096 if 4096 in windows else windows[0]
    headline: dict = {"examples": len(examples), "mixture": args.mixture,
                      "window": headline_window}
    for r in results:
        if r["window"] not in (headline_window, None):
            continue
        who = "seqio" if r["window"] is None else "flantune"
        headline[f"{r['arch']}_{r['lengths']}_{who}_efficiency"] = round(r["efficiency"], 4)
        if who == "flantune":
            headline[f"{r['arch']}_{r['lengths']}_{who}_efficiency_vs_solitary_bound"] = round(
                r["efficiency_vs_solitary_bound"], 4)
    for lengths in LENGTHS:
        label = f"{lengths['inputs']}/{lengths['targets']}"
        for arch in ("enc-dec", "decoder"):
            ours = 1 - headline[f"{arch}_{label}_flantune_efficiency"]
            theirs = 1 - headline[f"{arch}_{label}_seqio_efficiency"]
            headline[f"{arch}_{label}_waste_ratio"] = round(ours / theirs, 3) if theirs else None
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
