"""Prompt tuning: peft's logits, packing (decoders), cached decoding, the peft files, and the
packed T5 batches it cannot take."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.peft import PromptConfig, build_adapted_model
from flantune.peft.hf_format import load_peft_adapter, save_peft_adapter
from flantune.train.loop import TrainError, train
from tests.peft import decode_checks, parity
from tests.peft.test_prefix import DECODER_TINY, T5_TINY

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
    decode_checks.check_t5(build_adapted_model(
        dataclasses.replace(T5_TINY, scan_layers=scan), PROMPT, nnx.Rngs(1)), rng,
        pad_second_row=True)
    decode_checks.check_decoder(build_adapted_model(
        dataclasses.replace(DECODER_TINY, scan_layers=scan), PROMPT, nnx.Rngs(1)), rng)


def test_a_decoder_packs_with_a_soft_prompt_and_t5_refuses_packed_rows(tmp_path):
    rng = np.random.default_rng(3)
    decode_checks.check_packed_decoder(build_adapted_model(DECODER_TINY, PROMPT, nnx.Rngs(4)),
                                       rng, [4, 7], 12)
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
    config, adapter, ours = parity.flantune_adapter(base_dir, PROMPT, family)
    batch = parity.inputs(family)
    save_peft_adapter(config, PROMPT, adapter, tmp_path / "export")
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
