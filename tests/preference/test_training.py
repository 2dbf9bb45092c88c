"""Preference tuning through flantune's own trainer: the loss starts at log 2 (policy =
reference), it learns, the reference may be precomputed (the same run, bit for bit), resumes are
bit-identical, microbatches give the full batch's loss, LoRA's reference is its base with the
adapter off, held-out pairs are evaluated, and misconfigured runs fail before the first step."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest

import flantune
from flantune.data import JsonlSource
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.vocabulary import demo_chat_tokenizer_path
from flantune.models import DecoderConfig, T5Config
from flantune.peft import LoraConfig
from flantune.preference import PreferenceConfig, PreferenceObjective
from flantune.train.checkpoints import CheckpointConfig
from flantune.train.loop import TrainConfig, TrainError, train
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig
from flantune.train.step import StepConfig
from tests.preference.sharded_cases import write_pairs

MODEL = DecoderConfig(vocab_size=8000, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                      mlp_dim=64, num_layers=2)
TASK = "test_pref_train"


@pytest.fixture(scope="module", autouse=True)
def pairs_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_pairs(str(path))

    @flantune.preference_task(TASK, vocabulary=HfTokenizerVocabulary(demo_chat_tokenizer_path()),
                              template="llama2", splits=("train", "validation"))
    def records(split):
        return JsonlSource(path, format="preference", task=TASK)


def _config(model_dir, preference=None, **overrides) -> TrainConfig:
    options = dict(
        model_dir=str(model_dir), mixture_or_task_name=TASK,
        task_feature_lengths={"targets": 64}, train_steps=6, batch_size=4, model=MODEL,
        window=64, log_every_steps=1, progress=False,
        optimizer=OptimizerConfig(name="adamw", schedule=ScheduleConfig(base_learning_rate=3e-3)),
        checkpoint=CheckpointConfig(save_interval_steps=3, async_save=False),
        objective=PreferenceObjective(preference or PreferenceConfig(eval_split=None)))
    options.update(overrides)
    return TrainConfig(**options)


def _metrics(config):
    logged = {}
    result = train(config, on_step=lambda step, metrics: logged.__setitem__(step, metrics))
    return result, logged


@pytest.mark.slow
def test_dpo_starts_at_log_two_learns_and_evaluates_held_out_pairs(tmp_path):
    preference = PreferenceConfig(beta=0.5, eval_split="validation", eval_every_steps=3)
    result, logged = _metrics(_config(tmp_path, preference, train_steps=8))
    assert logged[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert logged[1]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    assert logged[8]["loss"] < logged[1]["loss"] - 0.05
    assert logged[8]["rewards/accuracy"] > 0.5
    assert logged[8]["pairs"] >= 4  # whole pairs packed, at least one per row
    assert f"task_loss/{TASK}" in logged[8] and f"task_reward_accuracy/{TASK}" in logged[8]
    record = json.loads((tmp_path / "objective.json").read_text())
    assert record["preference"]["beta"] == 0.5 and record["reference"]["kind"] == "params"
    evaluated = sorted(os.listdir(tmp_path / "eval_preference"))
    assert "step_3.json" in evaluated and "step_8.json" in evaluated
    held_out = json.loads((tmp_path / "eval_preference" / "step_8.json").read_text())
    assert held_out["all/pairs"] == 48 and held_out[f"{TASK}/reward_accuracy"] > 0.5


@pytest.mark.slow
def test_precomputed_reference_and_resume_give_the_same_run_bit_for_bit(tmp_path):
    _, straight = _metrics(_config(tmp_path / "straight"))
    precompute = PreferenceConfig(eval_split=None, precompute_reference=True)
    _, first = _metrics(_config(tmp_path / "pre", precompute, train_steps=3))
    assert (tmp_path / "pre" / "reference_logps" / "process_0.npz").exists()
    _, second = _metrics(_config(tmp_path / "pre", precompute, train_steps=6))
    assert sorted(second) == [4, 5, 6]
    # The resumed run (its state, data position and cached reference restored) continues as
    # the uninterrupted one with the reference in the step.
    for step in range(1, 7):
        assert {**first, **second}[step]["loss"] == straight[step]["loss"], step


@pytest.mark.slow
def test_microbatches_give_the_full_batch_loss(tmp_path):
    _, whole = _metrics(_config(tmp_path / "whole", train_steps=2))
    _, micro = _metrics(_config(tmp_path / "micro", train_steps=2,
                                step=StepConfig(num_microbatches=2)))
    for step in (1, 2):
        assert micro[step]["loss"] == pytest.approx(whole[step]["loss"], rel=1e-5)


@pytest.mark.slow
def test_lora_reference_is_the_base_with_the_adapter_switched_off(tmp_path):
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    result, logged = _metrics(_config(tmp_path, adapter=lora, train_steps=3))
    assert logged[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # B = 0: policy = base
    assert logged[3]["loss"] < logged[1]["loss"]
    record = json.loads((tmp_path / "objective.json").read_text())
    assert record["reference"]["kind"] == "adapter_disabled"
    assert (tmp_path / "adapter.json").exists()
    with pytest.raises(TrainError, match="other preference settings.*beta"):
        train(_config(tmp_path, PreferenceConfig(beta=0.3, eval_split=None), adapter=lora,
                      train_steps=6))
    with pytest.raises(TrainError, match="another training objective"):
        train(_config(tmp_path, adapter=lora, train_steps=6, objective=None))


@pytest.mark.slow
def test_an_adapter_run_scores_a_reference_checkpoint(tmp_path):
    train(_config(tmp_path / "full", train_steps=3))  # a checkpoint to start from
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    preference = PreferenceConfig(reference=str(tmp_path / "full"), eval_split=None)
    _, logged = _metrics(_config(tmp_path / "lora", preference, adapter=lora, train_steps=2,
                                 initial_checkpoint_path=str(tmp_path / "full")))
    assert logged[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # reference = base
    record = json.loads((tmp_path / "lora" / "objective.json").read_text())
    assert record["reference"]["kind"] == "params"


def test_misconfigured_runs_fail_before_the_first_step(tmp_path):
    t5 = T5Config(vocab_size=8000, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                  num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(TrainError, match="decoder-only"):
        train(_config(tmp_path / "a", model=t5))
    import flantune.tasks  # noqa: F401  (registers chat_sharegpt)

    with pytest.raises(TrainError, match="not preference tasks.*chat_sharegpt"):
        train(_config(tmp_path / "b", mixture_or_task_name="chat_sharegpt"))
    with pytest.raises(TrainError, match="'initial' in an adapter run"):
        train(_config(tmp_path / "c", PreferenceConfig(reference="initial", eval_split=None),
                      adapter=LoraConfig()))
    with pytest.raises(TrainError, match="'adapter_disabled' needs an adapter"):
        train(_config(tmp_path / "d", PreferenceConfig(reference="adapter_disabled",
                                                       eval_split=None)))
    with pytest.raises(TrainError, match="eval_split = 'test'"):
        train(_config(tmp_path / "e", PreferenceConfig(eval_split="test")))
    with pytest.raises(TrainError, match="Z_LOSS"):
        from flantune.train.losses import LossConfig

        train(_config(tmp_path / "f", step=dataclasses.replace(
            StepConfig(), loss=LossConfig(z_loss=1e-3))))


def test_decode_evaluation_of_a_preference_task_is_refused_with_the_reason():
    from flantune.evaluation.examples import TaskEvalError, load_examples

    with pytest.raises(TaskEvalError, match=f"'{TASK}'.*preference task.*eval_split"):
        load_examples(TASK, "validation")
