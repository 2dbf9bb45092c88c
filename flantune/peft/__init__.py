"""Parameter-efficient fine-tuning: adapters attached to a frozen base model (LoRA), their
selection of projections, folding them into the base, and Hugging Face peft's file format."""

from flantune.peft.adapted import attach, build_adapted_model
from flantune.peft.config import LoraConfig, adapter_from_dict, adapter_to_dict
from flantune.peft.lora import AdapterParam, merge_lora
from flantune.peft.targets import TargetError, projections, select

__all__ = [
    "AdapterParam", "LoraConfig", "TargetError", "adapter_from_dict", "adapter_to_dict",
    "attach", "build_adapted_model", "merge_lora", "projections", "select",
]
