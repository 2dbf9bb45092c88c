"""Malformed inputs across flantune's entry points, each with what a clear error must name.

Every case builds its bad input in a fresh directory and runs the public entry point a user
would. Outcomes: ``clear`` (the expected error, naming everything listed in ``expect``),
``unclear`` (an error that does not say what and where), ``silent`` (no error, or good records
lost). Record-level cases also run under ``on_bad_record="skip"``: the good records around the
bad one must all be kept and the bad one listed with its location.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = Callable[[Path], Any]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    category: str
    run: Run
    expect: tuple[str, ...]  # substrings the error message must contain (what and where)
    skip_check: Callable[[Path], str | None] | None = None  # None if fine, else the problem


@dataclasses.dataclass
class Outcome:
    case: Case
    status: str  # clear / unclear / silent
    detail: str


def _write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _read_all(source) -> list:
    return [source[i] for i in range(len(source))]


# ------------------------------------------------------------------ file and record sources

def _source_case(name: str, category: str, filename: str, content: str | bytes, kind: str,
                 good: int, bad_line: int, expect: tuple[str, ...] = (), **kwargs) -> Case:
    """A file with one bad record among good ones: raise names file:line; skip keeps the
    good ones and lists the bad location."""

    def make(directory: Path, **extra):
        from flantune.data.sources import CsvSource, JsonlSource

        path = _write(directory, filename, content)
        cls = JsonlSource if kind == "jsonl" else CsvSource
        return cls(path, task="robust_task", **kwargs, **extra)

    def run(directory: Path):
        return _read_all(make(directory))

    def skip_check(directory: Path) -> str | None:
        source = make(directory, on_bad_record="skip")
        records = _read_all(source)
        if len(records) != good:
            return f"kept {len(records)} records under skip, expected the {good} good ones"
        if not any(f":{bad_line}" in where for where, _ in source.skipped):
            return f"bad line {bad_line} not listed in skipped {source.skipped}"
        return None

    return Case(name, category, run, (filename + f":{bad_line}", "robust_task", *expect),
                skip_check)


def _jsonl(*lines: Any) -> str:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"


GOOD_ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
GOOD_SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello!"}]}


def source_cases() -> list[Case]:
    cat, conv = "file sources", "conversation records"
    return [
        _source_case("jsonl: invalid JSON line", cat, "a.jsonl",
                     _jsonl(GOOD_ALPACA, '{"instruction": "x", ', GOOD_ALPACA), "jsonl", 2, 2,
                     format="alpaca"),
        _source_case("jsonl: line is an array, not an object", cat, "b.jsonl",
                     _jsonl(GOOD_ALPACA, [1, 2], GOOD_ALPACA), "jsonl", 2, 2, format="alpaca"),
        _source_case("jsonl: required field missing", cat, "c.jsonl",
                     _jsonl(GOOD_ALPACA, {"instruction": "x"}, GOOD_ALPACA), "jsonl", 2, 2,
                     ("output",), format="alpaca"),
        _source_case("jsonl: field of the wrong type", cat, "d.jsonl",
                     _jsonl(GOOD_ALPACA, {"instruction": "x", "output": ["a", "b"]},
                            GOOD_ALPACA), "jsonl", 2, 2, ("output",), format="alpaca"),
        _source_case("jsonl: required field empty", cat, "e.jsonl",
                     _jsonl(GOOD_ALPACA, {"instruction": "x", "output": "  "}, GOOD_ALPACA),
                     "jsonl", 2, 2, ("output",), format="alpaca"),
        _source_case("jsonl: invalid UTF-8 bytes", cat, "f.jsonl",
                     _jsonl(GOOD_ALPACA).encode() + b'{"instruction": "\xff\xfe", "output": "1"}\n'
                     + _jsonl(GOOD_ALPACA).encode(), "jsonl", 2, 2, format="alpaca"),
        _source_case("jsonl: line cut inside a UTF-8 character", cat, "f2.jsonl",
                     _jsonl(GOOD_ALPACA).encode() + '{"instruction": "café'.encode()[:-1]
                     + b"\n" + _jsonl(GOOD_ALPACA).encode(), "jsonl", 2, 2, ("truncated",),
                     format="alpaca"),
        _source_case("jsonl: fields= names a missing raw field", cat, "g.jsonl",
                     _jsonl({"q": "a", "a": "b"}, {"q": "c"}, {"q": "d", "a": "e"}), "jsonl", 2,
                     2, ("'a'",), fields=["q", "a"]),
        _source_case("csv: missing cell in a row", cat, "h.csv",
                     "instruction,output\nAdd,5\nSub\nMul,6\n", "csv", 2, 3, ("header",),
                     format="alpaca"),
        _source_case("csv: row with extra cells", cat, "i.csv",
                     "instruction,output\nAdd,5\nSub,1,extra\nMul,6\n", "csv", 2, 3,
                     format="alpaca"),
        _source_case("csv: undecodable bytes", cat, "j.csv",
                     b"instruction,output\nAdd,5\nS\xffb,1\nMul,6\n", "csv", 2, 3,
                     format="alpaca"),
        _source_case("sharegpt: conversation without an assistant turn", conv, "k.jsonl",
                     _jsonl(GOOD_SHAREGPT, {"conversations": [{"from": "human", "value": "x"}]},
                            GOOD_SHAREGPT), "jsonl", 2, 2, ("assistant",), format="sharegpt"),
        _source_case("sharegpt: unknown role", conv, "l.jsonl",
                     _jsonl(GOOD_SHAREGPT, {"conversations": [{"from": "robot", "value": "x"},
                                                              {"from": "gpt", "value": "y"}]},
                            GOOD_SHAREGPT), "jsonl", 2, 2, ("robot",), format="sharegpt"),
        _source_case("sharegpt: conversations is not a list", conv, "m.jsonl",
                     _jsonl(GOOD_SHAREGPT, {"conversations": "hello"}, GOOD_SHAREGPT), "jsonl",
                     2, 2, ("conversations",), format="sharegpt"),
        _source_case("sharegpt: turn without text", conv, "n.jsonl",
                     _jsonl(GOOD_SHAREGPT, {"conversations": [{"from": "human"},
                                                              {"from": "gpt", "value": "y"}]},
                            GOOD_SHAREGPT), "jsonl", 2, 2, format="sharegpt"),
        _source_case("oasst: message without role", conv, "o.jsonl",
                     _jsonl({"messages": [{"role": "prompter", "text": "a"},
                                          {"role": "assistant", "text": "b"}]},
                            {"messages": [{"text": "a"}, {"role": "assistant", "text": "b"}]}),
                     "jsonl", 1, 2, format="oasst"),
        _source_case("prompt-completion: completion missing", conv, "p.jsonl",
                     _jsonl({"prompt": "a", "completion": "b"}, {"prompt": "c"},
                            {"prompt": "d", "completion": "e"}), "jsonl", 2, 2,
                     ("completion",), format="prompt_completion"),
    ]


def _missing_file(directory: Path):
    from flantune.data.sources import JsonlSource

    return JsonlSource(directory / "nowhere.jsonl", task="robust_task")


def _empty_file(directory: Path):
    from flantune.data.sources import JsonlSource

    return len(JsonlSource(_write(directory, "empty.jsonl", "\n\n"), task="robust_task"))


def _header_only_csv(directory: Path):
    from flantune.data.sources import CsvSource

    return len(CsvSource(_write(directory, "header.csv", "instruction,output\n"),
                         format="alpaca", task="robust_task"))


def file_cases() -> list[Case]:
    cat = "file sources"
    return [
        Case("jsonl: file does not exist", cat, _missing_file, ("nowhere.jsonl",)),
        Case("jsonl: empty file", cat, _empty_file, ("empty.jsonl",)),
        Case("csv: header only, no rows", cat, _header_only_csv, ("header.csv",)),
    ]


# ------------------------------------------------------------------------------- templates

def _render(template_args: dict, record: dict, with_options: bool = False):
    import numpy as np

    from flantune.data.templates import Template, render

    return render(Template(**template_args), record, with_options=with_options,
                  rng=np.random.default_rng(0), task="robust_task")


def template_cases() -> list[Case]:
    cat = "templates"
    record = {"question": "2+2?", "answer": "4"}
    return [
        Case("template names a missing field", cat,
             lambda d: _render({"inputs": "{question} {context}", "targets": "{answer}"},
                               record), ("context", "robust_task")),
        Case("unbalanced brace in a template", cat,
             lambda d: _render({"inputs": "{question", "targets": "{answer}"}, record),
             ("{question", "'}'")),
        Case("options requested but the record has none", cat,
             lambda d: _render({"inputs": "{question}\n{options_}", "targets": "{answer}"},
                               record, with_options=True), ("options", "robust_task")),
        Case("options field is not a list", cat,
             lambda d: _render({"inputs": "{question}\n{options_}", "targets": "{answer}"},
                               {**record, "options": "yes or no"}, with_options=True),
             ("options", "robust_task")),
        Case("targets render to an empty string", cat,
             lambda d: _render({"inputs": "{question}", "targets": "{answer}"},
                               {"question": "q", "answer": ""}), ("empty", "robust_task")),
    ]


# ------------------------------------------------------------------------------- gin and CLI

def _cli(*args: str) -> Callable[[Path], Any]:
    """Runs `flantune ...`; a non-zero exit raises with what it printed to stderr."""

    def run(directory: Path):
        import contextlib
        import io

        from flantune import cli

        err = io.StringIO()
        argv = [a.replace("{dir}", str(directory)) for a in args]
        with contextlib.redirect_stderr(err):
            code = cli.main(argv)
        if code != 0:
            raise RuntimeError(f"exit {code}: {err.getvalue()}")
        return code

    return run


_TRAIN = ("train", "--gin_file=gin_configs/runs/demo.gin", "--gin.MODEL_DIR='{dir}/run'",
          "--gin.TRAIN_STEPS=1")


def gin_cases() -> list[Case]:
    cat = "gin bindings"
    return [
        Case("unknown configurable", cat, _cli(*_TRAIN, "--gin.flantune.NoSuchConfig.x=1"),
             ("NoSuchConfig",)),
        Case("unknown parameter of a configurable", cat,
             _cli(*_TRAIN, "--gin.flantune.OptimizerConfig.learning_rat=0.1"),
             ("learning_rat",)),
        Case("required macro left unbound", cat,
             _cli("train", "--gin_file=gin_configs/models/t5_1_1_tiny.gin",
                  "--gin_file=gin_configs/runs/finetune.gin", "--gin.MODEL_DIR='{dir}/run'"),
             ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS")),
        Case("macro of the wrong type", cat, _cli(*_TRAIN[:-1], "--gin.TRAIN_STEPS='many'"),
             ("TRAIN_STEPS", "many")),
        Case("gin file not found", cat, _cli("train", "--gin_file=gin_configs/runs/nope.gin"),
             ("nope.gin",)),
        Case("binding without '='", cat, _cli(*_TRAIN, "--gin.TRAIN_STEPS"),
             ("--gin.TRAIN_STEPS",)),
        Case("gin syntax error", cat, _cli(*_TRAIN, "--gin.BATCH_SIZE=(8"), ("BATCH_SIZE",)),
        Case("unknown task or mixture name", cat,
             _cli(*_TRAIN, "--gin.MIXTURE_OR_TASK_NAME='demo_typo'"), ("demo_typo",)),
        Case("optimizer name misspelled", cat,
             _cli(*_TRAIN, "--gin.flantune.OptimizerConfig.name='adamm'"), ("adamm",)),
        Case("t5x setting flantune does not honour", cat, _cli(*_TRAIN, "--gin.EVAL_STEPS=20"),
             ("EVAL_STEPS", "EVALUATOR_NUM_EXAMPLES")),
        Case("t5x's RANDOM_SEED = None", cat, _cli(*_TRAIN, "--gin.RANDOM_SEED=None"),
             ("RANDOM_SEED", "integer")),
        Case("run gin without the run include", cat, _without_run_include,
             ("gin_configs/runs/finetune.gin", "run.gin")),
        Case("MODEL_DIR under a regular file", cat, _model_dir_under_a_file,
             ("is not writable", "file.txt")),
    ]


def _without_run_include(directory: Path):
    run = _write(directory, "run.gin", "include 'gin_configs/models/t5_1_1_tiny.gin'\n"
                 f"MODEL_DIR = '{directory}/run'\nMIXTURE_OR_TASK_NAME = 'demo'\n"
                 "TRAIN_STEPS = 3\nTASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n")
    return _cli("train", f"--gin_file={run}")(directory)


def _model_dir_under_a_file(directory: Path):
    _write(directory, "file.txt", "not a directory")
    return _cli(*_TRAIN[:2], "--gin.MODEL_DIR='{dir}/file.txt/run'")(directory)


# ------------------------------------------------------------------------------- vocabulary

def _vocabulary(path_fn: Callable[[Path], str]) -> Run:
    def run(directory: Path):
        from flantune.data.vocabulary import set_vocabulary

        try:
            set_vocabulary(path_fn(directory))
        finally:
            set_vocabulary(None)

    return run


def vocabulary_cases() -> list[Case]:
    cat = "vocabulary files"
    return [
        Case("vocabulary file missing", cat, _vocabulary(lambda d: str(d / "missing.model")),
             ("missing.model",)),
        Case("not a SentencePiece model", cat,
             _vocabulary(lambda d: str(_write(d, "words.txt", "hello\nworld\n"))),
             ("words.txt",)),
        Case("vocabulary larger than the model's embedding", cat,
             _cli(*_TRAIN, "--gin.T5Config.vocab_size=100"), ("vocab_size 100",)),
    ]


# ------------------------------------------------------------------------------- checkpoints

_CHECKPOINT_MODEL = None


def _saved_run(directory: Path) -> Path:
    """A tiny trained run with checkpoints at steps 1 and 2."""
    from flantune.models import T5Config
    from flantune.train.checkpoints import CheckpointConfig
    from flantune.train.loop import TrainConfig, train

    model_dir = directory / "run"
    model = T5Config(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                     num_encoder_layers=1, num_decoder_layers=1)
    train(TrainConfig(model_dir=str(model_dir), mixture_or_task_name="rg_gcd",
                      task_feature_lengths={"inputs": 32, "targets": 8}, train_steps=2,
                      batch_size=2, model=model, window=16, progress=False,
                      checkpoint=CheckpointConfig(save_interval_steps=1, async_save=False)))
    return model_dir


def _resume(model_dir: Path, checkpoint=None, **model_changes):
    import dataclasses as dc

    from flantune.models import T5Config
    from flantune.train.checkpoints import CheckpointConfig
    from flantune.train.loop import TrainConfig, train

    model = dc.replace(T5Config(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8,
                                mlp_dim=32, num_encoder_layers=1, num_decoder_layers=1),
                       **model_changes)
    return train(TrainConfig(model_dir=str(model_dir), mixture_or_task_name="rg_gcd",
                             task_feature_lengths={"inputs": 32, "targets": 8}, train_steps=3,
                             batch_size=2, model=model, window=16, progress=False,
                             log_every_steps=1,
                             checkpoint=checkpoint or CheckpointConfig(save_interval_steps=1)))


def _damage(how: str) -> Run:
    def run(directory: Path):
        model_dir = _saved_run(directory)
        files = sorted(p for p in (model_dir / "2").rglob("*") if p.is_file()
                       and p.stat().st_size > 64 and "state" in p.parts)
        target = max(files, key=lambda p: p.stat().st_size)
        data = target.read_bytes()
        if how == "missing":
            target.unlink()
        elif how == "flipped":
            middle = len(data) // 2
            target.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64])
                               + data[middle + 64:])
        else:
            target.write_bytes(data[: len(data) // 3])
        return _resume(model_dir)

    return run


def _fall_back(directory: Path):
    """With fall_back_to_previous, a damaged latest step is reported and the run resumes from
    the step before; the case 'fails' with what it observed so the verdict can check it."""
    import logging

    from flantune.train.checkpoints import CheckpointConfig

    model_dir = _saved_run(directory)
    target = max((p for p in (model_dir / "2").rglob("*") if p.is_file() and "state" in p.parts),
                 key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[:100])
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("flantune.train.checkpoints").addHandler(handler)
    try:
        result = _resume(model_dir, checkpoint=CheckpointConfig(save_interval_steps=1,
                                                                 fall_back_to_previous=True))
    finally:
        logging.getLogger("flantune.train.checkpoints").removeHandler(handler)
    named = any("step 2" in w and "run/2" in w for w in warnings)
    first = min(result.losses) if result.losses else None
    raise RuntimeError(f"resumed at step {first - 1 if first else '?'}; damaged step named in a "
                       f"warning: {named}" + ("" if named else " (NOT NAMED)"))


def _wrong_shape(directory: Path):
    return _resume(_saved_run(directory), emb_dim=24)


def _initial_from_other_model(directory: Path):
    from flantune.models import T5Config
    from flantune.train.checkpoints import load_initial_params
    from flantune.train.state import ModelSpec

    model_dir = _saved_run(directory)
    spec = ModelSpec.from_config(T5Config(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8,
                                          mlp_dim=48, num_encoder_layers=1,
                                          num_decoder_layers=1))
    return load_initial_params(model_dir, spec.abstract_params())


def _initial_missing(directory: Path):
    from flantune.train.checkpoints import load_initial_params

    return load_initial_params(directory / "no_checkpoint_here", {})


def _initial_not_a_checkpoint(directory: Path):
    from flantune.train.checkpoints import load_initial_params

    (directory / "stuff").mkdir()
    _write(directory / "stuff", "notes.txt", "nothing")
    return load_initial_params(directory / "stuff", {})


def checkpoint_cases() -> list[Case]:
    cat = "checkpoints"
    return [
        Case("checkpoint file missing", cat, _damage("missing"), ("step 2", "run/2")),
        Case("checkpoint bytes flipped", cat, _damage("flipped"), ("step 2", "run/2")),
        Case("checkpoint file truncated", cat, _damage("truncated"), ("step 2", "run/2")),
        Case("damaged latest step, fall back to the previous one", cat, _fall_back,
             ("resumed at step 1",)),
        Case("resume with a different model shape", cat, _wrong_shape,
             ("step 2", "stored shape (16,), expected (24,)")),
        Case("initial checkpoint of another model", cat, _initial_from_other_model,
             ("mlp", "32", "48")),
        Case("initial checkpoint path missing", cat, _initial_missing, ("no_checkpoint_here",)),
        Case("initial checkpoint is not a checkpoint", cat, _initial_not_a_checkpoint,
             ("stuff",)),
    ]


# ---------------------------------------------------------------------------------- adapters

_ADAPTER_MODEL_FIELDS = dict(vocab_size=8000, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                             num_encoder_layers=1, num_decoder_layers=1)


def _adapter_run(model_dir: Path, base: Path | None, adapter=None):
    from flantune.models import T5Config
    from flantune.peft import LoraConfig
    from flantune.train.checkpoints import CheckpointConfig
    from flantune.train.loop import TrainConfig, train

    return train(TrainConfig(
        model_dir=str(model_dir), mixture_or_task_name="rg_gcd",
        task_feature_lengths={"inputs": 32, "targets": 8}, train_steps=2, batch_size=2,
        model=T5Config(**_ADAPTER_MODEL_FIELDS), window=16, progress=False,
        initial_checkpoint_path=None if base is None else str(base),
        adapter=adapter or LoraConfig(r=2),
        checkpoint=CheckpointConfig(save_interval_steps=1, async_save=False)))


def _adapter_on_another_base(directory: Path):
    base = _saved_run(directory)
    _adapter_run(directory / "lora", base)
    return _adapter_run(directory / "lora", None)  # now the random initialisation


def _damaged_adapter_reference(directory: Path):
    _adapter_run(directory / "lora", None)
    _write(directory / "lora", "adapter.json", "{not json")
    return _adapter_run(directory / "lora", None)


def _peft_adapter(directory: Path, **changes) -> Path:
    """A peft LoRA directory for the tiny T5, its adapter_config.json edited by `changes`."""
    import jax
    import numpy as np
    from flax import nnx

    from flantune.models import T5Config
    from flantune.models.build import model_params
    from flantune.peft import LoraConfig, build_adapted_model
    from flantune.peft.adapted import adapter_paths, split_params
    from flantune.peft.hf_format import save_peft_adapter

    config, lora = T5Config(**_ADAPTER_MODEL_FIELDS), LoraConfig(r=4)
    model = build_adapted_model(config, lora, nnx.Rngs(0))
    adapter, _ = split_params(model_params(model), adapter_paths(nnx.state(model, nnx.Param)))
    target = directory / "peft_adapter"
    save_peft_adapter(config, lora, jax.tree.map(np.asarray, adapter), target)
    settings = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**settings, **changes}))
    return target


def _load_peft(directory: Path, **changes):
    from flantune.models import T5Config
    from flantune.peft.hf_format import load_peft_adapter

    return load_peft_adapter(_peft_adapter(directory, **changes),
                             T5Config(**_ADAPTER_MODEL_FIELDS))


def _full_run_as_adapter(directory: Path):
    from flantune.models import T5Config
    from flantune.train.adapter_checkpoints import locate_adapter

    return locate_adapter(_saved_run(directory), T5Config(**_ADAPTER_MODEL_FIELDS))


def _target_matching_nothing(directory: Path):
    from flantune.models import T5Config
    from flantune.peft import LoraConfig
    from flantune.train.state import ModelSpec

    return ModelSpec.from_config(T5Config(**_ADAPTER_MODEL_FIELDS),
                                 LoraConfig(target_modules=("q", "qv_proj")))


def adapter_cases() -> list[Case]:
    cat = "adapters"
    return [
        Case("adapter run resumed on another base", cat, _adapter_on_another_base,
             ("lora", "the base parameters differ", "run")),
        Case("adapter.json damaged", cat, _damaged_adapter_reference,
             ("adapter.json", "damaged")),
        Case("peft adapter of another rank", cat, lambda d: _load_peft(d, r=2),
             ("adapter_model.safetensors", "expected shape (2, 16)")),
        Case("peft adapter with an option flantune does not compute", cat,
             lambda d: _load_peft(d, use_dora=True), ("adapter_config.json", "use_dora")),
        Case("full checkpoint given as ADAPTER_PATH", cat, _full_run_as_adapter,
             ("ADAPTER_PATH", "run", "full model checkpoint")),
        Case("LoRA target that matches no projection", cat, _target_matching_nothing,
             ("qv_proj", "'query'")),
    ]


# ------------------------------------------------------------------------------------- chat

GOOD_MESSAGES = {"messages": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello!"}]}


def _chat_task(directory: Path, name: str, records: list, template="llama2", **options):
    """A chat task over `records` (JSONL, format 'messages') with the demo chat tokenizer."""
    from flantune.data.chat import chat_task
    from flantune.data.hf_vocabulary import HfTokenizerVocabulary
    from flantune.data.sources import JsonlSource
    from flantune.data.vocabulary import demo_chat_tokenizer_path

    path = _write(directory, f"{name}.jsonl", _jsonl(*records))
    vocabulary = options.pop("vocabulary", None) or HfTokenizerVocabulary(
        demo_chat_tokenizer_path())
    return chat_task(name, template=template, vocabulary=vocabulary, splits=("train",),
                     **options)(lambda split: JsonlSource(path, format="messages", task=name))


def _read_chat(task, count: int):
    from flantune.data.stream import task_examples

    return task_examples(task.name, "train", seed=0).get_many(range(count))


def _nothing_to_train(directory: Path):
    from flantune.data.chat import ChatTemplate

    users_only = ChatTemplate("users_only", "{% for m in messages %}{% if m['role'] == 'user' "
                                            "%}{{ m['content'] }}{% endif %}{% endfor %}")
    task = _chat_task(directory, "robust_chat_empty", [GOOD_MESSAGES] * 3, template=users_only)
    return _read_chat(task, 3)


def _template_tokens_missing(directory: Path):
    from flantune.data.hf_tokenizer_training import BASE_SPECIAL_TOKENS, train_hf_tokenizer
    from flantune.data.hf_vocabulary import HfTokenizerVocabulary

    tokenizer = train_hf_tokenizer(["some text to train on"] * 20, directory / "tok",
                                   vocab_size=300, special_tokens=BASE_SPECIAL_TOKENS)
    task = _chat_task(directory, "robust_chat_chatml", [GOOD_MESSAGES], template="chatml",
                      vocabulary=HfTokenizerVocabulary(tokenizer))
    return _read_chat(task, 1)


def _system_without_role(directory: Path):
    with_system = {"messages": [{"role": "system", "content": "Be brief."},
                                *GOOD_MESSAGES["messages"]]}
    task = _chat_task(directory, "robust_chat_system", [GOOD_MESSAGES, with_system],
                      template="mistral_legacy")
    return _read_chat(task, 2)


def _text_id_zero(directory: Path):
    from flantune.data.hf_tokenizer_training import train_hf_tokenizer
    from flantune.data.vocabulary import set_vocabulary

    path = train_hf_tokenizer(["abc def"] * 20, directory / "tok", vocab_size=280)
    data = json.loads((directory / "tok" / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    byte = next(t for t, i in vocab.items() if i == len(data["added_tokens"]))
    vocab[byte], vocab["<pad>"] = 0, vocab[byte]
    data["added_tokens"][0]["id"] = vocab["<pad>"]
    (directory / "tok" / "tokenizer.json").write_text(json.dumps(data))
    try:
        set_vocabulary(path)
    finally:
        set_vocabulary(None)


def chat_cases() -> list[Case]:
    cat = "chat"
    bad_turns = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    return [
        _source_case("messages: two user turns in a row", cat, "q.jsonl",
                     _jsonl(GOOD_MESSAGES, bad_turns, GOOD_MESSAGES), "jsonl", 2, 2,
                     ("message 2", "alternate"), format="messages"),
        _source_case("messages: no assistant turn", cat, "r.jsonl",
                     _jsonl(GOOD_MESSAGES, {"messages": [{"role": "user", "content": "a"}]},
                            GOOD_MESSAGES), "jsonl", 2, 2, ("no assistant turn",),
                     format="messages"),
        Case("conversation with no token to train", cat, _nothing_to_train,
             ("robust_chat_empty", "robust_chat_empty.jsonl:", "no token to train on")),
        Case("unknown chat template", cat,
             lambda d: _chat_task(d, "robust_chat_unknown", [GOOD_MESSAGES], template="llama9"),
             ("llama9", "llama2", "chatml")),
        Case("unknown chat template in gin", cat,
             _cli(*_TRAIN, "--gin.flantune.chat_template.name='llama9'"), ("llama9", "llama3")),
        Case("template tokens the tokenizer lacks", cat, _template_tokens_missing,
             ("chatml", "<|im_start|>", "robust_chat_chatml.jsonl:1")),
        Case("system message for a template without a system role", cat,
             _system_without_role, ("mistral_legacy", "no system role",
                                    "robust_chat_system.jsonl:2")),
        Case("tokenizer whose id 0 is ordinary text", cat, _text_id_zero,
             ("tokenizer.json", "id 0 is the ordinary token", "pads")),
    ]


# ------------------------------------------------------------------------------- preference

GOOD_PAIR = {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}


def _damaged_objective_record(directory: Path):
    from flantune.preference.reference import check_or_write_record

    (directory / "objective.json").write_text('{"format": 1, "preference": {')
    check_or_write_record(str(directory), {"preference": {}, "reference": {}}, resuming=True)


def _damaged_reference_cache(directory: Path):
    from flantune.preference.reference import ReferenceCache

    cache = ReferenceCache(str(directory), key="k")
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(b"PK\x03\x04 not a zip archive")
    cache.load()


def _instruction_task_in_a_preference_run(directory: Path):
    import flantune.tasks  # noqa: F401  (registers the demo tasks)
    from flantune.preference import PreferenceObjective

    PreferenceObjective().converter("decoder", pack=True, mixture_or_task="chat_alpaca")


def preference_cases() -> list[Case]:
    cat = "preference"
    return [
        _source_case("pair: chosen and rejected identical", cat, "s.jsonl",
                     _jsonl(GOOD_PAIR, {**GOOD_PAIR, "rejected": " 4"}, GOOD_PAIR), "jsonl", 2,
                     2, ("identical",), format="preference"),
        _source_case("pair: empty completion", cat, "t.jsonl",
                     _jsonl(GOOD_PAIR, {**GOOD_PAIR, "chosen": " "}, GOOD_PAIR), "jsonl", 2, 2,
                     ("chosen completion is empty",), format="preference"),
        _source_case("pair: completions of different kinds", cat, "u.jsonl",
                     _jsonl(GOOD_PAIR, {**GOOD_PAIR, "chosen": [{"role": "assistant",
                                                                 "content": "4"}]}, GOOD_PAIR),
                     "jsonl", 2, 2, ("both be strings or both be message lists",),
                     format="preference"),
        _source_case("hh transcript without turns", cat, "v.jsonl",
                     _jsonl({"chosen": "\n\nHuman: a\n\nAssistant: b",
                             "rejected": "\n\nHuman: a\n\nAssistant: c"},
                            {"chosen": "no turns here", "rejected": "none"},
                            {"chosen": "\n\nHuman: a\n\nAssistant: b",
                             "rejected": "\n\nHuman: a\n\nAssistant: d"}),
                     "jsonl", 2, 2, ("'chosen' must start with",), format="hh_preference"),
        Case("damaged objective.json on resume", cat, _damaged_objective_record,
             ("objective.json", "damaged", "restore it")),
        Case("damaged reference log-prob cache", cat, _damaged_reference_cache,
             ("process_0.npz", "damaged", "delete", "reference_logps")),
        Case("instruction task in a preference run", cat, _instruction_task_in_a_preference_run,
             ("chat_alpaca", "not preference tasks", "@flantune.preference_task")),
    ]


def all_cases() -> list[Case]:
    return [*source_cases(), *file_cases(), *template_cases(), *gin_cases(),
            *vocabulary_cases(), *checkpoint_cases(), *adapter_cases(), *chat_cases(),
            *preference_cases()]


def run_case(case: Case, directory: Path) -> Outcome:
    """Runs one case in `directory` (which must be empty) and classifies what happened."""
    cwd = os.getcwd()
    try:
        case.run(directory)
    except BaseException as err:  # noqa: BLE001 - any exception is data for the verdict
        if isinstance(err, KeyboardInterrupt):
            raise
        message = str(err)
        missing = [e for e in case.expect if e not in message]
        if missing:
            return Outcome(case, "unclear", f"{type(err).__name__}: {message[:300]} "
                                            f"(does not mention {missing})")
        if case.skip_check is not None:
            for path in list(directory.iterdir()):
                if path.is_file():
                    path.unlink()
            problem = case.skip_check(directory)
            if problem:
                return Outcome(case, "silent", problem)
        return Outcome(case, "clear", f"{type(err).__name__}: {message[:200]}")
    finally:
        os.chdir(cwd)
    return Outcome(case, "silent", "no error was raised")
