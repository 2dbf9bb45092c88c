"""The ``flantune`` command line: the only place that knows about gin and argv.

t5x conventions: ``--gin_file=F`` (repeatable), ``--gin.NAME=VALUE`` bindings and macros
(``--gin.MIXTURE_OR_TASK_NAME="'demo'"``), ``--gin_search_path=DIR``; task modules are imported
with ``--module_import`` (default: ``flantune.tasks``, flantune's own task definitions).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence

import gin

from flantune.data.chat.tasks import set_chat_loss, set_chat_template
from flantune.data.chat.templates import TOKENIZER_TEMPLATE
from flantune.data.errors import DataError
from flantune.data.mixtures import get_provider
from flantune.data.vocabulary import set_vocabulary
from flantune.gin_checks import GinSettingError, check_t5x_macros, unused_settings


@gin.configurable(module="flantune")
def vocabulary(path: str | None = None, extra_ids: int = 0) -> None:
    """Selects the vocabulary all tasks use: a SentencePiece model, a Hugging Face
    tokenizer.json or its directory, or a shipped one ('flantune:demo', the default SentencePiece
    model, or 'flantune:demo_chat', the chat demo's tokenizer)."""
    set_vocabulary(path, extra_ids)


@gin.configurable(module="flantune")
def chat_template(name: str = TOKENIZER_TEMPLATE, loss: str = "assistant_only") -> None:
    """Selects the template of chat tasks that name none: a built-in (llama2, mistral,
    mistral_legacy, chatml, llama3), a registered one, or 'tokenizer' (the tokenizer's own
    chat_template); and the loss of those that name none: 'assistant_only', 'last_turn' or
    'all'."""
    set_chat_template(name)
    set_chat_loss(loss)


class CliError(Exception):
    """A user error on the command line, printed without a traceback."""


# The t5x macros a run config must bind (gin_configs/runs/*.gin declare them %gin.REQUIRED).
REQUIRED_MACROS = ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS")


def check_required_macros(names: Sequence[str] = REQUIRED_MACROS) -> None:
    """Raises a CliError naming every required macro still unbound (or bound to REQUIRED)."""
    missing = []
    for name in names:
        try:
            value = gin.query_parameter(f"%{name}")
        except ValueError:
            missing.append(name)
            continue
        if repr(value) == "%gin.REQUIRED":
            missing.append(name)
    if missing:
        raise CliError(
            "Missing required gin macros: " + ", ".join(missing) + ". A run needs "
            + ", ".join(names) + " (bind them in a gin file or with --gin.NAME=VALUE, e.g. "
            "--gin.MODEL_DIR=\"'runs/demo'\").")


def check_run_config(parameter: str, run_file: str, files: Sequence[str] = ()) -> None:
    """One clear line when the gin files bind a run's macros but no run config reads them (the
    ``include`` of gin_configs/runs/*.gin, which binds `parameter`, is missing)."""
    configurable = parameter.rpartition(".")[0]
    try:
        gin.query_parameter(parameter)
    except ValueError:
        raise CliError(f"No run configuration: the gin files {list(files)} never configure "
                       f"{configurable}, "
                       f"so macros such as MODEL_DIR would be ignored. Add "
                       f"--gin_file={run_file} (or include '{run_file}' in your gin file)."
                       ) from None


# Macros the command line reads itself (gin.query_parameter records no read).
READ_BY_CLI = ("MIXTURE_OR_TASK_MODULE",)


def warn_unused_settings(command: str, files: Sequence[str], bindings: Sequence[str]) -> None:
    """Prints every gin macro and binding that the command's configuration did not read (a
    default that flantune's own gin_configs/ bind, and the user does not, is left out: e.g.
    EVALUATOR_NUM_EXAMPLES when the user binds flantune.EvalConfig.max_examples_per_task)."""
    unused = unused_settings(also_read=READ_BY_CLI,
                             defaults_only=shipped_macros() - user_macros(files, bindings))
    if unused:
        print(f"flantune {command}: warning: {len(unused)} gin setting(s) that nothing reads "
              "(a typo, or a setting for another command):\n  " + "\n  ".join(unused),
              file=sys.stderr)


_MACRO_LINE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=", re.MULTILINE)


def shipped_macros() -> set[str]:
    """Macros that flantune's own gin files bind (defaults a user may override or bypass)."""
    names: set[str] = set()
    for root in flantune_gin_roots():
        for path in glob.glob(os.path.join(root, "gin_configs", "**", "*.gin"), recursive=True):
            with open(path, encoding="utf-8") as f:
                names.update(_MACRO_LINE.findall(f.read()))
    return names


def user_macros(files: Sequence[str], bindings: Sequence[str]) -> set[str]:
    """Macros bound by the command line's bindings and by gin files outside flantune's own."""
    names = {b.partition("=")[0].strip() for b in bindings}
    shipped = [os.path.join(root, "gin_configs") for root in flantune_gin_roots()]
    for path in files:
        found = next((os.path.join(p, path) for p in ["", *default_search_paths()]
                      if os.path.isfile(os.path.join(p, path))), None)
        if found and not any(os.path.abspath(found).startswith(os.path.abspath(d) + os.sep)
                             for d in shipped):
            with open(found, encoding="utf-8") as f:
                names.update(_MACRO_LINE.findall(f.read()))
    return names


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--gin.NAME=VALUE`` bindings (argparse cannot express them) from the rest."""
    bindings, rest = [], []
    for arg in argv:
        if arg.startswith("--gin."):
            name, sep, value = arg[len("--gin."):].partition("=")
            if not sep or not name:
                raise CliError(f"Malformed gin binding '{arg}': write --gin.NAME=VALUE.")
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
    return bindings, rest


def flantune_gin_roots() -> list[str]:
    """Where flantune's own ``gin_configs/`` lives: the checkout's top level (a source or
    editable install) or inside the installed package (a wheel)."""
    package = os.path.dirname(os.path.abspath(__file__))
    return [root for root in (os.path.dirname(package), package)
            if os.path.isdir(os.path.join(root, "gin_configs"))]


def default_search_paths() -> list[str]:
    """The working directory, then flantune's own gin roots."""
    paths = [os.getcwd()]
    paths += [root for root in flantune_gin_roots() if root not in paths]
    return paths


class _GinLookupFilter(logging.Filter):
    """Drops gin's ``ERROR:root:Path not found`` lines: gin logs one for every search path a
    file is not in while it looks for the one it is in (a file found nowhere is an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith(os.path.join("gin", "resource_reader.py"))
                    and str(record.msg).startswith("Path not found"))


def _quiet_gin_lookups() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _GinLookupFilter) for f in root.filters):
        root.addFilter(_GinLookupFilter())


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]) -> None:
    """Parses gin files and bindings, turning gin's errors into ones naming the culprit."""
    _quiet_gin_lookups()
    search_paths = [*search_paths, *default_search_paths()]
    for path in search_paths:
        gin.add_config_file_search_path(path)
    for path in files:
        if not any(os.path.exists(os.path.join(p, path)) for p in ["", *search_paths]):
            raise CliError(f"Gin file '{path}' not found (searched: . and {list(search_paths)}).")
    try:
        gin.parse_config_files_and_bindings(list(files), [], finalize_config=False)
    except Exception as err:  # noqa: BLE001 - gin raises many types (tokenize, lookup, syntax)
        raise CliError(f"Bad gin configuration in {list(files)}: {type(err).__name__}: "
                       f"{err}") from None
    for binding in bindings:  # one at a time, so an error names its binding
        try:
            gin.parse_config_files_and_bindings([], [binding], finalize_config=False)
        except Exception as err:  # noqa: BLE001
            raise CliError(f"Bad gin binding --gin.{binding.replace(' = ', '=', 1)}: "
                           f"{type(err).__name__}: {err}") from None
    try:
        check_t5x_macros()
    except GinSettingError as err:
        raise CliError(str(err)) from None


def task_modules(requested: Sequence[str] | None) -> list[str]:
    """The task modules a command imports: flantune's own, then MIXTURE_OR_TASK_MODULE (t5x's
    macro) and every ``--module_import`` (they add to the default, they do not replace it)."""
    modules = [TASK_MODULE]
    extra = _macro("MIXTURE_OR_TASK_MODULE")
    for module in [*([extra] if extra else []), *(requested or [])]:
        if module not in modules:
            modules.append(module)
    return modules


def import_modules(modules: Sequence[str]) -> None:
    """Imports task modules (the working directory is importable: see `main`)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and (module == err.name or module.startswith(err.name + ".")):
                raise CliError(f"Cannot import task module '{module}' ({err}; searched the "
                               f"working directory {os.getcwd()} and the installed packages). "
                               "Pass the module that registers your tasks with "
                               "--module_import=package.module.") from None
            raise CliError(f"Task module '{module}' failed to import: {err}.") from None
        except (ValueError, KeyError) as err:  # seqio's registries: e.g. a duplicate name
            raise CliError(registration_error(module, err)) from None


def registration_error(module: str, err: Exception) -> str:
    """What went wrong when `module` registered its tasks, naming its file and line and, for a
    mixture over an unregistered name (seqio: "Provider name not registered"), the mixture."""
    import traceback

    import seqio

    frames = list(traceback.walk_tb(err.__traceback__))
    user = [(f, line) for f, line in frames if "site-packages" not in f.f_code.co_filename
            and os.path.abspath(f.f_code.co_filename) != os.path.abspath(__file__)]
    where = f" ({user[-1][0].f_code.co_filename}:{user[-1][1]})" if user else ""
    missing = re.fullmatch(r"Provider name not registered: (.+)", str(err))
    if missing:
        mixture = next((f.f_locals.get("name") for f, _ in frames
                        if isinstance(f.f_locals.get("self"), seqio.Mixture)), None)
        try:
            get_provider(missing.group(1))
        except DataError as unknown:
            detail = str(unknown)
        else:
            detail = "it is registered now, so register it before the mixture"
        return (f"Task module '{module}'{where}: mixture '{mixture}' refers to "
                f"'{missing.group(1)}', which is not a registered task or mixture. {detail}")
    return (f"Task module '{module}'{where} failed to register its tasks: "
            f"{type(err).__name__}: {err}")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help="gin config file")
    parser.add_argument("--gin_search_path", action="append", default=[],
                        help="directory searched for gin files")
    # t5x's spellings: a comma-separated list of search paths, and repeatable NAME=VALUE.
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated directories searched for gin files (t5x)")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="a gin binding NAME=VALUE (t5x; same as --gin.NAME=VALUE)")
    parser.add_argument("--module_import", action="append", default=None,
                        help=f"a module registering tasks/mixtures, imported after "
                             f"{TASK_MODULE} (repeatable; the working directory is importable)")


def search_paths(args: argparse.Namespace) -> list[str]:
    """--gin_search_path entries, then t5x's comma-separated --gin_search_paths."""
    paths = list(args.gin_search_path)
    for text in args.gin_search_paths:
        paths += [p.strip() for p in text.split(",") if p.strip()]
    return paths


def t5x_bindings(args: argparse.Namespace) -> list[str]:
    """t5x's --gin_bindings values as "NAME = VALUE" bindings."""
    out = []
    for text in args.gin_bindings:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise CliError(f"Malformed --gin_bindings '{text}': write --gin_bindings=NAME=VALUE.")
        out.append(f"{name.strip()} = {value.strip()}")
    return out


def _feature_lengths(text: str) -> dict[str, int]:
    try:
        pairs = [part.split("=") for part in text.split(",") if part]
        return {key.strip(): int(value) for key, value in pairs}
    except ValueError:
        raise CliError(f"--task_feature_lengths '{text}': write e.g. inputs=512,targets=128.")\
            from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flantune", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect", help="show what a task or mixture feeds the model",
        description="Rates, expected vs realized shares, token lengths, truncation and rendered "
                    "examples of a task or mixture.")
    inspect.add_argument("name", nargs="?", help="task or mixture (default: gin "
                         "MIXTURE_OR_TASK_NAME)")
    inspect.add_argument("--examples", type=int, default=2000, help="slots to sample")
    inspect.add_argument("--split", default="train")
    inspect.add_argument("--seed", type=int, default=0)
    inspect.add_argument("--rendered", type=int, default=3, help="examples to print")
    inspect.add_argument("--task_feature_lengths", type=_feature_lengths, default=None,
                         help="e.g. inputs=512,targets=128 (default: gin TASK_FEATURE_LENGTHS)")
    inspect.add_argument("--library", action="store_true",
                         help="list the task library instead: every task with its cluster, "
                              "source, templates, metrics and whether its data is present "
                              f"(imports {LIBRARY_MODULE})")
    inspect.add_argument("--cluster", default=None, help="with --library: only this cluster")
    _common_arguments(inspect)

    train = commands.add_parser(
        "train", help="train (or resume) a model as the gin config says",
        description="Fine-tune on a task or mixture. Configure with --gin_file and "
                    "--gin.NAME=VALUE (MODEL_DIR, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, "
                    "TRAIN_STEPS, BATCH_SIZE, INITIAL_CHECKPOINT_PATH, MODEL).")
    _common_arguments(train)
    train.add_argument("--coordinator_address", default=None,
                       help="multi-host: host:port of process 0 (else from the environment)")
    train.add_argument("--num_processes", type=int, default=None)
    train.add_argument("--process_id", type=int, default=None)
    train.add_argument("--peer_timeout_seconds", type=float, default=60.0,
                       help="multi-host: stop if another process sends no heartbeat this long")
    sweep = commands.add_parser(
        "sweep", help="run a grid of gin bindings, one training run per variant, and report",
        description="Ablations: every combination of the axes' values is trained in "
                    "SWEEP_DIR/<variant> (finished variants are skipped on re-run), then "
                    "report.md, results.csv and plots are written to SWEEP_DIR. Axes come from "
                    "--axis and from the gin macro SWEEP_AXES ({'NAME': [values], ...}).")
    _common_arguments(sweep)
    sweep.add_argument("--axis", action="append", default=[],
                       help="NAME=[v1, v2, ...]: a gin macro or binding and its values")
    sweep.add_argument("--sweep_dir", default=None, help="default: gin macro SWEEP_DIR")
    sweep.add_argument("--only", action="append", default=None,
                       help="run only this variant (repeatable), e.g. on one cluster node")
    sweep.add_argument("--report_only", action="store_true",
                       help="write the report from the runs already in SWEEP_DIR")
    for name, help_text in (
            ("eval", "evaluate a checkpoint: per-task metrics (JSON, markdown) and predictions"),
            ("infer", "predict with a checkpoint: one JSONL file of predictions per task")):
        command = commands.add_parser(
            name, help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Configure with "
                        "--gin_file=gin_configs/runs/{name}.gin and a model gin file; macros "
                        "CHECKPOINT_PATH, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, "
                        "EVAL_OUTPUT_DIR.".replace("{name}", name))
        _common_arguments(command)
    self_instruct = commands.add_parser(
        "self-instruct", help="bootstrap instruction data from a checkpoint and seed tasks",
        description="Self-Instruct: generate instructions with a checkpoint, filter them "
                    "(ROUGE-L novelty), classify them, generate and filter their instances; "
                    "writes SELF_INSTRUCT_DIR/self_instruct.jsonl and a report, resumable. "
                    "Configure with --gin_file=gin_configs/runs/self_instruct.gin and a model "
                    "gin file; macros CHECKPOINT_PATH, SELF_INSTRUCT_DIR, SELF_INSTRUCT_TASKS.")
    _common_arguments(self_instruct)
    # `convert` parses its own arguments (flantune.export.command); listed for --help.
    commands.add_parser("convert", add_help=False,
                        help="Hugging Face safetensors <-> flantune checkpoints "
                             "(flantune convert --help)")
    return parser


