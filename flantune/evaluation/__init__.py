"""Evaluation: log-likelihood scoring, rank classification over answer options, decoding of
held-out tasks, and their SeqIO postprocessors and metrics (during and after training)."""

from flantune.evaluation.evaluator import EvalConfig, Evaluator, resolve_tasks
from flantune.evaluation.examples import EvalExample, TaskEvalError, load_examples
from flantune.evaluation.predict import Prediction, Predictor
from flantune.evaluation.results import EvalResults, TaskResult, write_predictions
from flantune.evaluation.scoring import Scorer, sequence_log_likelihood

__all__ = [
    "EvalConfig",
    "EvalExample",
    "EvalResults",
    "Evaluator",
    "Prediction",
    "Predictor",
    "Scorer",
    "TaskEvalError",
    "TaskResult",
    "load_examples",
    "resolve_tasks",
    "sequence_log_likelihood",
    "write_predictions",
]
