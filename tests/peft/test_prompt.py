"""Prompt tuning: peft's logits, packing (decoders), cached decoding, the peft files, and the
packed T5 batches it cannot take."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import load_hf_checkpoint
from flantune.models.build import model_params
from flantune.peft import PromptConfig, build_adapted_model
from flantune.peft.adapted import adapter_paths, split_params
from flantune.peft.hf_format import load_peft_adapter, save_peft_adapter
from flantune.train.loop import TrainError, train
from tests.models.jit_forward import forward
from tests.peft import parity
from tests.peft.test_prefix import DECODER_TINY, T5_TINY, _packed, _step

pytest.importorskip("peft")

PROMPT = PromptConfig(num_virtual_tokens=3)


@pytest.mark.parametrize("family", parity.FAMILIES)
def test_prompt_tuning_computes_peft_logits(family):
    diff, peft_error = parity.compare(family, parity.random_prompt(family),
                                      skip=0 if family == "t5" else 3)
    assert diff <= max(1e-5, 3 * peft_error), (diff, peft_error)


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_cached_decoding_with_a_soft_prompt_equals_the_forward_pass(scan):
    rng = np.random.default_rng(0)
    t5 = build_adapted_model(dataclasses.replace(T5_TINY, scan_layers=scan), PROMPT,
                             nnx.Rngs(1))
    enc = rng.integers(2, 50, (2, 9))
    enc[1, 6:] = 0
    enc = jnp.asarray(enc)
    dec = rng.integers(2, 50, (2, 10))
    dec[:, 0] = 0
    full = forward(t5, enc, jnp.asarray(dec))
    cache = nnx.jit(lambda m, e: m.init_decode_cache(m.encode(e), e, 12))(t5, enc)
    logits, cache = _step(t5, jnp.asarray(dec[:, :2]), cache, 0)
    steps = [logits]
    for t in range(2, dec.shape[1]):
        logits, cache = _step(t5, jnp.asarray(dec[:, t:t + 1]), cache, t)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)

    llama = build_adapted_model(dataclasses.replace(DECODER_TINY, scan_layers=scan), PROMPT,
                                nnx.Rngs(1))
    tokens = rng.integers(2, 50, (2, 12))
    want_0 = forward(llama, jnp.asarray(tokens[:1]))[0]
    want_1 = forward(llama, jnp.asarray(tokens[1:, 3:]))[0]
    padded = tokens.copy()
    padded[1, :3] = 0
    cache = llama.init_decode_cache(2, 14, jnp.array([0, 3]))
    logits, cache = _step(llama, jnp.asarray(padded[:, :5]), cache, 0)
    steps = [logits]
    for t in range(5, 12):
        logits, cache = _step(llama, jnp.asarray(padded[:, t:t + 1]), cache, t)
        steps.append(logits)
    got = np.concatenate(steps, axis=1)
    np.testing.assert_allclose(got[0], want_0, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1, 3:], want_1, atol=1e-5, rtol=0)


def test_a_decoder_packs_with_a_soft_prompt_and_t5_refuses_packed_rows(tmp_path):
    rng = np.random.default_rng(3)
    llama = build_adapted_model(DECODER_TINY, PROMPT, nnx.Rngs(4))
    tokens, segments, positions, pieces = _packed([4, 7], 12, rng)
    packed = forward(llama, jnp.asarray(tokens), decoder_segment_ids=jnp.asarray(segments),
                     decoder_positions=jnp.asarray(positions))[0]
    for start, piece in pieces:
        alone = forward(llama, jnp.asarray(piece[None]))[0]
        np.testing.assert_allclose(packed[start:start + len(piece)], alone, atol=1e-5, rtol=0)
    t5 = build_adapted_model(T5_TINY, PROMPT, nnx.Rngs(4))
    with pytest.raises(ValueError, match="unpacked batches"):
        t5(jnp.ones((1, 4), jnp.int32), jnp.ones((1, 3), jnp.int32),
           encoder_segment_ids=jnp.ones((1, 4), jnp.int32),
           decoder_segment_ids=jnp.ones((1, 3), jnp.int32))
    from tests.peft.test_lora import MODEL, _run

    with pytest.raises(TrainError, match="pack = False"):
        train(_run(tmp_path / "run", None, model=MODEL, adapter=PROMPT))


@pytest.mark.parametrize("family", parity.FAMILIES)
def test_a_flantune_prompt_exports_and_loads_into_peft(family, tmp_path):
    import peft

    base_dir = tmp_path / "base"
    parity.ref.save(parity.hf_model(family), base_dir)
    config, base = load_hf_checkpoint(base_dir)
    model = build_adapted_model(config, PROMPT, nnx.Rngs(5))
    state = nnx.state(model, nnx.Param)
    adapter, _ = split_params(model_params(model), adapter_paths(state))
    nnx.replace_by_pure_dict(state, {**base, **adapter})
    nnx.update(model, state)
    batch = parity.inputs(family)
    ours = forward(model, *batch)
    save_peft_adapter(config, PROMPT, jax.tree.map(np.asarray, adapter), tmp_path / "export")
    loaded = peft.PeftModel.from_pretrained(parity.hf_model(family),
                                            str(tmp_path / "export")).eval()
    skip = 0 if family == "t5" else 3
    np.testing.assert_allclose(parity.hf_logits(loaded, family, batch)[:, skip:], ours,
                               atol=1e-5, rtol=0)
    again, _ = load_peft_adapter(tmp_path / "export", config)
    assert again == PROMPT


@pytest.mark.slow
def test_a_prompt_run_trains_packed_on_a_decoder(tmp_path):
    from tests.peft.test_lora import DECODER, _run

    result = train(_run(tmp_path / "run", None, model=DECODER, adapter=PROMPT, train_steps=4))
    assert result.losses[4] < result.losses[1]
