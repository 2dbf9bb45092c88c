"""Parameter-efficient fine-tuning: adapters attached to a frozen base model (LoRA on chosen
projections, folded into the base on merge; prefix tuning; prompt tuning), and Hugging Face
peft's files."""

from flantune.peft.adapted import attach, build_adapted_model
from flantune.peft.config import (
    LoraConfig,
    PrefixConfig,
    PromptConfig,
    adapter_from_dict,
    adapter_to_dict,
)
from flantune.peft.lora import AdapterParam, merge_lora
from flantune.peft.targets import TargetError, projections, select

__all__ = [
    "AdapterParam", "LoraConfig", "PrefixConfig", "PromptConfig", "TargetError",
    "adapter_from_dict", "adapter_to_dict", "attach", "build_adapted_model", "merge_lora",
    "projections", "select",
]
