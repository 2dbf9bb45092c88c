"""`flantune convert flantune-to-hf` from every flantune checkpoint kind: the ids the model was
trained with, generation_config.json, the run's tokenizer, and prefix-LM decoders refused."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from flantune.data.vocabulary import demo_vocabulary_path
from flantune.export import command
from flantune.models import DecoderConfig, T5Config, load_hf_checkpoint
from flantune.models.convert import save_params
from flantune.models.convert.errors import CheckpointError
from flantune.train.checkpoints import CheckpointConfig, Checkpointer
from tests.train.test_checkpoints import assert_trees_equal, random_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 8000  # the demo vocabulary's size
DECODER = DecoderConfig(vocab_size=VOCAB, emb_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
                        mlp_dim=32, num_layers=2, max_position_embeddings=64)
T5 = T5Config(vocab_size=VOCAB, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
              num_encoder_layers=1, num_decoder_layers=1)
CHAIN = (5, 6, 7, 8)  # the chain model writes these, then EOS


def _gin_value(value) -> str:
    return repr(value)


def _model_dir(directory, config, params_by_step: dict, lengths: dict, vocabulary: str = ""):
    """A MODEL_DIR as `flantune train` leaves it: step directories and config.gin."""
    with Checkpointer(directory, CheckpointConfig(save_interval_steps=1,
                                                  async_save=False)) as checkpointer:
        for step, params in params_by_step.items():
            checkpointer.save(step, {"params": params, "step": jnp.asarray(step)})
    name = type(config).__name__
    lines = ["import flantune.gin_config", "import flantune.models.gin_registry",
             f"TASK_FEATURE_LENGTHS = {lengths!r}", f"model_config.config = @{name}()",
             "train_config.task_feature_lengths = %TASK_FEATURE_LENGTHS", vocabulary]
    lines += [f"{name}.{field} = {_gin_value(getattr(config, field))}"
              for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim")]
    if isinstance(config, DecoderConfig):
        lines += [f"DecoderConfig.{f} = {getattr(config, f)!r}"
                  for f in ("num_kv_heads", "num_layers", "max_position_embeddings")]
    else:
        lines += [f"T5Config.{f} = {getattr(config, f)!r}"
                  for f in ("num_encoder_layers", "num_decoder_layers")]
    (directory / "config.gin").write_text("\n".join(lines) + "\n")
    return directory


def _chain_params() -> dict:
    """A decoder whose layers add nothing (zero output projections) and whose embedding and
    head make it a bigram model: every token is followed by 5, then 5 -> 6 -> 7 -> 8 -> EOS."""
    params = random_params(DECODER, seed=1)
    for layer in params["layers"]["layers"].values():
        layer["attention"]["out"][...] = 0
        layer["mlp"]["wo"]["kernel"][...] = 0
    params["final_norm"]["scale"][...] = 1
    embedding = np.zeros((VOCAB, 16), np.float32)
    embedding[:, 15] = 1.0
    head = np.zeros((16, VOCAB), np.float32)
    head[15, CHAIN[0]] = 0.5
    for i, token in enumerate(CHAIN):
        embedding[token, i] = 4.0
        head[i, CHAIN[i + 1] if i + 1 < len(CHAIN) else 1] = 1.0
    params["token_embedder"]["embedding"] = embedding
    params["logits_dense"]["kernel"] = head
    return params


def _json(path) -> dict:
    return json.loads(path.read_text())


def test_a_decoder_run_exports_ids_that_stop_hf_generate_at_eos(tmp_path, capsys):
    params = _chain_params()
    run = _model_dir(tmp_path / "run", DECODER, {4: params}, {"targets": 32})
    assert command.main(["flantune-to-hf", str(run), str(tmp_path / "hf")]) == 0
    assert "pad 0, eos 1, bos 0" in capsys.readouterr().out
    config = _json(tmp_path / "hf" / "config.json")
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, 0)
    assert _json(tmp_path / "hf" / "generation_config.json") == {
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    prompt = "Q: What comes next?\nA:"
    inputs = tokenizer(prompt, return_tensors="pt")
    # A run without 'inputs' trains plain LM sequences: 0, the text's ids (no EOS after them).
    vocabulary = seqio.SentencePieceVocabulary(demo_vocabulary_path())
    assert inputs["input_ids"][0].tolist() == [0, *vocabulary.encode(prompt)]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out[0, inputs["input_ids"].shape[1]:].tolist() == [*CHAIN, 1]


def test_a_model_dir_exports_its_newest_step_and_a_step_dir_its_own(tmp_path):
    old, new = random_params(T5, seed=2), random_params(T5, seed=3)
    run = _model_dir(tmp_path / "run", T5, {2: old, 6: new}, {"inputs": 32, "targets": 8})
    for source, expected in ((run, new), (run / "2", old)):
        out = tmp_path / f"hf_{source.name}"
        assert command.main(["flantune-to-hf", str(source), str(out)]) == 0
        assert_trees_equal(load_hf_checkpoint(out)[1], expected)
        config = _json(out / "config.json")
        assert (config["decoder_start_token_id"], config["eos_token_id"],
                config["pad_token_id"]) == (0, 1, 0)
        assert _json(out / "generation_config.json") == {
            "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
        assert tokenizer("2 + 2\n= 4")["input_ids"] == [
            *seqio.SentencePieceVocabulary(demo_vocabulary_path()).encode("2 + 2\n= 4"), 1]


def test_the_runs_configured_vocabulary_and_extra_ids_are_exported(tmp_path):
    config = T5Config(**{**T5.__dict__, "vocab_size": VOCAB + 100})
    run = _model_dir(tmp_path / "run", config, {1: random_params(config)},
                     {"inputs": 32, "targets": 8},
                     f"flantune.vocabulary.path = {demo_vocabulary_path()!r}\n"
                     "flantune.vocabulary.extra_ids = 100")
    assert command.main(["flantune-to-hf", str(run), str(tmp_path / "hf")]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert len(tokenizer) == VOCAB + 100
    assert tokenizer.convert_tokens_to_ids("▁<extra_id_0>") == VOCAB + 99


def test_a_prefix_lm_decoder_is_refused_unless_forced(tmp_path, capsys):
    run = _model_dir(tmp_path / "run", DECODER, {1: random_params(DECODER)},
                     {"inputs": 32, "targets": 8})
    assert command.main(["flantune-to-hf", str(run), str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "trained as a prefix LM" in err and "config.gin" in err and "--force" in err
    assert not (tmp_path / "hf").exists()
    assert command.main(["flantune-to-hf", str(run), str(tmp_path / "hf"), "--force"]) == 0
    assert "WARNING: the model was trained as a prefix LM" in capsys.readouterr().err
    assert _json(tmp_path / "hf" / "config.json")["flantune_prefix_lm"] is True
    # Its prompts are flantune's: 0, the inputs' ids, EOS.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert tokenizer("x")["input_ids"][0] == 0 and tokenizer("x")["input_ids"][-1] == 1


def test_a_parameter_checkpoint_needs_its_vocabulary_named(tmp_path, capsys):
    config = DecoderConfig(**{**DECODER.__dict__, "bos_token_id": 1, "eos_token_id": 2})
    save_params(config, random_params(config), tmp_path / "ours")
    assert command.main(["flantune-to-hf", str(tmp_path / "ours"), str(tmp_path / "a")]) == 1
    assert "records no vocabulary: pass --vocabulary PATH" in capsys.readouterr().err
    # --no-tokenizer: the ids of the Hugging Face config it came from, and a warning.
    assert command.main(["flantune-to-hf", str(tmp_path / "ours"), str(tmp_path / "a"),
                         "--no-tokenizer"]) == 0
    assert "no tokenizer written" in capsys.readouterr().err
    assert _json(tmp_path / "a" / "generation_config.json") == {"bos_token_id": 1,
                                                                 "eos_token_id": 2}
    # A flantune vocabulary: flantune's ids and its tokenizer.
    assert command.main(["flantune-to-hf", str(tmp_path / "ours"), str(tmp_path / "b"),
                         "--vocabulary", demo_vocabulary_path()]) == 0
    assert _json(tmp_path / "b" / "generation_config.json")["eos_token_id"] == 1
    assert (tmp_path / "b" / "tokenizer.json").exists()


def test_a_hugging_face_source_or_no_checkpoint_is_refused(tmp_path, capsys):
    save_params(DECODER, random_params(DECODER), tmp_path / "ours")
    assert command.main(["flantune-to-hf", str(tmp_path / "ours"), str(tmp_path / "hf"),
                         "--no-tokenizer"]) == 0
    assert command.main(["flantune-to-hf", str(tmp_path / "hf"), str(tmp_path / "x")]) == 1
    assert "already a Hugging Face checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert command.main(["flantune-to-hf", str(tmp_path / "empty"), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "flantune-to-hf SOURCE" in err and "it is empty" in err and "MODEL_DIR" in err


def test_a_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    import flantune.export.hf as hf

    run = _model_dir(tmp_path / "run", T5, {2: random_params(T5, seed=2)},
                     {"inputs": 32, "targets": 8})

    def full_disk(*args, **kwargs):
        raise CheckpointError("no space left on device")

    monkeypatch.setattr(hf, "save_hf_checkpoint", full_disk)
    out = tmp_path / "hf"
    assert command.main(["flantune-to-hf", str(run), str(out)]) != 0
    assert "no space left" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
