"""Held-out task evaluation: predict (decode) or rank answer options, postprocess, and score
with each SeqIO task's own ``postprocess_fn`` and metric functions.

SeqIO's ``Evaluator`` drives a tf.data pipeline with its own feature converter and caches
tokenized datasets; here the same task functions are applied directly to examples rendered by
index (which keeps each raw record for scorers such as reasoning-gym's ``score_answer``) and
batched in fixed shapes so one compiled decode program serves every task. Each task is
evaluated on its own: a task that fails is reported by name and the others are still scored.
"""

from __future__ import annotations

import dataclasses
import functools
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio
from jax.sharding import Mesh

import flantune.partitioning as partitioning
from flantune.data.tasks import flan_task_for
from flantune.data.vocabulary import DEFAULT_VOCABULARY
from flantune.decoding import DecodeConfig
from flantune.evaluation.examples import (
    EvalExample,
    TaskEvalError,
    encode,
    load_examples,
    task_names,
)
from flantune.evaluation.predict import Predictor
from flantune.evaluation.results import EvalResults, TaskResult
from flantune.evaluation.scoring import Scorer
from flantune.train.state import ModelSpec

PyTree = Any
OPTIONS_SCORING = ("rank", "generate")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    `mixture_or_task_name`: a task, a mixture (its leaf tasks) or a list of them; None turns
    evaluation off. `variants`: for flantune tasks, evaluate these variants of each task instead
    (e.g. ``("zsnoopt", "fsnoopt")`` for zero- and few-shot). `options_scoring`: tasks whose
    examples carry answer options are scored by rank classification (``"rank"``, FLAN's way) or
    by decoding (``"generate"``). `every_steps`: during training, evaluate every N steps (0: only
    after the last step). `task_feature_lengths`: default, the run's.
    """

    mixture_or_task_name: str | tuple[str, ...] | None = None
    split: str = "validation"
    max_examples_per_task: int | None = 100
    batch_size: int = 16
    every_steps: int = 0
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    options_scoring: str = "rank"
    variants: tuple[str, ...] = ()
    task_feature_lengths: Mapping[str, int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.options_scoring not in OPTIONS_SCORING:
            raise ValueError(f"EvalConfig.options_scoring={self.options_scoring!r}: choose one "
                             f"of {OPTIONS_SCORING}.")
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size={self.batch_size} must be >= 1.")
        if self.every_steps < 0:
            raise ValueError(f"EvalConfig.every_steps={self.every_steps} must be >= 0.")
        if self.max_examples_per_task is not None and self.max_examples_per_task < 1:
            raise ValueError(f"EvalConfig.max_examples_per_task={self.max_examples_per_task} "
                             "must be >= 1 or None (all).")

    @property
    def enabled(self) -> bool:
        return bool(self.mixture_or_task_name)


def resolve_tasks(config: EvalConfig) -> list[str]:
    """The seqio task names ``config`` evaluates (raises TaskEvalError for unknown names)."""
    names = task_names(config.mixture_or_task_name)
    if not config.variants:
        return names
    out: list[str] = []
    for name in names:
        flan = flan_task_for(name)
        if flan is None:
            out += [name] if name not in out else []
            continue
        flan_task = flan[0]
        chosen = [flan_task.task_name(v) for v in flan_task.variants
                  if v.suffix in config.variants]
        if not chosen:
            raise TaskEvalError(name, f"has none of the variants {list(config.variants)} (it "
                                      f"has {[v.suffix for v in flan_task.variants]}).")
        out += [c for c in chosen if c not in out]
    return out


class Evaluator:
    """Evaluates parameters on a fixed list of tasks; compiled programs and rendered examples
    are built once and reused at every call."""

    def __init__(self, spec: ModelSpec, config: EvalConfig,
                 task_feature_lengths: Mapping[str, int], *, mesh: Mesh | None = None,
                 rules: partitioning.LogicalAxisRules | None = None,
                 param_shardings: PyTree | None = None):
        self.spec, self.config = spec, config
        self.lengths = dict(config.task_feature_lengths or task_feature_lengths)
        self.tasks = resolve_tasks(config)
        self._param_shardings = param_shardings
        self._examples: dict[str, list[EvalExample] | Exception] = {}
        self._mesh, self._rules = mesh, rules
        self._chat_predictors: dict[tuple[int, int, int], Predictor] = {}
        self._predictors: dict[int, Predictor] = {}

    def examples(self, task: str) -> list[EvalExample]:
        if task not in self._examples:
            try:
                self._examples[task] = load_examples(task, self.config.split,
                                                     self.config.max_examples_per_task)
            except Exception as err:  # noqa: BLE001 - reported per task, others go on
                self._examples[task] = err
        cached = self._examples[task]
        if isinstance(cached, Exception):
            raise cached
        return cached

    def evaluate(self, params: PyTree, step: int | None = None, *, compute_metrics: bool = True,
                 on_task: Callable[[TaskResult], None] | None = None) -> EvalResults:
        """Every task's metrics (and predictions); failures are recorded per task."""
        results: dict[str, TaskResult] = {}
        rng = jax.random.key(self.config.seed)
        for index, task in enumerate(self.tasks):
            result = TaskResult(task=task)
            try:
                self._evaluate_task(params, task, result, jax.random.fold_in(rng, index),
                                    compute_metrics)
            except Exception as err:  # noqa: BLE001 - one task's failure must not lose others
                result.errors.append(_describe(task, err))
            results[task] = result
            if on_task is not None:
                on_task(result)
        return EvalResults(step=step, split=self.config.split, tasks=results)

    # -- one task --------------------------------------------------------------------------
    def _evaluate_task(self, params: PyTree, task_name: str, result: TaskResult,
                       rng: jax.Array, compute_metrics: bool) -> None:
        task = seqio.get_mixture_or_task(task_name)
        examples = self.examples(task_name)
        if not examples:
            raise TaskEvalError(task_name, f"split '{self.config.split}' has no examples.")
        result.num_examples = len(examples)
        _check_token_ids(task_name, examples, self.spec.config.vocab_size)
        vocabulary = task.output_features["targets"].vocabulary
        rank = self.config.options_scoring == "rank" and all(ex.options for ex in examples)
        if rank:
            result.method = "rank"
            texts, scores, option_scores = self._rank(params, task, examples)
        else:
            result.method = "generate"
            chat = examples[0].stop_id is not None
            predictor = (self._chat_predictor(examples) if chat
                         else self.predictor(vocabulary.eos_id))
            predictions = predictor(params, [ex.input_tokens for ex in examples], rng)
            texts = [vocabulary.decode(p.tokens.tolist()) for p in predictions]
            if chat:  # the templates strip an assistant message's surrounding spaces
                texts = [t.strip() for t in texts]
            scores, option_scores = [p.score for p in predictions], None
        empty = sum(not t.strip() for t in texts)
        if empty:
            result.warnings.append(f"{empty} of {len(texts)} predictions are empty.")
        result.predictions = [
            {"index": ex.index, "inputs": ex.inputs, "targets": ex.targets, "prediction": text,
             "score": float(score),
             **({"options": list(ex.options), "option_scores": [float(s) for s in opts]}
                if option_scores is not None else {})}
            for ex, text, score, opts in zip(examples, texts, scores,
                                             option_scores or [None] * len(examples),
                                             strict=True)]
        if compute_metrics:
            self._metrics(params, task, examples, texts, result)

    def predictor(self, eos_id: int | None = None) -> Predictor:
        """Decodes templated tasks' inputs, stopping at `eos_id` (the task vocabulary's EOS;
        built when first needed: a run of chat tasks only has no 'inputs' length)."""
        decode = self.config.decode
        if eos_id is not None and eos_id != decode.eos_id:
            self._check_stop(eos_id, "the task vocabulary's EOS id")
            decode = dataclasses.replace(decode, eos_id=eos_id)
        if decode.eos_id not in self._predictors:
            self._predictors[decode.eos_id] = Predictor(
                self.spec, decode, self.lengths, self.config.batch_size, self._mesh,
                self._rules)
        return self._predictors[decode.eos_id]

    def _check_stop(self, stop_id: int, what: str) -> None:
        """Evaluation stops where the task's examples end (`stop_id`); a DecodeConfig.eos_id
        bound to another id would be ignored, so it is an error."""
        configured = self.config.decode.eos_id
        if configured != DecodeConfig().eos_id:
            raise ValueError(f"DecodeConfig.eos_id={configured} differs from {what} {stop_id}, "
                             "where the task's examples end; drop the binding (evaluation "
                             "stops there).")

    @functools.cached_property
    def scorer(self) -> Scorer:
        eos = DEFAULT_VOCABULARY.eos_id  # the configured vocabulary's (tasks use it)
        return Scorer(self.spec, self.lengths, self.config.batch_size, self._mesh, self._rules,
                      self._param_shardings, eos_id=1 if eos is None else eos)

    def _chat_predictor(self, examples: Sequence[EvalExample]) -> Predictor:
        """A predictor for chat prompts: as long as the longest prompt (in steps of 64), and up
        to twice the longest reference answer (in steps of 32, within the targets length)."""
        prompt = -(-max(ex.input_tokens.size for ex in examples) // 64) * 64
        answer = min(-(-2 * max(ex.target_tokens.size for ex in examples) // 32) * 32,
                     int(self.lengths["targets"]))
        key = (prompt, answer, int(examples[0].stop_id))
        if key[2] != self.config.decode.eos_id:
            self._check_stop(key[2], "the chat template's end-of-turn id")
        if key not in self._chat_predictors:
            self._chat_predictors[key] = Predictor(
                self.spec, self.config.decode, {"inputs": prompt, "targets": answer},
                self.config.batch_size, self._mesh, self._rules, chat_stop_id=key[2])
        return self._chat_predictors[key]

    def _rank(self, params: PyTree, task: seqio.Task, examples: Sequence[EvalExample]
              ) -> tuple[list[str], list[float], list[list[float]]]:
        """Rank classification: every option scored as the target of the same inputs; the
        prediction is the most likely option (the first one on ties)."""
        feature = task.output_features["targets"]
        pairs = [(ex.input_tokens, encode(feature.vocabulary, option, feature.add_eos))
                 for ex in examples for option in ex.options]
        flat = self.scorer(params, pairs)
        texts, best, per_example, start = [], [], [], 0
        for ex in examples:
            scores = flat[start:start + len(ex.options)]
            start += len(ex.options)
            choice = int(np.argmax(scores))
            texts.append(ex.options[choice])
            best.append(float(scores[choice]))
            per_example.append([float(s) for s in scores])
        return texts, best, per_example

    def _metrics(self, params: PyTree, task: seqio.Task, examples: Sequence[EvalExample],
                 texts: Sequence[str], result: TaskResult) -> None:
        features = [ex.features() for ex in examples]
        try:
            targets = [task.postprocess_fn(ex.targets, example=f, is_target=True)
                       for ex, f in zip(examples, features, strict=True)]
            predictions = [task.postprocess_fn(text, example=f, is_target=False)
                           for text, f in zip(texts, features, strict=True)]
        except Exception as err:  # noqa: BLE001
            raise TaskEvalError(task.name, f"postprocess_fn "
                                           f"{_name(task._postprocess_fn)} raised "
                                           f"{type(err).__name__}: {err}") from err
        calls: list[tuple[Callable, tuple]] = [(fn, (targets, predictions))
                                               for fn in task.predict_metric_fns]
        if task.score_metric_fns and examples[0].stop_id is not None:
            raise TaskEvalError(task.name, "score metrics need target log-likelihoods, which "
                                           "flantune's scorer computes for templated tasks only; "
                                           "give the chat task predict metrics instead")
        if task.score_metric_fns:
            target_scores = self.scorer(params, [(ex.input_tokens, ex.target_tokens)
                                                 for ex in examples])
            calls += [(fn, (targets, target_scores)) for fn in task.score_metric_fns]
        if task.predict_with_aux_metric_fns:
            aux = {"scores": [p["score"] for p in result.predictions]}
            calls += [(fn, (targets, predictions, aux)) for fn in task.predict_with_aux_metric_fns]
        if not calls:
            result.warnings.append("the task has no metric functions; only predictions kept.")
        for fn, args in calls:
            try:
                values = fn(*args)
                result.metrics.update({str(k): _scalar(v) for k, v in values.items()})
            except Exception as err:  # noqa: BLE001 - the task's other metrics still count
                result.errors.append(f"task '{task.name}': metric {_name(fn)} raised "
                                     f"{type(err).__name__}: {err}")


def _name(fn: Callable | None) -> str:
    return getattr(fn, "__name__", repr(fn))


def _scalar(value: Any) -> float:
    value = getattr(value, "value", value)  # seqio.metrics.Scalar
    return float(np.asarray(value))


def _describe(task: str, err: Exception) -> str:
    if isinstance(err, TaskEvalError):
        return str(err)
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    location = f" (at {where.filename}:{where.lineno})" if where else ""
    return f"task '{task}': {type(err).__name__}: {err}{location}"


def _check_token_ids(task_name: str, examples: Sequence[EvalExample], vocab_size: int) -> None:
    """A task tokenized with another vocabulary than the model's cannot be evaluated."""
    ids = [t for ex in examples for t in (ex.input_tokens, ex.target_tokens) if len(t)]
    top = max((int(np.max(t)) for t in ids), default=0)
    if top >= vocab_size:
        raise TaskEvalError(task_name, f"token id {top} is outside the model's vocabulary "
                                       f"[0, {vocab_size}): the task was tokenized with another "
                                       "vocabulary than the model's (flantune.vocabulary.path).")
