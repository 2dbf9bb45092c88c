"""Greedy decoding speed: flantune's KV cache vs recomputing the full forward pass every step,
and vs Hugging Face `generate`, on the same converted weights and prompts in one run.

Builds a random Hugging Face T5 (v1.1 layout) and Llama, converts both to flantune through
safetensors checkpoints, and decodes `--new-tokens` tokens greedily for the same batch with:
  * flantune `make_generate_fn` (KV cache, one jitted `while_loop`);
  * flantune without a cache: a jitted `while_loop` that reruns the decoder (T5: over the encoder
    output computed once) or the whole decoder-only model on the full fixed-size token buffer each
    step and reads the logits of the current position;
  * transformers `generate(do_sample=False)` (its own dynamic KV cache), torch on 2 threads.
EOS is set to a token none of them emits, so every run produces exactly `--new-tokens` tokens;
the tokens of all three are compared. Timings are medians of interleaved repeats after a warm-up
(compilation is reported separately). Ends with one JSON line of headline ratios.

    python tools/bench_decode.py [--batch 8] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flantune.decoding import DecodeConfig, left_pad_prompts, make_generate_fn
from flantune.models import build_model, load_hf_checkpoint

THREADS = 2
VOCAB = 8192


def time_interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function, called in turn (background load hits all alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def hf_models(transformers, torch) -> dict:
    """Random T5 (v1.1: gated-GELU, own lm_head) and Llama of a small-but-real shape."""
    torch.manual_seed(0)
    t5_config = transformers.T5Config(
        vocab_size=VOCAB, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    t5 = transformers.T5ForConditionalGeneration(t5_config).eval()
    t5.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 256) * 0.05)
    llama_config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=32, max_position_embeddings=512)
    llama = transformers.LlamaForCausalLM(llama_config).eval()
    # Larger random weights than the 0.02 default so greedy outputs vary (not one repeated token).
    with torch.no_grad():
        for model in (t5, llama):
            for name, param in model.named_parameters():
                if param.ndim > 1 and "relative_attention_bias" not in name:
                    param.normal_(0.0, 1.0 / param.shape[-1] ** 0.5)
    return {"t5": t5, "llama": llama}


def no_cache_t5(model: nnx.Module, new_tokens: int) -> Callable:
    """Greedy decoding rerunning the decoder on the whole [b, new_tokens + 1] buffer each step
    (encoder output computed once)."""
    @nnx.jit
    def run(model: nnx.Module, enc: jax.Array) -> jax.Array:
        encoded = model.encode(enc)
        graphdef, state = nnx.split(model)
        buffer = jnp.zeros((enc.shape[0], new_tokens + 1), jnp.int32)

        def body(i: jax.Array, buffer: jax.Array) -> jax.Array:
            here = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
            logits = here.decode(encoded, enc, buffer)
            token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i, 1, False), -1)
            return buffer.at[:, i + 1].set(token.astype(jnp.int32))

        return jax.lax.fori_loop(0, new_tokens, body, buffer)[:, 1:]

    return lambda enc: run(model, enc)


def no_cache_decoder(model: nnx.Module, new_tokens: int) -> Callable:
    """Greedy decoding rerunning the model on the whole [b, prompt + new_tokens] buffer each step
    (same-length prompts, so no padding)."""
    @nnx.jit
    def run(model: nnx.Module, prompt: jax.Array) -> jax.Array:
        graphdef, state = nnx.split(model)
        length = prompt.shape[1]
        buffer = jnp.concatenate(
            [prompt, jnp.zeros((prompt.shape[0], new_tokens), jnp.int32)], axis=1)

        def body(i: jax.Array, buffer: jax.Array) -> jax.Array:
            here = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
            logits = here(buffer)
            token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, length - 1 + i, 1, False), -1)
            return buffer.at[:, length + i].set(token.astype(jnp.int32))

        return jax.lax.fori_loop(0, new_tokens, body, buffer)[:, length:]

    return lambda prompt: run(model, prompt)


def bench_family(name: str, hf_model, directory: Path, args, torch) -> dict:
    rng = np.random.default_rng(0)
    config, params = load_hf_checkpoint(directory)
    model = build_model(config, params=params)
    if name == "t5":
        inputs = rng.integers(2, VOCAB, (args.batch, args.prompt)).astype(np.int32)
        batch = {"encoder_input_tokens": inputs}
        hf_kwargs = {"decoder_start_token_id": 0}
        baseline = no_cache_t5(model, args.new_tokens)
    else:
        inputs = rng.integers(3, VOCAB, (args.batch, args.prompt)).astype(np.int32)
        batch = left_pad_prompts(inputs.tolist())
        hf_kwargs = {}
        baseline = no_cache_decoder(model, args.new_tokens)
    eos, used, first_call = VOCAB - 1, set(), None
    while True:  # an EOS no row emits, so every row makes exactly new_tokens tokens
        cached = make_generate_fn(model, DecodeConfig(max_decode_length=args.new_tokens,
                                                      eos_id=eos))
        start = time.perf_counter()
        emitted = cached(batch).tokens
        first_call = first_call or time.perf_counter() - start
        if not (emitted == eos).any():
            break
        used |= set(np.unique(emitted).tolist())
        eos = max(set(range(3, VOCAB)) - used)
    device_inputs = jnp.asarray(inputs)

    def run_cached() -> np.ndarray:
        return cached(batch).tokens

    def run_no_cache() -> np.ndarray:
        return np.asarray(baseline(device_inputs))

    def run_hf() -> np.ndarray:
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch.tensor(inputs, dtype=torch.long),
                attention_mask=torch.ones(inputs.shape, dtype=torch.long),
                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=0, **hf_kwargs)
        return out.numpy()[:, -args.new_tokens:]

    tokens = {"cache": run_cached()}
    compile_start = time.perf_counter()
    tokens["no_cache"] = run_no_cache()
    compile_no_cache = time.perf_counter() - compile_start
    tokens["hf"] = run_hf()
    seconds = time_interleaved([run_cached, run_no_cache, run_hf], args.repeats)
    generated = args.batch * args.new_tokens
    result = {
        "cache_s": seconds[0], "no_cache_s": seconds[1], "hf_s": seconds[2],
        "cache_tokens_per_s": generated / seconds[0],
        "no_cache_tokens_per_s": generated / seconds[1],
        "hf_tokens_per_s": generated / seconds[2],
        "cache_speedup_vs_no_cache": seconds[1] / seconds[0],
        "tokens_per_s_vs_hf": seconds[2] / seconds[0],
        "first_call_s_cache": first_call, "first_call_s_no_cache": compile_no_cache,
        "tokens_equal_no_cache": float((tokens["cache"] == tokens["no_cache"]).mean()),
        "tokens_equal_hf": float((tokens["cache"] == tokens["hf"]).mean()),
        "distinct_tokens": int(len(np.unique(tokens["cache"]))),
    }
    print(f"{name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in result.items()), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64, help="encoder / prompt length")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    models = hf_models(transformers, torch)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, hf_model in models.items():
            directory = Path(tmp) / name
            hf_model.save_pretrained(str(directory))
            results[name] = bench_family(name, hf_model, directory, args, torch)
    headline = {f"{name}_{key}": round(value, 3) for name, result in results.items()
                for key, value in result.items()
                if key in ("cache_speedup_vs_no_cache", "tokens_per_s_vs_hf",
                           "cache_tokens_per_s", "hf_tokens_per_s", "tokens_equal_hf",
                           "tokens_equal_no_cache")}
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
