"""TRL's DPOTrainer as the reference for flantune's preference losses: the loss and the reward
metrics TRL computes for given policy and reference models on given token pairs."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from flantune.data.vocabulary import resolve_vocabulary_path  # noqa: E402

Pair = tuple[Sequence[int], Sequence[int], Sequence[int]]  # prompt, chosen, rejected ids


def tokenizer():
    """The shipped demo chat tokenizer as a transformers tokenizer."""
    directory = resolve_vocabulary_path("flantune:demo_chat")
    return transformers.AutoTokenizer.from_pretrained(str(directory))


def trainer(model, ref_model, *, loss_type: str = "sigmoid", beta: float = 0.1,
            peft_config=None):
    """A DPOTrainer of ``model`` against ``ref_model`` on the CPU, with a one-pair dataset (the
    pairs scored are given to :func:`trl_metrics`). With ``peft_config`` and no ``ref_model``
    TRL adds a new adapter to ``model`` and its reference is the base with the adapter
    disabled (a PeftModel given as ``model`` would instead be scored against a frozen copy of
    its adapter)."""
    config = trl.DPOConfig(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True,
                           loss_type=[loss_type], beta=beta, bf16=False, fp16=False,
                           per_device_train_batch_size=2, dataset_num_proc=None,
                           disable_dropout=True)
    dataset = datasets.Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    return trl.DPOTrainer(model=model, ref_model=ref_model, args=config,
                          train_dataset=dataset, processing_class=tokenizer(),
                          peft_config=peft_config)


def trl_metrics(dpo, pairs: Sequence[Pair]) -> dict[str, float]:
    """TRL's loss and reward metrics of ``pairs`` (one batch), in float64."""
    collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=0)
    inputs = collator([{"prompt_ids": list(p), "chosen_ids": list(c), "rejected_ids": list(r)}
                       for p, c, r in pairs])
    dpo._metrics["train"].clear()
    dpo.model.train()
    with torch.no_grad():
        loss = dpo._compute_loss(dpo.model, inputs, return_outputs=False)
    logged = {k: float(np.mean(v)) for k, v in dpo._metrics["train"].items()}
    return {"loss": float(loss), "rewards/chosen": logged["rewards/chosen"],
            "rewards/rejected": logged["rewards/rejected"],
            "rewards/accuracy": logged["rewards/accuracies"],
            "rewards/margin": logged["rewards/margins"],
            "logps/chosen": logged["logps/chosen"], "logps/rejected": logged["logps/rejected"]}
