"""The chat demo end to end: `flantune train` on conversations in the Llama-2 template with
the shipped tokenizer, `flantune infer` answering conversations in the template, and the Hugging
Face export, whose tokenizer carries the chat template (same prompts as flantune) and whose
model generates flantune's answers from them."""

from __future__ import annotations

import json

import pytest

from flantune import cli
from flantune.data.chat import LLAMA2, encode_conversation, encode_prompt
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.vocabulary import demo_chat_tokenizer_path
from flantune.export import command

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = ["--gin.DecoderConfig.emb_dim=32", "--gin.DecoderConfig.head_dim=8",
        "--gin.DecoderConfig.mlp_dim=64", "--gin.DecoderConfig.num_heads=4"]


@pytest.mark.slow
def test_chat_demo_trains_answers_and_exports_for_transformers(tmp_path):
    model_dir, out, hf = tmp_path / "run", tmp_path / "infer", tmp_path / "hf"
    assert cli.main(["train", "--gin_file=gin_configs/runs/demo_chat.gin",
                     f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=2",
                     "--gin.TASK_FEATURE_LENGTHS={'targets': 256}",
                     "--gin.flantune.CheckpointConfig.save_interval_steps=4", *TINY]) == 0
    assert cli.main(["infer", "--gin_file=gin_configs/runs/demo_chat_model.gin",
                     "--gin_file=gin_configs/runs/infer.gin",
                     f"--gin.CHECKPOINT_PATH='{model_dir}'",
                     "--gin.MIXTURE_OR_TASK_NAME='chat_sharegpt'", f"--gin.EVAL_OUTPUT_DIR='{out}'",
                     "--gin.EVAL_MAX_EXAMPLES=3", *TINY]) == 0
    predictions = [json.loads(line) for line in (out / "chat_sharegpt.jsonl").open()]
    assert len(predictions) == 3
    assert all(p["inputs"].startswith("<s>[INST] ") and p["inputs"].endswith(" [/INST]")
               for p in predictions)
    assert command.main(["flantune-to-hf", str(model_dir), str(hf)]) == 0

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf, local_files_only=True)
    assert tokenizer.chat_template == LLAMA2.source
    vocabulary = HfTokenizerVocabulary(demo_chat_tokenizer_path())
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is 2 + 3?"},
                    {"role": "assistant", "content": "5"}]
    ours = encode_conversation(LLAMA2, vocabulary, conversation)
    theirs = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    assert theirs["input_ids"] == ours.tokens.tolist()
    assert theirs["assistant_masks"] == ours.loss_mask.tolist()

    model = transformers.AutoModelForCausalLM.from_pretrained(hf, local_files_only=True)
    stop = vocabulary.token_id("</s>")
    assert model.generation_config.eos_token_id == stop
    for prediction in predictions:
        prompt = tokenizer(prediction["inputs"], add_special_tokens=False,
                           return_tensors="pt")["input_ids"]
        generated = model.generate(prompt, max_new_tokens=24, do_sample=False,
                                   eos_token_id=stop, pad_token_id=0)[0, prompt.shape[1]:]
        text = tokenizer.decode(generated, skip_special_tokens=True).strip()
        # flantune decodes up to its own length limit: the shorter text is a prefix of the other
        shorter, longer = sorted([text, prediction["prediction"]], key=len)
        assert longer.startswith(shorter), (text, prediction["prediction"])
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"] == \
        encode_prompt(LLAMA2, vocabulary, messages)[1].tolist()
