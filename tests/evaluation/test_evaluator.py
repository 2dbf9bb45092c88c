"""The evaluator: metrics through each task's postprocess and metric functions, rank
classification, and failures reported per task without losing the others."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import flantune
import tests.task_fixtures  # noqa: F401
from flantune.data import Template
from flantune.decoding import DecodeConfig
from flantune.evaluation import EvalConfig, Evaluator, TaskEvalError, load_examples
from flantune.evaluation.examples import EvalExample
from flantune.evaluation.results import EvalResults, TaskResult
from flantune.metrics import exact_match
from flantune.train.state import ModelSpec
from tests.evaluation.test_scoring import T5

T5_8K = T5.__class__(**{**T5.__dict__, "vocab_size": 8000})
LENGTHS = {"inputs": 64, "targets": 12}


def _train_only(split):
    return [{"q": f"q{i}", "a": f"a{i}"} for i in range(5)]


flantune.task("test_eval_train_only", templates=[Template("{q}", "{a}")], splits=("train",),
              few_shot=None)(_train_only)


def _raising_metric(targets, predictions):
    raise RuntimeError("metric exploded")


def _two_splits(split):
    return [{"q": f"question {i}", "a": f"answer {i}"} for i in range(4)]


flantune.task("test_eval_bad_metric", templates=[Template("{q}", "{a}")], few_shot=None,
              metric_fns=[_raising_metric, exact_match])(_two_splits)


@pytest.fixture(scope="module")
def model():
    spec = ModelSpec.from_config(T5_8K)
    return spec, spec.init_params(jax.random.key(0))


def _evaluator(spec, tasks, **overrides) -> Evaluator:
    config = EvalConfig(tasks, max_examples_per_task=6, batch_size=4,
                        decode=DecodeConfig(max_decode_length=12), **overrides)
    return Evaluator(spec, config, LENGTHS)


def test_failures_are_named_and_other_tasks_still_scored(model):
    spec, params = model
    results = _evaluator(spec, ["test_reverse", "test_eval_train_only", "test_eval_bad_metric",
                                "test_plain_seqio"]).evaluate(params, step=3)
    assert list(results.tasks) == ["test_reverse", "test_eval_train_only",
                                   "test_eval_bad_metric", "test_plain_seqio"]
    missing = results.tasks["test_eval_train_only"]
    assert missing.errors and "test_eval_train_only" in missing.errors[0]
    assert "no split 'validation'" in missing.errors[0]
    bad = results.tasks["test_eval_bad_metric"]
    assert any("_raising_metric" in e and "metric exploded" in e for e in bad.errors)
    assert "exact_match" in bad.metrics  # the task's other metric still counts
    for name in ("test_reverse", "test_plain_seqio"):
        assert not results.tasks[name].errors
        assert results.tasks[name].num_examples == 6
        assert 0.0 <= results.tasks[name].metrics["exact_match"] <= 100.0
    assert results.failed == ["test_eval_train_only", "test_eval_bad_metric"]
    assert "test_eval_bad_metric/exact_match" in results.scalars()


def test_metrics_match_a_hand_computation_from_the_predictions(model):
    spec, params = model
    result = _evaluator(spec, "test_reverse").evaluate(params).tasks["test_reverse"]
    hits = [p["prediction"].strip().lower() == p["targets"].strip().lower()
            for p in result.predictions]
    assert result.metrics["exact_match"] == pytest.approx(100.0 * sum(hits) / len(hits))
    examples = load_examples("test_reverse", "validation", 6)
    assert [p["inputs"] for p in result.predictions] == [ex.inputs for ex in examples]
    assert [p["targets"] for p in result.predictions] == [ex.targets for ex in examples]


def test_options_tasks_are_ranked_and_the_best_scoring_option_is_predicted(model):
    spec, params = model
    evaluator = _evaluator(spec, "test_even_zsopt")
    result = evaluator.evaluate(params).tasks["test_even_zsopt"]
    assert result.method == "rank"
    examples = evaluator.examples("test_even_zsopt")
    pairs = [(ex.input_tokens, flantune.data.default_output_features()["targets"].vocabulary
              .encode(o) + [1]) for ex in examples for o in ex.options]
    flat = evaluator.scorer(params, [(i, np.asarray(t, np.int32)) for i, t in pairs])
    for k, row in enumerate(result.predictions):
        scores = flat[2 * k: 2 * k + 2]
        np.testing.assert_allclose(row["option_scores"], scores, rtol=1e-6)
        assert row["prediction"] == row["options"][int(np.argmax(scores))]
    assert result.metrics == {}  # test_even has no metric functions: said, not hidden
    assert any("no metric functions" in w for w in result.warnings)
    generated = _evaluator(spec, "test_even_zsopt", options_scoring="generate").evaluate(params)
    assert generated.tasks["test_even_zsopt"].method == "generate"


def test_rank_ties_go_to_the_first_option(model):
    spec, params = model
    evaluator = _evaluator(spec, "test_even_zsopt")
    evaluator.scorer = lambda params, pairs: np.zeros(len(pairs))  # every option equally likely
    example = EvalExample(task="t", index=0, inputs="x", targets="b",
                          input_tokens=np.array([5, 1]), target_tokens=np.array([6, 1]),
                          options=("b", "a", "c"))
    texts, _, _ = evaluator._rank(params, flantune.data.tasks.seqio.get_mixture_or_task(
        "test_even_zsopt"), [example])
    assert texts == ["b"]


def test_variants_select_zero_and_few_shot_versions():
    spec = ModelSpec.from_config(T5_8K)
    evaluator = _evaluator(spec, ["test_reverse", "test_plain_seqio"],
                           variants=("zsnoopt", "fsnoopt"))
    assert evaluator.tasks == ["test_reverse_zsnoopt", "test_reverse_fsnoopt",
                               "test_plain_seqio"]
    with pytest.raises(TaskEvalError, match="no_such_task"):
        _evaluator(spec, "no_such_task")


def test_results_are_written_as_json_markdown_and_jsonl(tmp_path):
    results = EvalResults(step=7, split="validation", tasks={
        "a": TaskResult("a", {"exact_match": 50.0}, 2, "generate",
                        [{"inputs": "i", "targets": "t", "prediction": "p", "score": -1.5}]),
        "b": TaskResult("b", {}, 0, "", [], errors=["task 'b': broken"])})
    paths = results.write(str(tmp_path))
    data = json.loads(open(paths["json"]).read())
    assert data["step"] == 7 and data["tasks"]["a"]["metrics"] == {"exact_match": 50.0}
    assert data["tasks"]["b"]["errors"] == ["task 'b': broken"]
    markdown = open(paths["markdown"]).read()
    assert "| a | 2 | generate | 50.00 |" in markdown and "task 'b': broken" in markdown
    row = json.loads((tmp_path / "predictions" / "a.jsonl").read_text().splitlines()[0])
    assert row == {"inputs": "i", "targets": "t", "prediction": "p", "score": -1.5}
    assert results.scalars() == {"a/exact_match": 50.0}


def test_a_task_tokenized_beyond_the_model_vocabulary_fails_by_name():
    small = ModelSpec.from_config(T5.__class__(**{**T5.__dict__, "vocab_size": 100}))
    params_small = small.init_params(jax.random.key(0))
    results = _evaluator(small, ["test_reverse"]).evaluate(params_small)
    [error] = results.tasks["test_reverse"].errors
    assert "test_reverse" in error and "outside the model's vocabulary [0, 100)" in error
    assert results.failed == ["test_reverse"]
