"""LoRA adapters in Hugging Face peft's format: a peft adapter imported into flantune computes
peft's logits, a flantune adapter exported loads into peft (no missing or unexpected keys) and
computes flantune's, and a merged model equals the adapted one."""

from __future__ import annotations

import json
import logging
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from flantune.models import CheckpointError, build_model, load_hf_checkpoint
from flantune.models.build import model_params
from flantune.peft import LoraConfig, build_adapted_model, merge_lora
from flantune.peft.adapted import adapter_paths, join_params, split_params
from flantune.peft.hf_format import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    load_peft_adapter,
    save_peft_adapter,
)
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward
from tests.peft import parity

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

FAMILIES = ["t5", "llama"]
TARGETS = {"t5": ["q", "v", "o", "wi_0"], "llama": ["q_proj", "k_proj", "o_proj", "down_proj"]}


_hf_model, _inputs, _hf_logits = parity.hf_model, parity.inputs, parity.hf_logits


def _peft_model(family: str, **lora):
    config = peft.LoraConfig(r=4, lora_alpha=6, target_modules=TARGETS[family],
                             init_lora_weights=False, **lora)  # B random, not zero
    torch.manual_seed(3)
    return peft.get_peft_model(_hf_model(family), config).eval()


def _flantune_base(family: str, tmp_path, scan_layers: bool = False):
    base_dir = ref.save(_hf_model(family), tmp_path / "base")
    config, params = load_hf_checkpoint(base_dir, scan_layers=scan_layers)
    return config, params


def _adapted_logits(config, lora, base_params, adapter, inputs) -> np.ndarray:
    model = build_adapted_model(config, lora, nnx.Rngs(0))
    model_state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(model_state, join_params(adapter, base_params))
    nnx.update(model, model_state)
    return forward(model, *inputs)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_imported_computes_peft_logits(family, scan_layers, tmp_path):
    reference = _peft_model(family, use_rslora=True)
    diff, peft_error = parity.compare(family, reference, scan_layers)
    # The adapter changes the logits well beyond the tolerance: the check is not vacuous.
    inputs = _inputs(family)
    assert np.abs(_hf_logits(_hf_model(family), family, inputs)
                  - _hf_logits(reference, family, inputs)).max() > 1e-2
    assert diff <= max(1e-5, 3 * peft_error), (diff, peft_error)
    reference.save_pretrained(str(tmp_path / "adapter"))
    config, _ = _flantune_base(family, tmp_path, scan_layers)
    lora, _ = load_peft_adapter(tmp_path / "adapter", config)
    assert (lora.r, lora.alpha, lora.use_rslora) == (4, 6.0, True)


@pytest.mark.parametrize("family", FAMILIES)
def test_flantune_adapter_exported_loads_into_peft_without_warnings(family, tmp_path, caplog):
    config, base = _flantune_base(family, tmp_path)
    lora = LoraConfig(r=3, alpha=5.0, target_modules="all-linear")
    model = build_adapted_model(config, lora, nnx.Rngs(1))
    trainable = adapter_paths(nnx.state(model, nnx.Param))
    adapter, _ = split_params(model_params(model), trainable)
    # B starts at zero; give it values so the export carries a real delta.
    adapter = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 * jax.random.normal(jax.random.key(len(str(path))), x.shape),
        adapter)
    inputs = _inputs(family)
    ours = _adapted_logits(config, lora, base, adapter, inputs)
    files = save_peft_adapter(config, lora, adapter, tmp_path / "export")
    assert sorted(f.name for f in files) == sorted([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE])
    saved = json.loads((tmp_path / "export" / ADAPTER_CONFIG_FILE).read_text())
    assert "lm_head" not in saved["target_modules"]  # all-linear leaves the output head alone
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft.PeftModel.from_pretrained(_hf_model(family), str(tmp_path / "export"))
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "key" in m.lower() or "adapter" in m.lower()], messages
    # float32 logits of order 1 through a whole model: one element in ~2,000 may differ by
    # 1.04e-5 from run to run (the same arithmetic in another summation order).
    np.testing.assert_allclose(_hf_logits(loaded.eval(), family, inputs), ours, atol=2e-5,
                               rtol=0)
    # And back: importing the export gives the same adapter.
    again_config, again = load_peft_adapter(tmp_path / "export", config)
    np.testing.assert_allclose(_adapted_logits(config, again_config, base, again, inputs), ours,
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
def test_merged_model_equals_the_adapted_one(scan_layers, tmp_path):
    config, base = _flantune_base("llama", tmp_path, scan_layers)
    reference = _peft_model("llama")
    reference.save_pretrained(str(tmp_path / "adapter"))
    lora, adapter = load_peft_adapter(tmp_path / "adapter", config)
    inputs = _inputs("llama")
    adapted = _adapted_logits(config, lora, base, adapter, inputs)
    merged = build_model(config, params=merge_lora(base, adapter, config, lora))
    np.testing.assert_allclose(forward(merged, *inputs), adapted, atol=1e-5, rtol=0)
    # peft's own merge gives the same model.
    peft_merged = reference.merge_and_unload()
    np.testing.assert_allclose(_hf_logits(peft_merged, "llama", inputs), adapted, atol=1e-5,
                               rtol=0)


def test_unsupported_or_mismatched_peft_adapters_are_clear_errors(tmp_path):
    config, _ = _flantune_base("t5", tmp_path)
    reference = _peft_model("t5")
    reference.save_pretrained(str(tmp_path / "adapter"))
    config_path = tmp_path / "adapter" / ADAPTER_CONFIG_FILE
    original = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**original, "use_dora": True}))
    with pytest.raises(CheckpointError, match="use_dora"):
        load_peft_adapter(tmp_path / "adapter", config)
    config_path.write_text(json.dumps({**original, "r": 5}))
    with pytest.raises(CheckpointError, match=r"expected shape \(5, 32\)"):
        load_peft_adapter(tmp_path / "adapter", config)
    config_path.write_text(json.dumps({**original, "target_modules": ["q"]}))
    with pytest.raises(CheckpointError, match="unexpected tensor .*SelfAttention.v.lora_A"):
        load_peft_adapter(tmp_path / "adapter", config)
