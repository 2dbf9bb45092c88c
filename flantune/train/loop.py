"""The training loop: data -> sharded train step -> metrics and checkpoints.

Everything is decided before the first step: the mesh and batch size are checked, MODEL_DIR is
probed for writability and for an existing checkpoint (resumed with its data position), or the
initial checkpoint is loaded with a fresh optimizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np

import flantune.partitioning as partitioning
from flantune.data import BatchIterator, DataError
from flantune.data.prefetch import Prefetcher
from flantune.data.vocabulary import DEFAULT_VOCABULARY
from flantune.models.config import T5Config
from flantune.peft.config import AdapterConfig, PromptConfig
from flantune.peft.report import adapter_summary
from flantune.train.adapter_checkpoints import load_base
from flantune.train.adapter_reference import (
    RANDOM_BASE,
    AdapterReference,
    AdapterReferenceError,
    base_fingerprint,
    check_reference,
    read_reference,
    write_reference,
)
from flantune.train.checkpoint_kinds import CheckpointKindError, locate_checkpoint
from flantune.train.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    absolute_path,
    load_initial_params,
)
from flantune.train.checkpoints import _check_writable as check_writable
from flantune.train.losses import LossConfig
from flantune.train.metric_writers import MetricWriter, ProgressBar, Throughput, per_task_losses
from flantune.train.objective import (
    OBJECTIVE_FILE,
    ObjectiveContext,
    PreparedObjective,
    TrainObjective,
    per_task_metrics,
)
from flantune.train.optimizers import OptimizerConfig, make_optimizer
from flantune.train.preemption import StopRequest
from flantune.train.run_lock import RunLock, RunLockError
from flantune.train.state import (
    ModelConfig,
    ModelSpec,
    abstract_state,
    frozen_shardings,
    init_state,
    placed,
    state_shardings,
)
from flantune.train.step import StepConfig, make_train_step

PyTree = Any


class TrainingEvaluation(Protocol):
    """Held-out evaluation inside the loop (flantune.evaluation.during_training builds one)."""

    tasks: list[str]

    def due(self, step: int, *, last: bool, saving: bool) -> bool: ...

    def run(self, params: PyTree, step: int, show: Callable[[Any], None] | None = None
            ) -> dict[str, float]: ...

    def close(self) -> None: ...


# Builds the evaluation once the model, mesh and shardings are known:
# factory(spec, task_feature_lengths, model_dir, mesh=, rules=, param_shardings=, every_save=).
# It raises ValueError for a configuration it cannot evaluate (e.g. an unknown task).
EvaluationFactory = Callable[..., TrainingEvaluation]


class TrainError(RuntimeError):
    """A run that cannot start or continue, with what to do about it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    train_steps: int
    batch_size: int
    model: ModelConfig
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    step: StepConfig = dataclasses.field(default_factory=StepConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    mesh: partitioning.MeshConfig = dataclasses.field(default_factory=partitioning.MeshConfig)
    rules: str | tuple = "data_parallel"
    initial_checkpoint_path: str | None = None
    seed: int = 0
    data_seed: int | None = None  # default: seed
    log_every_steps: int = 10
    window: int = 4096
    mixing: str = "exact"
    pack: bool = True
    progress: bool = True
    prefetch: int = 2  # batches prepared ahead in a background thread
    max_nonfinite_steps: int = 10  # skipped NaN/Inf steps tolerated before the run stops
    # Held-out evaluation during training, e.g.
    # flantune.evaluation.during_training.evaluation_factory(EvalConfig(...)); None: off.
    evaluation: EvaluationFactory | None = None
    # Parameter-efficient tuning (flantune.peft, e.g. LoraConfig()): only the adapter trains and
    # is checkpointed; the base is INITIAL_CHECKPOINT_PATH (else the random initialisation).
    adapter: AdapterConfig | None = None
    # Another training objective than token cross-entropy (flantune.train.objective), e.g.
    # flantune.preference.PreferenceObjective(PreferenceConfig()); None: instruction tuning.
    objective: TrainObjective | None = None


@dataclasses.dataclass
class TrainResult:
    final_step: int
    losses: dict[int, float]
    model_dir: str
    interrupted: bool = False


def _check_vocabulary(config: TrainConfig) -> None:
    size = DEFAULT_VOCABULARY.vocab_size
    if config.model.vocab_size < size:
        raise TrainError(
            f"The model's vocab_size {config.model.vocab_size} is smaller than the vocabulary's "
            f"{size} ids ({DEFAULT_VOCABULARY.describe()}); set the model config's "
            "vocab_size to at least that, or choose a smaller vocabulary.")


def _rules(config: TrainConfig) -> partitioning.LogicalAxisRules:
    if isinstance(config.rules, str):
        return partitioning.axis_rules(config.rules)
    return tuple(config.rules)


def train(config: TrainConfig, *, on_step: Callable[[int, dict], None] | None = None,
          config_files: Mapping[str, str] | None = None) -> TrainResult:
    """Runs (or resumes) training as configured; returns the losses it logged.

    MODEL_DIR is probed for writability and locked for this run (flantune.train.run_lock)
    before anything is written there; `config_files` (name -> text, e.g. the gin config) are
    written then."""
    if config.train_steps <= 0:
        raise TrainError(f"TRAIN_STEPS must be positive, got {config.train_steps}.")
    if (config.pack and isinstance(config.adapter, PromptConfig)
            and isinstance(config.model, T5Config)):
        raise TrainError("Prompt tuning of T5 puts a soft prompt before each example's encoder "
                         "inputs, which packed rows (several examples each) cannot hold; set "
                         "flantune.train_config.pack = False.")
    if config.objective is not None and config.step.loss != LossConfig():
        raise TrainError(
            f"The token loss settings {config.step.loss} (Z_LOSS, LABEL_SMOOTHING, "
            f"LOSS_NORMALIZING_FACTOR) do not apply to {type(config.objective).__name__}: its "
            "loss is its own (for preference tuning averaged over pairs; conservative DPO is "
            "PreferenceConfig.label_smoothing). Leave them at their defaults.")
    mesh = partitioning.make_mesh(config.mesh)
    partitioning.check_batch_size(config.batch_size, mesh)
    rules = _rules(config)
    _check_vocabulary(config)
    check_writable(absolute_path(config.model_dir))
    # The lock needs a POSIX file system (exclusive create); on an object store (gs://) the
    # run is not locked.
    locked = jax.process_index() == 0 and "://" not in str(config.model_dir)
    lock = RunLock(config.model_dir) if locked else contextlib.nullcontext()
    try:
        with lock:
            for name, text in (config_files or {}).items():
                write_config(config.model_dir, name, text)
            return _train(config, mesh, rules, on_step)
    except RunLockError as err:
        raise TrainError(str(err)) from None


def _train(config: TrainConfig, mesh, rules, on_step) -> TrainResult:
    checkpointer = Checkpointer(config.model_dir, config.checkpoint)
    process, processes = jax.process_index(), jax.process_count()
    is_chief = process == 0

    spec = ModelSpec.from_config(config.model, config.adapter)
    # The model without adapter, for an objective's reference (built outside the activation
    # rules: abstract NNX models built under them get invalid mesh specs).
    base_spec = (ModelSpec.from_config(config.model)
                 if config.objective is not None and config.adapter is not None else spec)
    optimizer, schedule = make_optimizer(config.optimizer)
    data = BatchIterator(
        config.mixture_or_task_name, task_feature_lengths=config.task_feature_lengths,
        batch_size=config.batch_size // processes, converter=_converter(config, spec),
        seed=config.seed if config.data_seed is None else config.data_seed,
        process_index=process, process_count=processes, window=config.window,
        mixing=config.mixing, pack=config.pack, vocab_size=config.model.vocab_size)
    step_config = dataclasses.replace(config.step, num_tasks=len(data.task_names))

    with partitioning.activation_rules(rules, mesh):
        shardings = state_shardings(spec, optimizer, mesh, rules)
        base_shardings = frozen_shardings(spec, mesh, rules)
        checkpointer.check_free_space(_state_bytes(spec, optimizer))  # keep + best + 1
        frozen = _base_params(config, spec, base_shardings, checkpointer)
        state = _initial_state(config, spec, optimizer, shardings, checkpointer, data)
        start = int(jax.device_get(state["step"]))
        full_shardings = spec.join(shardings["params"], base_shardings)
        prepared = _prepare_objective(config, ObjectiveContext(
            config=config, spec=spec, base_spec=base_spec, mesh=mesh, rules=rules,
            frozen=frozen,
            frozen_shardings=base_shardings, param_shardings=full_shardings, data=data,
            start=start))
        step_fn = jax.jit(
            make_train_step(spec, optimizer, schedule, step_config,
                            prepared.step if prepared else None),
            in_shardings=(shardings, partitioning.batch_sharding(mesh), base_shardings,
                          prepared.reference_shardings if prepared else None),
            out_shardings=(shardings, None), donate_argnums=(0,))
        reference = prepared.reference if prepared else None
        add_features = prepared.add_features if prepared else None
        writer = MetricWriter(config.model_dir, "train", enabled=is_chief)
        evaluation = _Evaluations.of(
            _training_eval(config, spec, mesh, rules, full_shardings),
            prepared.evaluation if prepared else None)
        write_config(config.model_dir, MIXTURE_FILE, mixture_description(data))
        throughput, losses = Throughput(), {}
        pending: list[tuple[int, dict]] = []
        bar = ProgressBar(config.train_steps, start, enabled=is_chief and config.progress)
        stop, stopped_at = StopRequest(), None
        nonfinite, failure = NonFiniteSteps(config.max_nonfinite_steps,
                                            step_config.skip_nonfinite), None
        with stop:
            with bar, Prefetcher(data, buffer_size=config.prefetch) as batches:
                for step in range(start, config.train_steps):
                    local, data_state = next(batches)
                    throughput.add(real_tokens(local) * processes)
                    if add_features is not None:
                        local = add_features(local, step)
                    state, metrics = step_fn(state, partitioning.global_batch(local, mesh),
                                             frozen, reference)
                    pending.append((step + 1, metrics))
                    done = step + 1
                    stopping = stop.should_stop(done)
                    last = done == config.train_steps or stopping
                    saving = checkpointer.should_save(done) or last
                    # Metrics are fetched every log interval, and before every checkpoint so that a
                    # non-finite step is never saved.
                    if done % config.log_every_steps == 0 or saving:
                        logged = _log(pending, data.task_names, throughput, writer)
                        pending = []
                        losses.update({s: m["loss"] for s, m in logged})
                        bar.update(done, logged[-1][1]["loss"], logged[-1][1]["tokens_per_s"])
                        if on_step is not None:
                            for s, m in logged:
                                on_step(s, m)
                        failure = nonfinite.check(logged, bar.print)
                        if failure:
                            break
                    eval_metrics = None
                    if evaluation is not None and not stopping and evaluation.due(
                            done, last=last, saving=saving):
                        eval_metrics = evaluation.run(spec.join(state["params"], frozen), done,
                                                      bar.print)
                    if saving:
                        checkpointer.save(done, state, data_state=data_state, force=last,
                                          metrics=eval_metrics)
                    if stopping:
                        stopped_at = done
                        why = stop.signal_name or "preemption"
                        bar.print(f"Stopping after step {done} ({why}): checkpoint saved in "
                                  f"{config.model_dir}; run the same command to resume.")
                        break
            # The signal handlers stay installed until the last checkpoint is committed: a
            # SIGTERM now is recorded (and reported below) instead of killing the write.
            checkpointer.wait_until_finished()
        cut = data.stats.truncation_summary()
        if cut is not None and is_chief:
            bar.print(f"Data (this process): {cut}")
        if stop.signal_name is not None and stopped_at is None:
            bar.print(f"{stop.signal_name} arrived while the last checkpoint was written; it "
                      f"was committed (step {checkpointer.latest_step()} in {config.model_dir}).")
        last_good = checkpointer.latest_step()
        saved_steps = checkpointer.all_steps()
        checkpointer.close()
        writer.close()
        if evaluation is not None:
            evaluation.close()
    if failure:
        where = (f"the last good checkpoint is step {last_good} in {config.model_dir}"
                 if last_good is not None else f"no checkpoint was saved in {config.model_dir}")
        history = loss_history(losses, nonfinite.steps[0], saved_steps)
        raise TrainError(f"{failure} Stopped without saving; {where}. {history} Lower the "
                         "learning rate or check the data, then rerun to resume from a "
                         "checkpoint before the blow-up (delete the later step directories).")
    final = stopped_at if stopped_at is not None else max(start, config.train_steps)
    return TrainResult(final_step=final, losses=losses, model_dir=config.model_dir,
                       interrupted=stopped_at is not None)


def _converter(config: TrainConfig, spec: ModelSpec):
    """The batches' feature converter: the model family's, or the objective's."""
    marker = absolute_path(config.model_dir) / OBJECTIVE_FILE
    if config.objective is None:
        if marker.exists():
            raise TrainError(f"{config.model_dir} holds a run with another training objective "
                             f"({OBJECTIVE_FILE}); configure it again to resume (e.g. "
                             "flantune.train_config.preference), or use another MODEL_DIR.")
        return spec.family
    try:
        return config.objective.converter(spec.family, pack=config.pack,
                                          mixture_or_task=config.mixture_or_task_name)
    except DataError as err:
        raise TrainError(str(err)) from None


def _prepare_objective(config: TrainConfig, context: ObjectiveContext
                       ) -> PreparedObjective | None:
    if config.objective is None:
        return None
    try:
        return config.objective.prepare(context)
    except (ValueError, OSError) as err:
        raise TrainError(f"{type(config.objective).__name__}: {err}") from None


class _Evaluations:
    """The loop's evaluations (held-out decoding and an objective's own) as one."""

    def __init__(self, hooks: list[TrainingEvaluation]):
        self.hooks = hooks
        self.tasks = [t for hook in hooks for t in hook.tasks]
        self._due: list[TrainingEvaluation] = []

    @classmethod
    def of(cls, *hooks: TrainingEvaluation | None) -> _Evaluations | None:
        present = [h for h in hooks if h is not None]
        return cls(present) if present else None

    def due(self, step: int, *, last: bool, saving: bool) -> bool:
        """Whether any is due; ``run`` then runs those that are."""
        self._due = [h for h in self.hooks if h.due(step, last=last, saving=saving)]
        return bool(self._due)

    def run(self, params: PyTree, step: int, show: Callable[[Any], None] | None = None
            ) -> dict[str, float]:
        out: dict[str, float] = {}
        for hook in self._due:
            out.update(hook.run(params, step, show))
        return out

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()


def loss_history(losses: Mapping[int, float], first_bad: int, checkpoints: list[int],
                 window: int = 8) -> str:
    """The logged losses up to the first non-finite step, the largest jump among them, and the
    loss at each checkpoint: after a learning-rate blow-up the newest checkpoint may hold a
    finite but ruinous update, so the user needs this to choose one."""
    steps = [s for s in sorted(losses) if s <= first_bad][-window:]
    finite = [s for s in steps if np.isfinite(losses[s])]
    jump, ratio = None, 1.0
    for before, after in zip(finite, finite[1:], strict=False):
        if losses[before] > 0 and losses[after] / losses[before] > ratio:
            jump, ratio = after, losses[after] / losses[before]
    marks = {jump: f" (x{ratio:.1f} over step {finite[finite.index(jump) - 1]}: the largest "
                   "jump)"} if jump is not None and ratio >= 1.5 else {}
    shown = ", ".join(f"step {s}: {losses[s]:.4g}{marks.get(s, '')}" for s in steps)
    text = f"Loss before the failure: {shown}."
    saved = [s for s in checkpoints if s <= first_bad]
    if saved:
        def at(step: int) -> str:
            logged = max((s for s in losses if s <= step), default=None)
            if logged is None:
                return f"step {step}"
            after = ", after the jump" if jump is not None and marks and step >= jump else ""
            return f"step {step} (loss {losses[logged]:.4g}{after})"

        text += " Checkpoints: " + ", ".join(at(s) for s in saved) + "."
    return text


class NonFiniteSteps:
    """Counts steps whose loss or gradients were NaN/Inf (``metrics["nonfinite"]``) and decides
    when the run must stop: at the first one if updates are not skipped (the parameters are
    corrupted), else once more than ``limit`` were skipped."""

    def __init__(self, limit: int, skipped: bool):
        self.limit, self.skipped, self.steps = limit, skipped, []

    def check(self, logged: list[tuple[int, dict[str, float]]],
              warn: Callable[[str], None]) -> str | None:
        bad = [s for s, m in logged if m.get("nonfinite")]
        if not bad:
            return None
        self.steps += bad
        if not self.skipped:
            return (f"Loss or gradients became NaN/Inf at step {bad[0]} and the update was "
                    "applied (StepConfig.skip_nonfinite=False), so the parameters are corrupted.")
        if len(self.steps) > self.limit:
            return (f"{len(self.steps)} steps had NaN/Inf loss or gradients (steps "
                    f"{self.steps[:10]}{' ...' if len(self.steps) > 10 else ''}), more than "
                    f"TrainConfig.max_nonfinite_steps={self.limit}; their updates were skipped.")
        warn(f"[yellow]step(s) {bad}: NaN/Inf loss or gradients; update skipped "
             f"({len(self.steps)} so far, the run stops after {self.limit}).")
        return None


def real_tokens(batch: Mapping[str, np.ndarray]) -> int:
    """Non-padding tokens the model reads and predicts in a (local) batch."""
    return int(sum(np.count_nonzero(batch[k]) for k in ("encoder_input_tokens",
                                                         "decoder_target_tokens") if k in batch))


def _log(pending: list[tuple[int, dict]], task_names, throughput: Throughput,
         writer: MetricWriter) -> list[tuple[int, dict[str, float]]]:
    """Fetches the pending steps' metrics (one device sync per log interval) and writes them."""
    fetched = jax.device_get([m for _, m in pending])
    tokens_per_s, _ = throughput.report()
    out = []
    for (step, _), values in zip(pending, fetched, strict=True):
        scalars = {k: float(v) for k, v in values.items() if np.ndim(v) == 0}
        if "task_loss_sum" in values:
            scalars.update(per_task_losses(task_names, np.asarray(values["task_loss_sum"]),
                                           np.asarray(values["task_tokens"])))
        scalars.update(per_task_metrics(task_names, values))
        scalars["tokens_per_s"] = tokens_per_s
        writer.scalars(step, scalars)
        out.append((step, scalars))
    return out


def _state_bytes(spec: ModelSpec, optimizer) -> int:
    """Bytes of trainable parameters + optimizer state (what a checkpoint holds)."""
    shapes = jax.eval_shape(lambda: (spec.abstract_trainable(),
                                     optimizer.init(spec.abstract_trainable())))
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(shapes)))


