"""flantune's DPO / IPO / hinge loss and reward metrics equal TRL's DPOTrainer on the same
weights and tokens: a random policy against a random reference model, and a peft LoRA policy
against its base with the adapter disabled (tests/preference/parity.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from tests.preference.parity import compare  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_full_model_losses_equal_trl(loss):
    differences = compare(loss, beta=0.1 if loss != "ipo" else 1.0)
    assert max(differences.values()) <= 1e-5, differences


@pytest.mark.slow
def test_lora_against_its_disabled_adapter_equals_trl_with_peft():
    differences = compare("sigmoid", lora=True)
    assert max(differences.values()) <= 1e-5, differences