def _macro(name: str, default=None):
    """A macro's value; a gin reference such as ``@flantune.ablation_mixture()`` is called."""
    try:
        value = gin.query_parameter(f"%{name}")
    except ValueError:
        return default
    if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
        return value.scoped_configurable_fn()
    return value


# The module registering flantune's own tasks (the checkout's tasks/, installed as flantune.tasks).
TASK_MODULE = "flantune.tasks"
# The module registering flantune's task library (FLAN datasets from TFDS).
LIBRARY_MODULE = "flantune.tasks.flan"


def run_inspect_library(args: argparse.Namespace) -> None:
    from flantune.data.tasks import registered_flan_tasks
    from flantune.inspect_view import library_rows, print_library

    import_modules([LIBRARY_MODULE])
    rows = library_rows(args.cluster)
    if not rows:
        clusters = sorted({t.cluster or "-" for t in registered_flan_tasks()})
        raise CliError(f"No task in cluster '{args.cluster}'; the clusters are {clusters}.")
    print_library(rows)


def run_inspect(args: argparse.Namespace) -> None:
    from flantune.data.report import mixture_report
    from flantune.inspect_view import print_report

    if args.library:
        run_inspect_library(args)
        return
    name = args.name or _macro("MIXTURE_OR_TASK_NAME")
    if not name:
        raise CliError("Name a task or mixture: flantune inspect NAME (or bind "
                       "MIXTURE_OR_TASK_NAME in a gin file).")
    lengths = args.task_feature_lengths or _macro("TASK_FEATURE_LENGTHS") or {
        "inputs": 512, "targets": 128}
    report = mixture_report(name, num_examples=args.examples, split=args.split, seed=args.seed,
                            task_feature_lengths=lengths, num_rendered=args.rendered)
    print_report(report)


