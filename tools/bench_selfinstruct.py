"""Self-Instruct (flantune.selfinstruct): speed of the ROUGE-L novelty filter against the
reference's pairwise rouge-score loop, with identical decisions.

The workload: ``--pool`` instruction-like pool texts (templated sentences from word lists, a
seeded numpy RNG) and ``--candidates`` candidates, about a third of them near-duplicates (a few
word edits, case and punctuation noise) of pool items or of earlier candidates, so that a fair
share is rejected. The rule (Self-Instruct's ``bootstrap_instructions.py``): a candidate is
rejected when its ROUGE-L F (rouge-score, no stemming) against any instruction in the pool is
above 0.7; a kept candidate joins the pool.

1. flantune: ``NoveltyIndex(pool)`` then ``check_and_add`` (exact max score, decision) for every
   candidate in order; the whole run is timed, index construction included.
2. Reference: the loop ``max(scorer.score(inst, other) ...) > 0.7`` is O(pool x candidates)
   pairs, far too slow to run whole, so it runs on a seeded random sample of candidates, each
   against the pool state flantune had when it decided that candidate (pool + the candidates it
   kept before). The mean time per sampled candidate, times the number of candidates, is the
   reference's time; sampled decisions and max scores must equal flantune's.
3. A full check: the reference loop run whole on a smaller stream (the first ``--stream``
   candidates against the first ``--stream`` pool items, sequentially) against
   ``NoveltyIndex`` on the same stream.

    python tools/bench_selfinstruct.py [--pool 5000] [--candidates 5000]
        [--reference_sample 60] [--stream 300]

The last line is a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flantune.selfinstruct.novelty import DEFAULT_THRESHOLD, NoveltyIndex  # noqa: E402

OPENERS = ("Write", "Explain", "Describe", "Give me", "List", "Create", "Suggest", "Summarize",
           "Tell me about", "Generate", "Compose", "Draft", "Come up with", "Provide", "Outline",
           "Compare", "Identify", "Classify", "Translate", "Rewrite", "Find", "Design", "Plan",
           "Recommend", "Evaluate", "Predict", "Name", "Convert", "Analyze", "Propose")
DETERMINERS = ("a", "the", "an interesting", "three", "five", "some", "your favourite", "my",
               "this", "every", "two", "one")
ADJECTIVES = ("short", "funny", "formal", "detailed", "simple", "persuasive", "creative",
              "concise", "polite", "sad", "friendly", "technical", "surprising", "honest",
              "brief", "catchy", "clear", "emotional", "informal", "professional", "ancient",
              "modern", "healthy", "cheap", "popular", "rare", "famous", "local", "digital",
              "small", "large", "quiet", "busy", "green", "difficult", "easy", "new", "old",
              "strange", "useful", "beautiful", "scientific", "historical", "personal",
              "political", "musical", "colourful", "dangerous", "safe", "weekly")
NOUNS = ("poem", "story", "email", "essay", "tweet", "letter", "haiku", "speech", "summary",
         "review", "description", "recipe", "joke", "slogan", "ocean", "climate", "river",
         "computer", "algorithm", "revolution", "coffee", "office", "dog", "cat", "rocket",
         "market", "breakfast", "language", "bus", "train", "panel", "interview", "jazz",
         "friendship", "privacy", "garden", "party", "car", "moon", "schedule", "mountain",
         "game", "heart", "bakery", "empire", "winter", "airport", "chess", "vegetable",
         "volcano", "bee", "database", "teacher", "student", "manager", "customer", "doctor",
         "novel", "painting", "song", "movie", "city", "village", "island", "forest",
         "bicycle", "phone", "website", "budget", "contract", "experiment", "theory",
         "equation", "planet", "museum", "restaurant", "hotel", "festival", "wedding",
         "holiday", "exam", "lecture", "podcast", "newsletter", "invoice", "password",
         "spreadsheet", "presentation", "meeting", "argument", "habit", "dream", "robot",
         "battery", "engine", "bridge", "tower", "castle", "king", "queen", "soldier",
         "farmer", "chef", "artist", "scientist", "child", "grandmother", "neighbour",
         "tourist", "investor", "startup", "product", "brand", "logo", "question", "answer",
         "sentence", "paragraph", "headline", "complaint", "message", "passage", "riddle")
PREPOSITIONS = ("about", "for", "with", "on", "without", "using", "in", "from", "to",
                "that mentions", "inspired by", "written for", "based on", "involving")
CONSTRAINTS = (
    "Use no more than {num} words.",
    "Keep the tone {adj}.",
    "Format the answer as a numbered list.",
    "Explain your reasoning step by step.",
    "Avoid technical jargon.",
    "The answer should fit on one page.",
    "Write it from the point of view of a {noun}.",
    "Include at least {num} examples.",
    "Answer with yes or no first.",
    "Do not mention the {noun}.",
)
NUMBERS = ("two", "three", "four", "five", "six", "seven", "ten", "3", "5", "12")


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[rng.integers(len(words))]


def _phrase(rng: np.random.Generator) -> str:
    adjectives = [_pick(rng, ADJECTIVES) for _ in range(int(rng.integers(3)))]
    return " ".join([_pick(rng, DETERMINERS), *adjectives, _pick(rng, NOUNS)])


def instruction(rng: np.random.Generator) -> str:
    """An instruction-like text: an opener, a noun phrase, 0-3 prepositional phrases, and
    sometimes a templated constraint (about 6-30 ROUGE tokens)."""
    words = [_pick(rng, OPENERS), _phrase(rng)]
    for _ in range(int(rng.integers(4))):
        words += [_pick(rng, PREPOSITIONS), _phrase(rng)]
    text = " ".join(words) + _pick(rng, (".", ".", "?", ":"))
    if rng.random() < 0.4:
        text += " " + _pick(rng, CONSTRAINTS).format(num=_pick(rng, NUMBERS),
                                                     adj=_pick(rng, ADJECTIVES),
                                                     noun=_pick(rng, NOUNS))
    return text


def near_duplicate(rng: np.random.Generator, text: str) -> str:
    """``text`` after 1-3 word edits (replace, insert, delete), maybe with case/punctuation."""
    words = text.split()
    filler = ("very", "please", "really", "some", "the", "new", "good", "quick", "all", "it")
    for _ in range(int(rng.integers(1, 4))):
        op, i = int(rng.integers(3)), int(rng.integers(len(words)))
        if op == 0:
            words[i] = filler[rng.integers(len(filler))]
        elif op == 1:
            words.insert(i, filler[rng.integers(len(filler))])
        elif len(words) > 2:
            del words[i]
    out = " ".join(words)
    if rng.random() < 0.3:
        out = out.upper() if rng.random() < 0.2 else out.lower().rstrip(".?") + "!"
    return out


def workload(pool_size: int, candidates: int, duplicates: float = 0.3,
             seed: int = 0) -> tuple[list[str], list[str]]:
    """Pool texts and a candidate stream, a ``duplicates`` share of it near-duplicates."""
    rng = np.random.default_rng(seed)
    pool = [instruction(rng) for _ in range(pool_size)]
    stream: list[str] = []
    for i in range(candidates):
        if rng.random() < duplicates:
            # Sources early in the pool / stream keep the smaller full check (--stream) relevant.
            limit = max(1, min(pool_size, i + 1))
            source = (pool[rng.integers(limit)] if not stream or rng.random() < 0.75
                      else stream[rng.integers(len(stream))])
            stream.append(near_duplicate(rng, source))
        else:
            stream.append(instruction(rng))
    return pool, stream


def flantune_filter(pool: Sequence[str], candidates: Sequence[str],
                    threshold: float = DEFAULT_THRESHOLD) -> tuple[float, list[bool], list[float]]:
    """(seconds, decisions, max scores) of NoveltyIndex over the stream, construction included."""
    start = time.perf_counter()
    index = NoveltyIndex(pool, threshold=threshold)
    decisions, scores = [], []
    for text in candidates:
        novel, score, _ = index.check_and_add(text)
        decisions.append(novel)
        scores.append(score)
    return time.perf_counter() - start, decisions, scores


def reference_max(scorer, inst: str, pool: Sequence[str]) -> float:
    """Self-Instruct's score: the max ROUGE-L F of ``inst`` against every pool text."""
    return max(scorer.score(inst, other)["rougeL"].fmeasure for other in pool)


