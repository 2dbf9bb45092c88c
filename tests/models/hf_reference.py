"""Small random Hugging Face models (built offline) used as numerical references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 96


def _randomize(model, seed: int, scale: float) -> None:
    """Replaces Hugging Face's small default init (std 0.02, which hides mistakes in tiny logits)
    with larger random weights; norm scales around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=gen))
            elif "relative_attention_bias" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
            else:
                fan_in = param.shape[-1]
                param.copy_(torch.randn(param.shape, generator=gen) * scale / fan_in**0.5)


def t5(version: str, seed: int = 0, **overrides):
    """A tiny T5: 'v1_0' (ReLU, tied + scaled output) or 'v1_1' (Flan-T5 layout: gated-GELU and
    its own lm_head; transformers 5 ties lm_head to `shared` at construction, so a new weight
    is assigned)."""
    common = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                  num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                  relative_attention_max_distance=24, dropout_rate=0.0)
    common.update(overrides)
    torch.manual_seed(seed)
    if version == "v1_0":
        config = transformers.T5Config(feed_forward_proj="relu", **common)
    else:
        config = transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                       **common)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if version != "v1_0":
        model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, 32))
    _randomize(model, seed, scale=0.7)
    if version == "v1_0":
        with torch.no_grad():  # a tied, scaled head wants embedding-sized entries
            model.shared.weight.mul_(32**0.5)
    return model


def decoder(family: str, seed: int = 0, **overrides):
    """A tiny Llama or Mistral with grouped-query attention (4 heads, 2 key/value heads)."""
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5)
    common.update(overrides)
    torch.manual_seed(seed)
    if family == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    model = model.eval()
    _randomize(model, seed, scale=1.0)
    return model


def save(model, directory: Path, **kwargs) -> Path:
    model.save_pretrained(str(directory), **kwargs)
    return directory


def t5_logits(model, encoder_tokens: np.ndarray, decoder_tokens: np.ndarray) -> np.ndarray:
    """Reference logits with padding (token 0) masked in the encoder."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(encoder_tokens),
                    attention_mask=torch.tensor(encoder_tokens > 0).long(),
                    decoder_input_ids=torch.tensor(decoder_tokens))
    return out.logits.numpy()


def decoder_logits(model, tokens: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(attention_mask))
    return out.logits.numpy()
