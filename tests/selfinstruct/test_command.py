"""`flantune self-instruct` end to end with a tiny real model: decoding, filtering, files,
determinism across runs, and the output trained on through the gin task binding."""

import dataclasses
import json

import jax
import pytest

from flantune import cli
from flantune.models import T5Config
from flantune.models.convert import save_params
from flantune.selfinstruct import DecodingGenerator, Sampling
from flantune.train.state import ModelSpec

TINY = T5Config(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                num_encoder_layers=1, num_decoder_layers=1, relative_attention_num_buckets=8,
                relative_attention_max_distance=16, dropout_rate=0.0)
MODEL_BINDINGS = [f"--gin.T5Config.{field}={getattr(TINY, field)!r}" for field in (
    "vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
    "num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    spec = ModelSpec.from_config(TINY)
    path = tmp_path_factory.mktemp("generator") / "params"
    save_params(TINY, spec.init_params(jax.random.key(3)), path)
    return path


def _self_instruct(checkpoint, out_dir, *extra):
    return cli.main(["self-instruct", "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                     "--gin_file=gin_configs/runs/self_instruct.gin", *MODEL_BINDINGS,
                     f"--gin.CHECKPOINT_PATH='{checkpoint}'",
                     f"--gin.SELF_INSTRUCT_DIR='{out_dir}'",
                     "--gin.SELF_INSTRUCT_MAX_ROUNDS=1", "--gin.SELF_INSTRUCT_PROMPTS_PER_ROUND=2",
                     "--gin.SELF_INSTRUCT_BATCH_SIZE=2", "--gin.SELF_INSTRUCT_INPUTS_LENGTH=256",
                     "--gin.SELF_INSTRUCT_MAX_NEW_TOKENS=12", *extra])


def test_the_command_generates_filters_and_writes_the_same_files_twice(checkpoint, tmp_path,
                                                                         capsys):
    assert _self_instruct(checkpoint, tmp_path / "a") == 0
    out = capsys.readouterr()
    assert "tasks in 1 rounds" in out.out and "warning" not in out.err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    totals = report["totals"]
    # A random model's text: every candidate is accounted for by a reason or kept.
    assert totals["instructions_generated"] >= 2
    rejected = sum(v for k, v in totals.items() if k.startswith("instruction_rejected/"))
    assert rejected + totals.get("instructions_kept", 0) == totals["instructions_generated"]
    assert report["generated_tokens"] > 0
    assert _self_instruct(checkpoint, tmp_path / "b") == 0
    for name in ("self_instruct.jsonl", "report.json", "state.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_decoding_generator_samples_by_seed_and_marks_truncation(checkpoint):
    from flantune.data.vocabulary import configured_vocabulary, set_vocabulary

    set_vocabulary(None)
    spec = ModelSpec.from_config(TINY)
    params = spec.init_params(jax.random.key(3))
    generator = DecodingGenerator(spec, params, configured_vocabulary(), inputs_length=16,
                                  batch_size=2)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=6)
    prompts = ["Come up with a series of tasks:\n1. Sort the list.\n2.", "Is it? Yes", "x"]
    first = generator(prompts, sampling, seed=1)
    assert first == generator(prompts, sampling, seed=1)
    assert first != generator(prompts, sampling, seed=2)
    assert generator.prompts_cut == 3  # the first prompt is longer than 16 tokens, 3 times
    for generation in first:
        assert generation.truncated == (generation.num_tokens == 6)
    greedy = generator(prompts, dataclasses.replace(sampling, temperature=0.0), seed=1)
    assert greedy == generator(prompts, dataclasses.replace(sampling, temperature=0.0), seed=9)


def test_missing_settings_fail_clearly(checkpoint, tmp_path, capsys):
    code = cli.main(["self-instruct", "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                     "--gin_file=gin_configs/runs/self_instruct.gin"])
    assert code == 2 and "CHECKPOINT_PATH, SELF_INSTRUCT_DIR" in capsys.readouterr().err
    assert _self_instruct(tmp_path / "nowhere", tmp_path / "c") == 2
    assert "nowhere" in capsys.readouterr().err