def run_train(args: argparse.Namespace, bindings: Sequence[str]) -> None:
    import flantune.partitioning as partitioning
    from flantune import gin_config
    from flantune.partitioning.watchdog import PeerWatchdog
    from flantune.train.checkpoints import CheckpointError
    from flantune.train.loop import TrainError, summary, train, write_config

    try:
        multi_process = partitioning.initialize_distributed(
            args.coordinator_address, args.num_processes, args.process_id,
            peer_timeout_seconds=args.peer_timeout_seconds)
    except partitioning.DistributedInitError as err:
        raise CliError(str(err)) from None
    check_required_macros()
    check_run_config("flantune.train_config.model_dir", "gin_configs/runs/finetune.gin",
                     args.gin_file)
    try:
        config = gin_config.train_config()
    except (ValueError, TypeError) as err:
        raise CliError(f"Bad gin configuration: {err}") from None
    warn_unused_settings("train", args.gin_file, bindings)
    watchdog = PeerWatchdog(args.peer_timeout_seconds) if multi_process else None
    try:
        if watchdog is not None:
            watchdog.start()
        # config.gin is written once MODEL_DIR is probed and locked for this run.
        result = train(config, config_files={"config.gin": gin.config_str()})
    except (TrainError, CheckpointError) as err:
        raise CliError(str(err)) from None
    finally:
        if watchdog is not None:
            # On an error, a peer's death is reported as such (exit 75), not its symptom.
            watchdog.stop(failed=sys.exc_info()[0] is not None)
    write_config(config.model_dir, "operative_config.gin", gin.operative_config_str())
    print(summary(result))


