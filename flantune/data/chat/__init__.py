"""Chat-model data: conversations in a model's chat template, with assistant-only loss."""

from flantune.data.chat import conversations  # noqa: F401 - registers the *_messages formats
from flantune.data.chat.conversations import check_conversation
from flantune.data.chat.encoding import (
    LOSS_MODES,
    EncodedConversation,
    encode_conversation,
    encode_prompt,
)
from flantune.data.chat.tasks import (
    ChatTask,
    chat_task,
    chat_task_for,
    registered_chat_tasks,
    set_chat_loss,
    set_chat_template,
)
from flantune.data.chat.templates import (
    CHATML,
    LLAMA2,
    LLAMA3,
    MISTRAL,
    MISTRAL_LEGACY,
    ChatTemplate,
    chat_template_names,
    get_chat_template,
    register_chat_template,
    template_from_tokenizer,
)

__all__ = [
    "CHATML", "LLAMA2", "LLAMA3", "LOSS_MODES", "MISTRAL", "MISTRAL_LEGACY", "ChatTask",
    "ChatTemplate",
    "EncodedConversation", "chat_task", "chat_task_for", "chat_template_names",
    "check_conversation", "encode_conversation", "encode_prompt", "get_chat_template",
    "register_chat_template", "registered_chat_tasks", "set_chat_loss", "set_chat_template",
    "template_from_tokenizer",
]
