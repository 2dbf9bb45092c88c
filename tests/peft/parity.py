"""flantune vs Hugging Face peft on the same random adapters (used by the tests and by
tools/bench_peft.py): the largest float32 logit difference, and peft's own float32 error
against the same model run in float64."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
from flax import nnx

from flantune.models import load_hf_checkpoint
from flantune.peft import build_adapted_model
from flantune.peft.adapted import join_params
from flantune.peft.hf_format import load_peft_adapter
from tests.models import hf_reference as ref
from tests.models.jit_forward import forward

FAMILIES = ("t5", "llama")
LORA_TARGETS = {"t5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
                "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj"]}


def hf_model(family: str, prefix: bool = False):
    """The family's tiny random model; for prefix tuning a T5 with as many decoder as encoder
    layers (peft's prefix layout needs it)."""
    if family == "t5":
        return ref.t5("v1_1", seed=5, **({"num_decoder_layers": 2} if prefix else {}))
    return ref.decoder("llama", seed=5)


def inputs(family: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(9)
    tokens = rng.integers(2, ref.VOCAB, (2, 9))
    if family == "t5":
        decoder = rng.integers(2, ref.VOCAB, (2, 5))
        decoder[:, 0] = 0
        return tokens, decoder
    return (tokens,)


def hf_logits(model, family: str, batch) -> np.ndarray:
    if family == "t5":
        return ref.t5_logits(model, *batch)
    return ref.decoder_logits(model, batch[0], np.ones_like(batch[0]))


def flantune_logits(directory: Path, adapter_dir: Path, family: str, batch,
                    scan_layers: bool = False) -> np.ndarray:
    config, base = load_hf_checkpoint(directory, scan_layers=scan_layers)
    adapter_config, adapter = load_peft_adapter(adapter_dir, config)
    model = build_adapted_model(config, adapter_config, nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, join_params(adapter, base))
    nnx.update(model, state)
    return forward(model, *batch)


def flantune_adapter(base_dir: Path, adapter_config, family: str, seed: int = 5):
    """A flantune adapter, initialised as flantune does, on the Hugging Face base in `base_dir`:
    (model config, adapter parameters as numpy arrays, the adapted model's logits)."""
    import jax

    from flantune.models.build import model_params
    from flantune.peft.adapted import adapter_paths, split_params

    config, base = load_hf_checkpoint(base_dir)
    model = build_adapted_model(config, adapter_config, nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    adapter, _ = split_params(model_params(model), adapter_paths(state))
    nnx.replace_by_pure_dict(state, {**base, **adapter})
    nnx.update(model, state)
    return config, jax.tree.map(np.asarray, adapter), forward(model, *inputs(family))


def random_lora(family: str, **options):
    """A peft LoRA model (every linear layer, B random) on the family's tiny random model."""
    import peft
    import torch

    config = peft.LoraConfig(r=4, lora_alpha=6, target_modules=LORA_TARGETS[family],
                             init_lora_weights=False, **options)
    torch.manual_seed(3)
    return peft.get_peft_model(hf_model(family), config).eval()


def random_prefix(family: str, **options):
    """A peft prefix-tuning model (random table, N(0, 1) as peft draws it)."""
    import peft
    import torch

    task = "SEQ_2_SEQ_LM" if family == "t5" else "CAUSAL_LM"
    config = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=3, **options)
    torch.manual_seed(3)
    return peft.get_peft_model(hf_model(family, prefix=True), config).eval()


def random_prompt(family: str):
    """A peft prompt-tuning model (random prompt, N(0, 1) as peft draws it)."""
    import peft
    import torch

    task = "SEQ_2_SEQ_LM" if family == "t5" else "CAUSAL_LM"
    config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=3)
    torch.manual_seed(3)
    return peft.get_peft_model(hf_model(family), config).eval()


def compare(family: str, model, scan_layers: bool = False, prefix: bool = False,
            skip: int = 0) -> tuple[float, float]:
    """(max |flantune - peft| float32, max |peft float32 - peft float64|) of the logits; `skip`
    leading positions of peft's logits are dropped (a decoder's soft prompt)."""
    import torch

    batch = inputs(family)
    expected = hf_logits(model, family, batch)[:, skip:]
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, adapter_dir = Path(tmp) / "base", Path(tmp) / "adapter"
        model.save_pretrained(str(adapter_dir))
        ref.save(hf_model(family, prefix), base_dir)
        ours = flantune_logits(base_dir, adapter_dir, family, batch, scan_layers)
    double = copy.deepcopy(model).to(torch.float64)
    with torch.no_grad():
        if family == "t5":
            out = double(input_ids=torch.tensor(batch[0]),
                         attention_mask=torch.tensor(batch[0] > 0).long(),
                         decoder_input_ids=torch.tensor(batch[1])).logits.numpy()
        else:
            out = double(input_ids=torch.tensor(batch[0]),
                         attention_mask=torch.ones_like(torch.tensor(batch[0]))).logits.numpy()
    out = out[:, skip:]
    return float(np.abs(ours - expected).max()), float(np.abs(expected - out).max())


def lora_parity() -> dict[str, float]:
    diffs, own = [], []
    for family in FAMILIES:
        diff, error = compare(family, random_lora(family, use_rslora=family == "llama"))
        diffs.append(diff)
        own.append(error)
    return {"lora_logits_max_abs_diff_vs_peft": max(diffs), "peft_lora_float32_error": max(own)}


def prefix_parity() -> dict[str, float]:
    diffs, own = [], []
    for family in FAMILIES:
        for projection in (False, True):
            diff, error = compare(family, random_prefix(family, prefix_projection=projection),
                                  prefix=True)
            diffs.append(diff)
            own.append(error)
    return {"prefix_logits_max_abs_diff_vs_peft": max(diffs),
            "peft_prefix_float32_error": max(own)}


def prompt_parity() -> dict[str, float]:
    diffs, own = [], []
    for family in FAMILIES:
        diff, error = compare(family, random_prompt(family), skip=0 if family == "t5" else 3)
        diffs.append(diff)
        own.append(error)
    return {"prompt_logits_max_abs_diff_vs_peft": max(diffs),
            "peft_prompt_float32_error": max(own)}
