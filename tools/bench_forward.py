"""Forward-pass throughput of flantune's T5 vs Hugging Face PyTorch on the same weights and batch.

Builds a random Hugging Face T5 of the Flan-T5-small shape, converts it to flantune through a
safetensors checkpoint (so both run identical weights), checks the logits agree, then times
jitted flantune forward passes and torch forward passes (2 threads each) on the same batch, and
measures an f32 matmul peak in the same process. Ends with one JSON line of headline figures.

    python tools/bench_forward.py [--batch 8] [--inputs 512] [--targets 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

# Before JAX starts its threads: keep XLA:CPU's freed buffers mapped (flantune.host_memory).
from flantune.host_memory import tune_malloc

tune_malloc()

import jax
import jax.numpy as jnp
import numpy as np

from flantune.models import T5Config, build_model, load_hf_checkpoint

THREADS = 2


def t5_small_config(vocab_size: int) -> T5Config:
    """The Flan-T5-small / T5 v1.1-small shape (gin_configs/models/flan_t5_small.gin)."""
    return T5Config(vocab_size=vocab_size, emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024,
                    num_encoder_layers=8, num_decoder_layers=8, mlp_activation="gelu_tanh",
                    gated_mlp=True, tie_word_embeddings=False, dropout_rate=0.0)


def matmul_flops(c: T5Config, batch: int, enc_len: int, dec_len: int) -> float:
    """Multiply-add FLOPs (x2) of every matmul in one forward pass."""
    inner = c.num_heads * c.head_dim
    mlp_mats = 3 if c.gated_mlp else 2
    attn_proj = 4 * c.emb_dim * inner
    mlp = mlp_mats * c.emb_dim * c.mlp_dim
    enc_tokens, dec_tokens = batch * enc_len, batch * dec_len
    flops = c.num_encoder_layers * enc_tokens * (attn_proj + mlp)
    flops += c.num_encoder_layers * batch * 2 * enc_len * enc_len * inner
    # decoder: self-attn projections + cross q/o on decoder tokens, cross k/v on encoder tokens
    flops += c.num_decoder_layers * dec_tokens * (attn_proj + 2 * c.emb_dim * inner + mlp)
    flops += c.num_decoder_layers * enc_tokens * 2 * c.emb_dim * inner
    flops += c.num_decoder_layers * batch * 2 * (dec_len * dec_len + dec_len * enc_len) * inner
    flops += dec_tokens * c.emb_dim * c.vocab_size
    return 2.0 * flops


def time_calls(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    return time_interleaved([fn], repeats)[0]


def time_interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function, calling them in turn so that background load on a
    shared machine hits all of them alike. One warm-up call each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """f32 matmul FLOP/s of a large jitted jnp.dot on this machine, now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    seconds = time_calls(lambda: dot(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--targets", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch
    import transformers

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    config = t5_small_config(args.vocab)
    hf_config = transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim,
        d_ff=config.mlp_dim, num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.emb_dim) * 0.05)

    rng = np.random.default_rng(0)
    enc = rng.integers(2, config.vocab_size, (args.batch, args.inputs))
    dec = rng.integers(2, config.vocab_size, (args.batch, args.targets))
    dec[:, 0] = 0
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        loaded_config, params = load_hf_checkpoint(tmp)
    model = build_model(loaded_config, params=params)

    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, enc_tokens, dec_tokens):
        return nnx.merge(graphdef, state)(enc_tokens, dec_tokens)

    enc_j, dec_j = jnp.asarray(enc, jnp.int32), jnp.asarray(dec, jnp.int32)
    enc_t, dec_t = torch.tensor(enc), torch.tensor(dec)

    def run_torch():
        with torch.inference_mode():
            return hf(input_ids=enc_t, decoder_input_ids=dec_t).logits

    ours = np.asarray(forward(state, enc_j, dec_j))
    theirs = run_torch().numpy()
    max_diff = float(np.abs(ours - theirs).max())

    peak = matmul_peak()
    flantune_s, torch_s = time_interleaved(
        [lambda: forward(state, enc_j, dec_j).block_until_ready(), run_torch], args.repeats)
    peak_after = matmul_peak()

    tokens = args.batch * (args.inputs + args.targets)
    flops = matmul_flops(loaded_config, args.batch, args.inputs, args.targets)
    peak_flops = max(peak, peak_after)
    result = {
        "shape": f"flan_t5_small batch {args.batch}, {args.inputs} -> {args.targets}, f32",
        "flantune_seconds": round(flantune_s, 4),
        "torch_seconds": round(torch_s, 4),
        "flantune_tokens_per_s": round(tokens / flantune_s, 1),
        "torch_tokens_per_s": round(tokens / torch_s, 1),
        "forward_tokens_per_s_ratio_vs_torch": round(torch_s / flantune_s, 3),
        "matmul_gflops_per_forward": round(flops / 1e9, 2),
        "flantune_gflop_per_s": round(flops / flantune_s / 1e9, 1),
        "torch_gflop_per_s": round(flops / torch_s / 1e9, 1),
        "matmul_peak_gflop_per_s": round(peak_flops / 1e9, 1),
        "flantune_mfu_vs_matmul_peak": round(flops / flantune_s / peak_flops, 3),
        "max_abs_logit_diff_vs_torch": max_diff,
        "threads": THREADS,
    }
    for key, value in result.items():
        print(f"{key:40s} {value}", file=sys.stderr)
    print(json.dumps({k: result[k] for k in ("forward_tokens_per_s_ratio_vs_torch",
                                             "flantune_mfu_vs_matmul_peak",
                                             "flantune_tokens_per_s", "torch_tokens_per_s",
                                             "max_abs_logit_diff_vs_torch")}))
    return result


if __name__ == "__main__":
    main()
