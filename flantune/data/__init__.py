"""flantune's data layer: templated tasks, mixtures, vocabularies, packing and batches."""

from flantune.data.batches import BatchIterator, IteratorState, make_converter
from flantune.data.errors import DataError, RecordError, TemplateError, UnknownNameError
from flantune.data.feature_converters import (
    ConversionStats,
    DecoderFeatureConverter,
    EncDecFeatureConverter,
)
from flantune.data.hf_vocabulary import HfTokenizerVocabulary
from flantune.data.mixtures import (
    examples_proportional,
    get_provider,
    leaf_tasks,
    mixture,
    register_mixture,
    task_shares,
    temperature_scaled,
)
from flantune.data.sources import (
    CsvSource,
    IterableSource,
    JsonlSource,
    ModuloSplit,
    ReasoningGymSource,
    RecordSource,
    TfdsSource,
)
from flantune.data.stream import ExampleStream, MixingSchedule, sample_examples
from flantune.data.tasks import FlanTask, flan_task_for, registered_flan_tasks, task
from flantune.data.templates import Template, cot_template, inverted
from flantune.data.variants import FewShotConfig, Variant
from flantune.data.vocabulary import (
    ConfiguredVocabulary,
    default_output_features,
    set_vocabulary,
    train_vocabulary,
)

__all__ = [
    "BatchIterator", "ConfiguredVocabulary", "ConversionStats", "CsvSource", "DataError",
    "DecoderFeatureConverter", "EncDecFeatureConverter", "ExampleStream", "FewShotConfig",
    "FlanTask", "HfTokenizerVocabulary", "IterableSource", "IteratorState", "JsonlSource",
    "MixingSchedule", "ModuloSplit",
    "ReasoningGymSource", "RecordError", "RecordSource", "Template", "TemplateError",
    "TfdsSource", "UnknownNameError", "Variant", "cot_template", "default_output_features",
    "examples_proportional", "flan_task_for", "get_provider", "inverted", "leaf_tasks",
    "make_converter", "mixture", "register_mixture", "registered_flan_tasks", "sample_examples",
    "set_vocabulary", "task", "task_shares", "temperature_scaled", "train_vocabulary",
]
