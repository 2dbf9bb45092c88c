"""`flantune convert`: Hugging Face checkpoints to and from flantune's, including a training
run's MODEL_DIR (which needs flantune.train, hence a package above it)."""

from flantune.export.command import main
from flantune.export.hf import export_to_hf

__all__ = ["export_to_hf", "main"]