def _training_eval(config: TrainConfig, spec: ModelSpec, mesh, rules, param_shardings):
    """The evaluation hook, or None; unknown eval tasks fail here, before the first step."""
    best = config.checkpoint.best_metric if config.checkpoint.keep_best is not None else None
    if config.evaluation is None:
        if best:
            raise TrainError(f"CheckpointConfig.keep_best ranks checkpoints by the eval metric "
                             f"{best!r}, but no evaluation is configured; set "
                             "EVAL_MIXTURE_OR_TASK_NAME (flantune.EvalConfig).")
        return None
    try:
        hook = config.evaluation(spec, config.task_feature_lengths, config.model_dir,
                                 mesh=mesh, rules=rules, param_shardings=param_shardings,
                                 every_save=best is not None)
    except ValueError as err:
        raise TrainError(f"Evaluation during training: {err}") from None
    if best and best.partition("/")[0] not in hook.tasks:
        raise TrainError(f"CheckpointConfig.best_metric {best!r} must be 'TASK/METRIC' with "
                         f"TASK one of the evaluated tasks {hook.tasks}.")
    return hook


def _base_params(config: TrainConfig, spec: ModelSpec, shardings: PyTree,
                 checkpointer: Checkpointer) -> PyTree:
    """An adapter run's frozen base parameters ({} for full fine-tuning): INITIAL_CHECKPOINT_PATH,
    else the random initialisation of RANDOM_SEED, checked against (or recorded in) MODEL_DIR's
    adapter.json."""
    try:
        stored = read_reference(config.model_dir)
    except AdapterReferenceError as err:
        raise TrainError(str(err)) from None
    if spec.adapter is None:
        if stored is not None:
            raise TrainError(f"{config.model_dir} holds an adapter run ({stored.adapter}); "
                             "configure the same adapter (e.g. --gin_file=gin_configs/peft/"
                             "lora.gin) to resume it, or use another MODEL_DIR.")
        return {}
    if stored is None and checkpointer.latest_step() is not None:
        raise TrainError(f"{config.model_dir} holds checkpoints of a full fine-tuning run (no "
                         "adapter.json); an adapter run needs a MODEL_DIR of its own.")
    if config.initial_checkpoint_path:
        announce_train_steps(config)
        base_path = str(config.initial_checkpoint_path)
    else:
        # The base the same seed gives a full fine-tuning run (the state's init key).
        base_path = RANDOM_BASE.format(seed=config.seed)
        if jax.process_index() == 0:
            print(f"No INITIAL_CHECKPOINT_PATH: the adapter trains on a randomly initialised "
                  f"base model ({base_path}); set INITIAL_CHECKPOINT_PATH to the model to adapt.")
    frozen = load_base(base_path, spec, shardings, role="INITIAL_CHECKPOINT_PATH")
    reference = AdapterReference(config.adapter, config.model, base_path,
                                 base_fingerprint(frozen))
    if stored is not None:
        try:
            check_reference(stored, reference, config.model_dir, resuming=True)
        except AdapterReferenceError as err:
            raise TrainError(str(err)) from None
    else:
        write_reference(config.model_dir, reference)
    if jax.process_index() == 0:
        print(adapter_summary(spec.config, spec.adapter, spec.abstract_trainable(),
                              spec.abstract_frozen()))
    return frozen