def reference_stream(scorer, pool: Sequence[str], candidates: Sequence[str],
                     threshold: float = DEFAULT_THRESHOLD) -> tuple[list[bool], list[float]]:
    """The reference loop run whole: decisions and max scores."""
    pool = list(pool)
    decisions, scores = [], []
    for inst in candidates:
        best = reference_max(scorer, inst, pool)
        novel = not best > threshold
        decisions.append(novel)
        scores.append(best)
        if novel:
            pool.append(inst)
    return decisions, scores


def bench_rouge(pool_size: int = 5000, candidates: int = 5000, sample: int = 60,
                stream: int = 300, seed: int = 0) -> dict:
    """The ROUGE-L novelty filter: speedup over rouge-score and decision equality."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool, cands = workload(pool_size, candidates, seed=seed)

    seconds, decisions, scores = flantune_filter(pool, cands)
    rejected = 1 - sum(decisions) / len(decisions)
    print(f"flantune: {len(cands)} candidates against {len(pool)} pool texts in "
          f"{seconds:.2f} s; rejected {rejected:.1%}")

    # Reference on a sample, each candidate against flantune's pool state at its turn.
    rng = np.random.default_rng(seed + 1)
    picked = sorted(rng.choice(len(cands), min(sample, len(cands)), replace=False).tolist())
    kept_before = np.concatenate([[0], np.cumsum(decisions)])
    kept = [c for c, d in zip(cands, decisions, strict=True) if d]
    sample_equal = True
    reference_seconds = 0.0
    for i in picked:
        state = pool + kept[: kept_before[i]]
        start = time.perf_counter()
        best = reference_max(scorer, cands[i], state)
        reference_seconds += time.perf_counter() - start
        if (not best > DEFAULT_THRESHOLD) != decisions[i] or best != scores[i]:
            sample_equal = False
            print(f"MISMATCH candidate {i}: reference {best!r}, flantune {scores[i]!r}")
    reference_total = reference_seconds / len(picked) * len(cands)
    print(f"rouge-score: {reference_seconds / len(picked) * 1e3:.0f} ms per candidate on "
          f"{len(picked)} sampled candidates -> {reference_total:.0f} s for all {len(cands)}")

    # The whole reference loop on a smaller stream.
    ref_decisions, ref_scores = reference_stream(scorer, pool[:stream], cands[:stream])
    _, small_decisions, small_scores = flantune_filter(pool[:stream], cands[:stream])
    stream_equal = ref_decisions == small_decisions and ref_scores == small_scores
    print(f"full reference stream ({stream} x {stream}): equal={stream_equal}, rejected "
          f"{1 - sum(ref_decisions) / max(1, len(ref_decisions)):.1%}")

    return {
        "rouge_filter_speedup_vs_rouge_score": round(reference_total / seconds, 1),
        "rouge_filter_decisions_equal": int(sample_equal and stream_equal),
        "rouge_filter_seconds": round(seconds, 3),
        "rouge_reference_seconds_estimated": round(reference_total, 1),
        "rouge_filter_candidates": len(cands),
        "rouge_filter_pool": len(pool),
        "rouge_filter_rejected_fraction": round(rejected, 4),
        "rouge_reference_sample": len(picked),
        "rouge_reference_stream": stream,
    }


def bench_generation(checkpoint: str | None, rounds: int, prompts_per_round: int,
                     max_new_tokens: int) -> dict:
    """Instruction-generation throughput of flantune's decoding with the demo model
    (``checkpoint``: a ``make demo`` MODEL_DIR; None or missing: the demo's architecture with
    random weights, which decodes at the same speed): Self-Instruct rounds through
    DecodingGenerator, generated tokens / seconds inside the generator."""
    import os
    import tempfile

    import jax

    from flantune.data.vocabulary import configured_vocabulary, set_vocabulary
    from flantune.models import T5Config
    from flantune.selfinstruct import DecodingGenerator, Sampling, SelfInstructConfig
    from flantune.selfinstruct.command import _Timed
    from flantune.selfinstruct.pipeline import self_instruct
    from flantune.train.state import ModelSpec

    set_vocabulary(None)  # the demo's SentencePiece vocabulary
    demo = T5Config(vocab_size=8000, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
    spec = ModelSpec.from_config(demo)
    trained = bool(checkpoint and os.path.isdir(checkpoint))
    if trained:
        import flantune.partitioning as partitioning
        from flantune.evaluation.command import load_params

        mesh = partitioning.make_mesh(partitioning.MeshConfig())
        rules = partitioning.axis_rules("data_parallel")
        with partitioning.activation_rules(rules, mesh):
            spec, params, _ = load_params(checkpoint, None, demo, mesh, rules)
    else:
        params = spec.init_params(jax.random.key(0))
    generator = DecodingGenerator(spec, params, configured_vocabulary(), inputs_length=512,
                                  batch_size=prompts_per_round)
    timed = _Timed(generator)
    sampling = Sampling(temperature=0.7, top_p=0.5, max_new_tokens=max_new_tokens)
    with tempfile.TemporaryDirectory() as out:
        config = SelfInstructConfig(output_dir=out, max_rounds=rounds,
                                    prompts_per_round=prompts_per_round,
                                    instruction_sampling=sampling,
                                    instance_sampling=Sampling(max_new_tokens=max_new_tokens))
        generator(["warm up"] * 1, sampling, 0)  # compile outside the timing
        state = self_instruct(config, timed)
    rate = state.generated_tokens / timed.seconds
    print(f"generation: {state.generated_tokens} tokens in {timed.seconds:.1f} s "
          f"({'trained demo model' if trained else 'demo architecture, random weights'})")
    return {"generation_tokens_per_s": round(rate, 1), "generation_model_trained": trained}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--candidates", type=int, default=5000)
    parser.add_argument("--reference_sample", type=int, default=60,
                        help="candidates the pairwise rouge-score loop is timed on")
    parser.add_argument("--stream", type=int, default=300,
                        help="pool and candidates of the fully checked smaller stream")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo_checkpoint", default="runs/demo",
                        help="the demo model for the generation throughput (make demo)")
    parser.add_argument("--generation_rounds", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    args = parser.parse_args(argv)

    headline: dict = {}
    headline.update(bench_rouge(args.pool, args.candidates, args.reference_sample, args.stream,
                                args.seed))
    headline.update(bench_generation(args.demo_checkpoint, args.generation_rounds, 8,
                                     args.max_new_tokens))
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