def run_eval(args: argparse.Namespace, bindings: Sequence[str]) -> int:
    from flantune import gin_config
    from flantune.evaluation import TaskEvalError
    from flantune.evaluation.command import run
    from flantune.train.checkpoints import CheckpointError

    check_required_macros(("CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "EVAL_OUTPUT_DIR"))
    check_run_config("flantune.eval_run.checkpoint_path", f"gin_configs/runs/{args.command}.gin",
                     args.gin_file)
    try:
        config = gin_config.eval_run()
    except (ValueError, TypeError) as err:
        raise CliError(f"Bad gin configuration: {err}") from None
    warn_unused_settings(args.command, args.gin_file, bindings)
    try:
        results, paths = run(config, infer=args.command == "infer")
    except (CheckpointError, TaskEvalError) as err:
        raise CliError(str(err)) from None
    from rich.console import Console

    console = Console(stderr=True)
    if args.command == "eval":
        console.print(results.table())
    for name in results.failed:
        for message in results.tasks[name].errors:
            console.print(f"[red]error[/red] {message}")
    for label, path in paths.items():
        print(f"{label}: {path}")
    if results.failed:
        print(f"flantune {args.command}: {len(results.failed)} of {len(results.tasks)} task(s) "
              "failed (see above); the other tasks' results were written.", file=sys.stderr)
        return 1
    return 0


def run_self_instruct(args: argparse.Namespace, bindings: Sequence[str]) -> int:
    from flantune import gin_config
    from flantune.selfinstruct import SelfInstructError
    from flantune.selfinstruct.command import run
    from flantune.selfinstruct.output import TASKS_FILE
    from flantune.train.checkpoints import CheckpointError

    check_required_macros(("CHECKPOINT_PATH", "SELF_INSTRUCT_DIR"))
    check_run_config("flantune.self_instruct_run.checkpoint_path",
                     "gin_configs/runs/self_instruct.gin", args.gin_file)
    try:
        spec = gin_config.self_instruct_run()
    except (ValueError, TypeError) as err:
        raise CliError(f"Bad gin configuration: {err}") from None
    warn_unused_settings(args.command, args.gin_file, bindings)

    def progress(summary: dict) -> None:
        print(f"round {summary['round']}: {summary.get('instructions_kept', 0)} of "
              f"{summary.get('instructions_generated', 0)} instructions kept, "
              f"{summary.get('tasks_kept', 0)} tasks with instances", file=sys.stderr)

    try:
        outcome = run(spec, on_round=progress)
    except (CheckpointError, SelfInstructError) as err:
        raise CliError(str(err)) from None
    state = outcome.state
    tokens_per_s = outcome.tokens_generated / outcome.seconds_generating \
        if outcome.seconds_generating else 0.0
    print(f"{len(state.tasks)} tasks in {state.rounds_done} rounds "
          f"({tokens_per_s:.1f} generated tokens/s this run); "
          f"{os.path.join(spec.config.output_dir, TASKS_FILE)}")
    if outcome.prompts_cut:
        print(f"flantune self-instruct: warning: {outcome.prompts_cut} prompt(s) were longer "
              f"than SELF_INSTRUCT_INPUTS_LENGTH={spec.inputs_length} tokens and lost their "
              "start; raise it if the model allows.", file=sys.stderr)
    return 0


def run_sweep_command(args: argparse.Namespace, bindings: Sequence[str]) -> int:
    from flantune.sweep import SweepConfig, SweepError, run_sweep
    from flantune.sweep.grid import axes_from_mapping, parse_axis
    from flantune.sweep.report import write_report

    sweep_dir = args.sweep_dir or _macro("SWEEP_DIR")
    if not sweep_dir:
        raise CliError("Give --sweep_dir=DIR (or bind SWEEP_DIR in the sweep's gin file).")
    try:
        axes = axes_from_mapping(_macro("SWEEP_AXES") or {})
        for text in args.axis:  # --axis overrides a SWEEP_AXES entry of the same name
            extra = parse_axis(text)
            axes = [a for a in axes if a.name != extra.name] + [extra]
        if not axes:
            raise CliError("A sweep needs at least one axis: --axis NAME=[v1, v2] or a "
                           "SWEEP_AXES macro in the gin file.")
        config = SweepConfig(sweep_dir=str(sweep_dir), gin_files=tuple(args.gin_file),
                             axes=tuple(axes), bindings=tuple(bindings),
                             gin_search_paths=tuple(search_paths(args)),
                             module_imports=tuple(args.module_import or ()))
        failed = []
        if not args.report_only:
            outcomes = run_sweep(config, only=args.only)
            failed = [name for name, outcome in outcomes.items() if outcome.startswith("failed")]
        written = write_report(sweep_dir)
    except SweepError as err:
        raise CliError(str(err)) from None
    print(f"report: {written['markdown']} (table also in {written['csv']})")
    if failed:
        print(f"flantune sweep: {len(failed)} variant(s) failed: {', '.join(failed)}; their "
              "logs are above; rerun the same command to retry them.", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from flantune.export.command import main as convert_main

        return convert_main(argv[1:])
    try:
        gin.clear_config()  # a command reads only its own gin files and bindings
        # The console script, unlike `python -m`, does not make the working directory
        # importable: task modules and gin files' `import` lines may live there.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        bindings, rest = split_gin_args(argv)
        args = build_parser().parse_args(rest)
        bindings = [*t5x_bindings(args), *bindings]
        parse_gin(args.gin_file, bindings, search_paths(args))
        vocabulary()
        import_modules(task_modules(args.module_import))
        chat_template()  # after the task modules, which may register templates
        if args.command == "inspect":
            run_inspect(args)
        elif args.command == "train":
            run_train(args, bindings)
        elif args.command == "sweep":
            return run_sweep_command(args, bindings)
        elif args.command in ("eval", "infer"):
            return run_eval(args, bindings)
        elif args.command == "self-instruct":
            return run_self_instruct(args, bindings)
    except (CliError, DataError) as err:
        print(f"flantune {argv[0] if argv else ''}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
