"""`flantune convert flantune-to-hf`: any flantune checkpoint -> a Hugging Face directory that
`from_pretrained` loads, with the ids the model was trained with, generation_config.json and a
tokenizer that encodes as flantune does.

A training run's MODEL_DIR (or one of its steps) records its model configuration, feature
lengths and vocabulary in config.gin (`flantune.train.run_config`); a parameter checkpoint
(config.json + params/) records only the model, so its vocabulary must be named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import jax
from flax import nnx

from flantune.data.chat.encoding import end_of_turn_id
from flantune.data.chat.templates import (
    TOKENIZER_TEMPLATE,
    ChatTemplate,
    get_chat_template,
    template_from_tokenizer,
)
from flantune.data.errors import DataError
from flantune.data.hf_vocabulary import HfTokenizerVocabulary, is_hf_tokenizer_path
from flantune.data.vocabulary import resolve_vocabulary_path
from flantune.models.build import build_model, model_params
from flantune.models.config import DecoderConfig, ModelConfig
from flantune.models.convert.checkpoint import (
    GENERATION_CONFIG_FILE,
    TokenIds,
    config_token_ids,
    flantune_token_ids,
    save_hf_checkpoint,
)
from flantune.models.convert.errors import CheckpointError
from flantune.models.convert.hf_tokenizer import hf_token_ids, save_hf_tokenizer
from flantune.models.convert.native import load_params
from flantune.models.convert.tokenizer import save_tokenizer
from flantune.peft.config import LoraConfig
from flantune.peft.hf_format import save_peft_adapter
from flantune.peft.lora import merge_lora
from flantune.train import checkpoint_kinds
from flantune.train.adapter_checkpoints import load_base
from flantune.train.adapter_reference import (
    AdapterReference,
    AdapterReferenceError,
    base_fingerprint,
    check_reference,
    read_reference,
)
from flantune.train.checkpoints import CheckpointError as TrainCheckpointError
from flantune.train.checkpoints import load_initial_params, load_step_params
from flantune.train.run_config import RunConfig, RunConfigError, read_run_config
from flantune.train.state import ModelSpec

ROLE = "flantune-to-hf SOURCE"
PREFIX_LM_KEY = "flantune_prefix_lm"


@dataclasses.dataclass
class Export:
    """What an export wrote, and the warnings it printed."""

    config: ModelConfig
    token_ids: TokenIds
    files: list[Path]
    tokenizer_files: list[Path]
    warnings: list[str]


def _demo_vocabulary_path() -> str:
    from flantune.data.vocabulary import demo_vocabulary_path

    return demo_vocabulary_path()


def _run_config(location: checkpoint_kinds.CheckpointLocation) -> RunConfig | None:
    if location.kind == checkpoint_kinds.HUGGING_FACE:
        raise CheckpointError(f"{ROLE} {location.path} is already a Hugging Face checkpoint; "
                              "flantune-to-hf takes a flantune checkpoint "
                              f"({checkpoint_kinds.ACCEPTED})")
    if location.kind == checkpoint_kinds.PARAMS:
        return None
    try:
        return read_run_config(location.run_dir)
    except RunConfigError as err:
        raise CheckpointError(f"{ROLE} {location.path}: {err}") from None


def _load(location: checkpoint_kinds.CheckpointLocation, run: RunConfig | None
          ) -> tuple[ModelConfig, dict]:
    if run is None:
        return load_params(location.path)
    config = run.model
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            model_params(nnx.eval_shape(lambda: build_model(config))))
    try:
        params = load_initial_params(location.path, abstract, role=ROLE)
    except TrainCheckpointError as err:
        raise CheckpointError(str(err)) from None
    return config, jax.tree.map(jax.device_get, params)


def _vocabulary(source: Path, run: RunConfig | None, vocabulary: str | None,
                extra_ids: int | None) -> tuple[str, int]:
    if vocabulary is not None:
        path, ids = resolve_vocabulary_path(vocabulary), extra_ids or 0
    elif run is not None:
        path = resolve_vocabulary_path(run.vocabulary_path or _demo_vocabulary_path())
        ids = run.extra_ids if extra_ids is None else extra_ids
        if is_hf_tokenizer_path(path):
            return path, ids
        if not Path(path).is_file():
            raise CheckpointError(
                f"{run.source} trained with the vocabulary {path}, which does not exist here; "
                "pass --vocabulary PATH (that SentencePiece model) or --no-tokenizer")
    else:
        raise CheckpointError(
            f"{ROLE} {source} is a parameter checkpoint, which records no vocabulary: pass "
            "--vocabulary PATH (the SentencePiece model the model's text is tokenized with) or "
            "--no-tokenizer (then AutoTokenizer cannot load the export)")
    return path, ids


def _prefix_lm_warning(run: RunConfig, force: bool) -> str:
    message = (
        f"the model was trained as a prefix LM ({run.source} gives TASK_FEATURE_LENGTHS "
        f"{run.task_feature_lengths}, with 'inputs'): flantune attends bidirectionally over the "
        f"prompt, but transformers' {run.model.family.capitalize()}ForCausalLM attends causally, "
        "so the export does not reproduce flantune's predictions or scores")
    if not force:
        raise CheckpointError(message + "; pass --force to export it anyway (config.json then "
                              f"says {PREFIX_LM_KEY}=true)")
    return "WARNING: " + message + f" (exported with --force; config.json says {PREFIX_LM_KEY})"


def _adapter(location: checkpoint_kinds.CheckpointLocation) -> AdapterReference | None:
    if location.run_dir is None:
        return None
    try:
        return read_reference(location.run_dir)
    except AdapterReferenceError as err:
        raise CheckpointError(str(err)) from None


def _load_adapter(location: checkpoint_kinds.CheckpointLocation, reference: AdapterReference
                  ) -> tuple[ModelSpec, dict]:
    spec = ModelSpec.from_config(reference.model, reference.adapter)
    try:
        adapter = load_step_params(location.state_path, spec.abstract_trainable(), ROLE)
    except TrainCheckpointError as err:
        raise CheckpointError(str(err)) from None
    return spec, jax.tree.map(jax.device_get, adapter)


def _merged(spec: ModelSpec, adapter: dict, reference: AdapterReference,
            base: str | None) -> dict:
    """The base parameters with the adapter folded in; the base is checked to be the one the
    adapter was trained on."""
    if not isinstance(spec.adapter, LoraConfig):
        raise CheckpointError(f"{ROLE}: a {spec.adapter.kind} adapter adds attention inputs, "
                              "not weight deltas, so it cannot be merged into the base; export "
                              "the adapter (without --merge) and load it with peft")
    base_path = base or reference.base_path
    try:
        frozen = load_base(base_path, spec, role="the adapter's base")
        check_reference(reference, dataclasses.replace(
            reference, base_path=base_path, base_fingerprint=base_fingerprint(frozen)),
            ROLE, resuming=False)
    except (TrainCheckpointError, AdapterReferenceError) as err:
        raise CheckpointError(f"{err} (pass --base PATH to name the base checkpoint)") from None
    return merge_lora(jax.tree.map(jax.device_get, frozen), adapter, spec.config, spec.adapter)


def export_to_hf(source: str | Path, destination: str | Path, *, max_shard_size: int,
                 dtype: str | None = None, vocabulary: str | None = None,
                 extra_ids: int | None = None, tokenizer: bool = True,
                 force: bool = False, merge: bool = False, base: str | None = None) -> Export:
    """Converts the flantune checkpoint at `source` (any kind `locate_checkpoint` accepts,
    except Hugging Face) into a Hugging Face directory at `destination`. An adapter run
    (flantune.peft) is written as a peft adapter directory, or with `merge` as a full model with
    the adapter folded into its base (`base`: default the base the run recorded)."""
    try:
        location = checkpoint_kinds.locate_checkpoint(source, ROLE)
    except checkpoint_kinds.CheckpointKindError as err:
        raise CheckpointError(str(err)) from None
    reference = _adapter(location)
    if (merge or base) and reference is None:
        raise CheckpointError(f"{ROLE} {location.path} is a full model, not an adapter run: "
                              "--merge and --base apply to adapter runs only")
    if reference is not None and not merge:
        return _export_adapter(location, reference, destination, dtype)
    # An adapter run records its model in adapter.json; its config.gin (absent for runs started
    # from Python) only adds the vocabulary and the feature lengths.
    recorded = reference is None or any(
        (location.run_dir / name).exists() for name in ("config.gin", "operative_config.gin"))
    run = _run_config(location) if recorded else None
    warnings, extra_config = [], {}
    if run is not None and run.prefix_lm:
        warnings.append(_prefix_lm_warning(run, force))
        extra_config[PREFIX_LM_KEY] = True
    vocab = _vocabulary(location.path, run, vocabulary, extra_ids) if tokenizer else None
    if reference is not None:
        spec, adapter = _load_adapter(location, reference)
        config, params = spec.config, _merged(spec, adapter, reference, base)
    else:
        config, params = _load(location, run)
    # A run trained with a flantune vocabulary, or one named here: flantune's ids (pad 0, eos 1,
    # sequences start with 0); otherwise the ids of the config.json it was converted from. A
    # Hugging Face tokenizer's ids are its own (see hf_token_ids).
    chat = _chat_template(run)
    hf_vocab = _hf_vocabulary(vocab[0]) if vocab is not None and is_hf_tokenizer_path(
        vocab[0]) else None
    if hf_vocab is not None:
        ids = hf_token_ids(hf_vocab, _stop_id(chat, hf_vocab))
    elif run is not None or vocab is not None:
        ids = flantune_token_ids(config)
    else:
        ids = config_token_ids(config)
    tokenizer_files: list[Path] = []
    final = Path(destination)
    # Everything is written into a staging directory beside the destination and moved into
    # place only when all of it (tokenizer check included) succeeded: no half-written export.
    with _staged(final) as destination:
        files, tokenizer_files = _write(config, params, destination, vocab, run, ids, warnings,
                                        extra_config, max_shard_size, dtype, chat, hf_vocab)
    moved = [final / f.relative_to(destination) for f in files]
    written = [*moved, final / "config.json", final / GENERATION_CONFIG_FILE]
    return Export(config, ids, written, [final / f.relative_to(destination)
                                         for f in tokenizer_files], warnings)


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """An empty staging directory beside `final`, whose contents move into `final` when the
    block succeeds and are removed when it fails: no half-written export."""
    staging = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        os.replace(item, final / item.name)
    staging.rmdir()


def _export_adapter(location: checkpoint_kinds.CheckpointLocation, reference: AdapterReference,
                    destination: str | Path, dtype: str | None) -> Export:
    """A peft adapter directory (adapter_config.json + adapter_model.safetensors) that
    `PeftModel.from_pretrained(base, directory)` loads onto the exported base."""
    spec, adapter = _load_adapter(location, reference)
    final = Path(destination)
    with _staged(final) as staging:
        files = save_peft_adapter(spec.config, spec.adapter, adapter, staging,
                                  base_model_name_or_path=reference.base_path, dtype=dtype)
    note = (f"wrote a peft adapter for the base {reference.base_path}: load it with "
            "PeftModel.from_pretrained(<that base, exported with flantune-to-hf>, "
            f"'{final}'), or pass --merge for one full model")
    return Export(spec.config, flantune_token_ids(spec.config), [final / f.name for f in files],
                  [], [note])


def _chat_template(run: RunConfig | None) -> ChatTemplate | None:
    """The chat template the run chose (None: none named, or the tokenizer's own)."""
    if run is None or run.chat_template in (None, TOKENIZER_TEMPLATE):
        return None
    try:
        return get_chat_template(run.chat_template)
    except DataError as err:
        raise CheckpointError(f"{run.source}: {err}") from None


def _hf_vocabulary(path: str) -> HfTokenizerVocabulary:
    try:
        return HfTokenizerVocabulary(path)
    except DataError as err:
        raise CheckpointError(str(err)) from None


def _stop_id(chat: ChatTemplate | None, vocabulary: HfTokenizerVocabulary) -> int | None:
    if chat is None and vocabulary.chat_template is None:
        return None
    template = chat or template_from_tokenizer(vocabulary)
    try:
        return end_of_turn_id(template, vocabulary)
    except DataError as err:
        raise CheckpointError(str(err)) from None


def _write(config: ModelConfig, params, destination: Path, vocab, run: RunConfig | None, ids,
           warnings: list[str], extra_config: dict, max_shard_size: int, dtype: str | None,
           chat: ChatTemplate | None = None, hf_vocab: HfTokenizerVocabulary | None = None
           ) -> tuple[list[Path], list[Path]]:
    """Writes the tokenizer (checked against flantune's encoding) and the weights into
    `destination`; returns the weight files and the tokenizer files."""
    tokenizer_files: list[Path] = []
    if hf_vocab is not None:
        tokenizer_files = save_hf_tokenizer(
            hf_vocab, destination, vocab_size=config.vocab_size,
            chat_template=None if chat is None else chat.source)
    elif vocab is not None:
        is_decoder = isinstance(config, DecoderConfig)
        tokenizer_files = save_tokenizer(
            vocab[0], destination, extra_ids=vocab[1], add_bos=is_decoder,
            add_eos=not is_decoder or run is None or run.prefix_lm, vocab_size=config.vocab_size)
    else:
        warnings.append("WARNING: no tokenizer written (--no-tokenizer); "
                        "AutoTokenizer.from_pretrained on the export will not give flantune's "
                        "tokenization")
    files = save_hf_checkpoint(config, params, destination, max_shard_size=max_shard_size,
                               dtype=dtype, token_ids=ids, extra_config=extra_config)
    return list(files), list(tokenizer_files)


__all__ = ["Export", "PREFIX_LM_KEY", "export_to_hf"]
