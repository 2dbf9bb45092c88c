"""Chat templates: flantune's tokens equal transformers' apply_chat_template on the models'
official templates (system prompts, multi-turn, generation prompt), the masks equal
transformers' assistant masks and hand-written expectations, and a Hub Jinja template without
generation blocks works turn by turn."""

from __future__ import annotations

import json

import pytest

from flantune.data import DataError
from flantune.data.chat import (
    CHATML,
    LLAMA2,
    LLAMA3,
    MISTRAL,
    MISTRAL_LEGACY,
    ChatTemplate,
    encode_conversation,
    encode_prompt,
    template_from_tokenizer,
)
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from tests.data.chat import official_templates as official
from tests.data.chat.conversations_fixture import random_conversations
from tests.data.chat.tokenizers import trained

PAIRS = [(LLAMA2, official.LLAMA2_CHAT), (MISTRAL, official.MISTRAL_INSTRUCT),
         (MISTRAL_LEGACY, official.MISTRAL_INSTRUCT_LEGACY), (CHATML, official.CHATML),
         (LLAMA3, official.LLAMA3_INSTRUCT)]
CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
# The text of each run of trained tokens (the byte-level BPE of tests/data/chat/tokenizers.py),
# by template. Llama-2 puts a space before the answer, outside its generation block: " 4" is
# one token overlapping the block, so it trains; " Hello" is two, and the space does not.
EXPECTED_TRAINED = {
    "llama2": ["Hello! </s>", " 4 </s>"],
    "mistral": ["Hello!</s>", " 4</s>"],
    "mistral_legacy": ["Hello!</s>", "4</s>"],
    "chatml": ["Hello!<|im_end|>", "4<|im_end|>"],
    "llama3": ["Hello!<|eot_id|>", "4<|eot_id|>"],
}


@pytest.fixture(scope="module", params=["byte_level", "bpe"])
def tokenizer_dir(request, tmp_path_factory) -> str:
    return trained(tmp_path_factory.mktemp(request.param), request.param)


def _reference(tokenizer_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)


def _conversations(template: ChatTemplate, **kwargs) -> list[list[dict[str, str]]]:
    return random_conversations(40, system=template.system_role, **kwargs)


@pytest.mark.parametrize("builtin,source", PAIRS, ids=[t.name for t, _ in PAIRS])
def test_tokens_equal_apply_chat_template_on_the_official_template(tokenizer_dir, builtin,
                                                                    source):
    vocabulary, reference = HfTokenizerVocabulary(tokenizer_dir), _reference(tokenizer_dir)
    for messages in _conversations(builtin):
        want = reference.apply_chat_template(messages, chat_template=source, tokenize=True,
                                             return_dict=True)["input_ids"]
        assert encode_conversation(builtin, vocabulary, messages).tokens.tolist() == want
    for messages in _conversations(builtin, end_with_user=True):
        want = reference.apply_chat_template(messages, chat_template=source, tokenize=True,
                                             add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
        assert encode_prompt(builtin, vocabulary, messages)[1].tolist() == want


@pytest.mark.parametrize("builtin", [t for t, _ in PAIRS], ids=[t.name for t, _ in PAIRS])
def test_masks_equal_transformers_assistant_masks(tokenizer_dir, builtin):
    vocabulary, reference = HfTokenizerVocabulary(tokenizer_dir), _reference(tokenizer_dir)
    for messages in _conversations(builtin):
        want = reference.apply_chat_template(messages, chat_template=builtin.source,
                                             tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
        got = encode_conversation(builtin, vocabulary, messages)
        assert got.tokens.tolist() == want["input_ids"]
        assert got.loss_mask.tolist() == want["assistant_masks"]


def _trained_runs(encoded, vocabulary) -> list[str]:
    _, offsets = vocabulary.encode_with_offsets(encoded.text)
    return [encoded.text[offsets[start][0]:offsets[end - 1][1]] for start, end in encoded.turns]


@pytest.mark.parametrize("builtin", [t for t, _ in PAIRS], ids=[t.name for t, _ in PAIRS])
def test_masks_against_hand_written_expectations(tmp_path, builtin):
    vocabulary = HfTokenizerVocabulary(trained(tmp_path, "byte_level"))
    messages = CONVERSATION if builtin.system_role else CONVERSATION[1:]
    encoded = encode_conversation(builtin, vocabulary, messages)
    assert _trained_runs(encoded, vocabulary) == EXPECTED_TRAINED[builtin.name]
    ranges = [set(range(a, b)) for a, b in encoded.turns]
    assert set(map(int, encoded.loss_mask.nonzero()[0])) == ranges[0] | ranges[1]
    last = encode_conversation(builtin, vocabulary, messages, loss="last_turn")
    assert set(map(int, last.loss_mask.nonzero()[0])) == ranges[1]
    assert encode_conversation(builtin, vocabulary, messages, loss="all").loss_mask.all()


def test_a_hub_template_without_generation_blocks_works_turn_by_turn(tmp_path):
    directory = trained(tmp_path, "byte_level")
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "chat_template": official.ZEPHYR}))
    vocabulary, reference = HfTokenizerVocabulary(directory), _reference(directory)
    template = template_from_tokenizer(vocabulary)
    assert not template.marks_generation
    for messages in random_conversations(30):
        want = reference.apply_chat_template(messages, tokenize=True, return_dict=True)
        assert encode_conversation(template, vocabulary, messages).tokens.tolist() == \
            want["input_ids"]
    encoded = encode_conversation(template, vocabulary, CONVERSATION)
    assert _trained_runs(encoded, vocabulary) == ["Hello!</s>\n", "4</s>\n"]
    for messages in random_conversations(10, seed=4, end_with_user=True):
        want = reference.apply_chat_template(messages, tokenize=True, return_dict=True,
                                             add_generation_prompt=True)["input_ids"]
        assert encode_prompt(template, vocabulary, messages)[1].tolist() == want


def test_template_errors_are_clear(tmp_path):
    vocabulary = HfTokenizerVocabulary(trained(tmp_path, "byte_level"))
    not_a_prefix = ChatTemplate("shifty", (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"))
    with pytest.raises(DataError, match="does not render a conversation as the prefix"):
        encode_conversation(not_a_prefix, vocabulary, CONVERSATION)
    with pytest.raises(DataError, match="Jinja syntax error on line 1"):
        ChatTemplate("broken", "{% for m in messages %}")
    with pytest.raises(DataError, match="Conversation roles must alternate"):
        encode_conversation(LLAMA2, vocabulary, [CONVERSATION[1], CONVERSATION[1]])
    unknown = ChatTemplate("needs_tokens", CHATML.source, end_of_turn="<|end|>",
                           required_tokens=("<|start|>",))
    with pytest.raises(DataError, match=r"token\(s\) \['<\|end\|>', '<\|start\|>'\]"):
        encode_conversation(unknown, vocabulary, CONVERSATION)
    from flantune.data.vocabulary import DEFAULT_VOCABULARY

    with pytest.raises(DataError, match="Chat templates need a Hugging Face tokenizer"):
        encode_conversation(LLAMA2, DEFAULT_VOCABULARY, CONVERSATION)
    with pytest.raises(DataError, match="'mistral_legacy' has no system role"):
        encode_conversation(MISTRAL_LEGACY, vocabulary, CONVERSATION)
