"""Prefix tuning: peft's logits (forward, both families, with and without the MLP), the key/value
cache decode and packing agree with the plain forward, and the peft files round-trip."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flantune.models import DecoderConfig, T5Config
from flantune.models.build import model_params
from flantune.peft import PrefixConfig, build_adapted_model
from flantune.peft.adapted import adapter_paths, split_params
from flantune.peft.hf_format import load_peft_adapter, save_peft_adapter
from flantune.peft.prefix import prefix_layout
from tests.models.jit_forward import forward
from tests.peft import decode_checks, parity

pytest.importorskip("peft")

T5_TINY = T5Config(vocab_size=50, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                   num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=8,
                   relative_attention_max_distance=12)
DECODER_TINY = DecoderConfig(vocab_size=50, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                             mlp_dim=48, num_layers=2)
PREFIX = PrefixConfig(num_virtual_tokens=3)


@pytest.mark.parametrize("projection", [False, True], ids=["table", "mlp"])
@pytest.mark.parametrize("family", parity.FAMILIES)
def test_prefix_tuning_computes_peft_logits(family, projection):
    model = parity.random_prefix(family, prefix_projection=projection)
    diff, peft_error = parity.compare(family, model, prefix=True)
    assert diff <= max(1e-5, 3 * peft_error), (diff, peft_error)


def test_prefix_tuning_with_scanned_layers_computes_peft_logits():
    for family in parity.FAMILIES:
        diff, peft_error = parity.compare(family, parity.random_prefix(family), scan_layers=True,
                                          prefix=True)
        assert diff <= max(1e-5, 3 * peft_error), (family, diff, peft_error)


def test_peft_cannot_describe_some_t5_shapes():
    with pytest.raises(ValueError, match="emb_dim / num_heads"):
        prefix_layout(dataclasses.replace(T5_TINY, head_dim=16))
    with pytest.raises(ValueError, match="as many decoder as encoder layers"):
        prefix_layout(dataclasses.replace(T5_TINY, num_decoder_layers=3))
    # peft's T5 quirk: decoder layer i reads table entry 2i mod L.
    assert prefix_layout(dataclasses.replace(
        T5_TINY, num_encoder_layers=4, num_decoder_layers=4)).layer_map == (0, 2, 0, 2)


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_cached_decoding_with_a_prefix_equals_the_forward_pass(scan):
    rng = np.random.default_rng(0)
    t5_config = dataclasses.replace(T5_TINY, scan_layers=scan)
    t5 = build_adapted_model(t5_config, PREFIX, nnx.Rngs(1))
    enc, dec = jnp.asarray(rng.integers(2, 50, (2, 9))), jnp.asarray(rng.integers(2, 50, (2, 6)))
    plain = build_adapted_model(t5_config, None, nnx.Rngs(1))
    assert np.abs(forward(t5, enc, dec) - forward(plain, enc, dec)).max() > 1e-2  # it matters
    decode_checks.check_t5(t5, rng)
    decode_checks.check_decoder(build_adapted_model(
        dataclasses.replace(DECODER_TINY, scan_layers=scan), PREFIX, nnx.Rngs(1)), rng)


def test_packed_examples_see_the_prefix_as_unpacked_ones_do():
    rng = np.random.default_rng(2)
    decode_checks.check_packed_decoder(build_adapted_model(DECODER_TINY, PREFIX, nnx.Rngs(4)),
                                       rng, [5, 6], 13)
    decode_checks.check_packed_t5(build_adapted_model(T5_TINY, PREFIX, nnx.Rngs(4)), rng)


@pytest.mark.parametrize("family", parity.FAMILIES)
def test_a_flantune_prefix_exports_folded_and_loads_into_peft(family, tmp_path):
    import peft

    base_dir = tmp_path / "base"
    parity.ref.save(parity.hf_model(family, prefix=True), base_dir)
    prefix = PrefixConfig(num_virtual_tokens=3, projection=True, projection_hidden=12)
    config, adapter, ours = parity.flantune_adapter(base_dir, prefix, family)
    batch = parity.inputs(family)
    save_peft_adapter(config, prefix, adapter, tmp_path / "export")
    loaded = peft.PeftModel.from_pretrained(parity.hf_model(family, prefix=True),
                                            str(tmp_path / "export")).eval()
    np.testing.assert_allclose(parity.hf_logits(loaded, family, batch), ours, atol=1e-5, rtol=0)
    folded_config, folded = load_peft_adapter(tmp_path / "export", config)
    assert folded_config == PrefixConfig(num_virtual_tokens=3)  # the MLP is folded away
    np.testing.assert_allclose(
        parity.flantune_logits(base_dir, tmp_path / "export", family, batch), ours,
        atol=1e-5, rtol=0)
    assert set(folded) == {"prefix_tuning"}


@pytest.mark.slow
def test_a_prefix_run_trains_resumes_and_decodes(tmp_path):
    from flantune.evaluation.command import EvalRun, run
    from flantune.evaluation.evaluator import EvalConfig
    from flantune.models import build_model, save_hf_checkpoint
    from flantune.train.loop import train
    from tests.peft.test_lora import DECODER, LENGTHS, _run

    base = tmp_path / "base"
    save_hf_checkpoint(DECODER, jax.tree.map(np.asarray, model_params(
        build_model(DECODER, nnx.Rngs(2)))), base)
    prefix = PrefixConfig(num_virtual_tokens=4, projection=True)
    straight = train(_run(tmp_path / "straight", str(base), model=DECODER, adapter=prefix))
    assert straight.losses[6] < straight.losses[1]
    first = train(_run(tmp_path / "resumed", str(base), model=DECODER, adapter=prefix,
                       train_steps=3))
    second = train(_run(tmp_path / "resumed", str(base), model=DECODER, adapter=prefix))
    assert {**first.losses, **second.losses} == straight.losses
    results, _ = run(EvalRun(
        checkpoint_path=str(base), output_dir=str(tmp_path / "out"), model=DECODER,
        eval=EvalConfig(mixture_or_task_name="test_reverse", max_examples_per_task=4,
                        batch_size=2), task_feature_lengths=LENGTHS,
        adapter_path=str(tmp_path / "straight")), infer=True)
    task = results.tasks["test_reverse"]
    assert not task.errors and len(task.predictions) == 4


def test_a_t5_encoder_prefix_reaches_the_encoder_packs_decodes_and_has_no_peft_export(tmp_path):
    from flantune.models import CheckpointError

    rng = np.random.default_rng(6)
    both = dataclasses.replace(PREFIX, t5_encoder=True)
    model = build_adapted_model(T5_TINY, both, nnx.Rngs(4))
    decoder_only = build_adapted_model(T5_TINY, PREFIX, nnx.Rngs(4))
    enc = jnp.asarray(rng.integers(2, 50, (2, 7)))
    assert np.abs(np.asarray(model.encode(enc)) - np.asarray(decoder_only.encode(enc))
                  ).max() > 1e-2
    decode_checks.check_t5(model, rng)
    decode_checks.check_packed_t5(model, rng)
    state = nnx.state(model, nnx.Param)
    adapter, _ = split_params(model_params(model), adapter_paths(state))
    with pytest.raises(CheckpointError, match="peft's prefix tuning cannot express"):
        save_peft_adapter(T5_TINY, both, jax.tree.map(np.asarray, adapter), tmp_path / "x")
    with pytest.raises(ValueError, match="has none"):
        build_adapted_model(DECODER_TINY, both, nnx.Rngs(0))