def _initial_state(config: TrainConfig, spec: ModelSpec, optimizer, shardings: PyTree,
                   checkpointer: Checkpointer, data: BatchIterator) -> PyTree:
    """Resume from MODEL_DIR's latest checkpoint, else the initial checkpoint, else random."""
    latest = checkpointer.latest_step()
    if latest is not None:
        target = abstract_state(spec, optimizer, shardings, config.seed)
        state, data_state = checkpointer.restore(
            latest, target, fall_back=config.checkpoint.fall_back_to_previous)
        if data_state is None:
            raise TrainError(f"The checkpoint at step {latest} in {config.model_dir} has no data "
                             "position for this process; cannot resume the data stream exactly.")
        try:
            data.set_state(data_state)
        except DataError as err:
            raise TrainError(f"Resuming {config.model_dir} at step {latest}: {err}") from None
        return state
    if config.initial_checkpoint_path and spec.adapter is None:
        announce_train_steps(config)
        params = load_initial_params(config.initial_checkpoint_path,
                                     placed(spec.abstract_params(), shardings["params"]),
                                     model=config.model)
        return init_state(spec, optimizer, shardings, seed=config.seed, params=params)
    return init_state(spec, optimizer, shardings, seed=config.seed)


def announce_train_steps(config: TrainConfig, show: Callable[[str], None] = print) -> None:
    """Says how many steps a run from an initial checkpoint that carries a step will take:
    flantune counts TRAIN_STEPS from 0 (the optimizer starts afresh), where t5x counts from the
    checkpoint's step, so a t5x-style absolute count would train far longer than meant."""
    try:
        location = locate_checkpoint(config.initial_checkpoint_path, "INITIAL_CHECKPOINT_PATH")
    except CheckpointKindError as err:
        raise TrainError(str(err)) from None
    if location.step is None or jax.process_index() != 0:
        return
    steps, start = config.train_steps, location.step
    message = (f"INITIAL_CHECKPOINT_PATH is at step {start}; this run starts at step 0 with a "
               f"fresh optimizer and trains TRAIN_STEPS={steps} steps (flantune counts "
               "TRAIN_STEPS from 0; t5x counts from the initial checkpoint's step).")
    if steps > start:
        message += (f" If {steps} is a t5x-style count, set TRAIN_STEPS={steps - start} to "
                    f"fine-tune for {steps - start} steps.")
    show(message)


MIXTURE_FILE = "mixture.json"


def mixture_description(data: BatchIterator) -> str:
    """What the run trains on, as JSON: the mixture, its leaf tasks in the order of the data
    state's per-task counts, and their expected shares (realized shares = those counts)."""
    return json.dumps({"mixture": data.stream.name, "tasks": list(data.task_names),
                       "expected_shares": [float(s) for s in data.stream.shares]}, indent=1)


def write_config(model_dir: str, name: str, text: str) -> None:
    """Writes a config file (e.g. the operative gin config) into MODEL_DIR, on process 0."""
    if jax.process_index() == 0:
        directory = absolute_path(model_dir)  # local or remote (gs://), as orbax writes it
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="utf-8")


def summary(result: TrainResult) -> str:
    if not result.losses:
        return json.dumps({"message": f"{result.model_dir} is already at step "
                                      f"{result.final_step}; nothing to train"})
    first, last = min(result.losses), max(result.losses)
    return json.dumps({"first_logged_step": first, "first_loss": result.losses[first],
                       "last_logged_step": last, "last_loss": result.losses[last]})
