"""A sweep's report: variant x held-out-task metrics (markdown and CSV) and PNG plots.

Everything comes from what the runs wrote into their MODEL_DIRs: ``sweep_variant.json``
(bindings, status), ``train/metrics.jsonl`` (loss curve), ``eval/metrics.jsonl`` (per-task
metrics, keys ``TASK/METRIC``; the last evaluated step counts), ``mixture.json`` and the last
checkpoint's data position (realized mixture shares), and ``operative_config.gin`` (seed).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from flantune.sweep import plots
from flantune.sweep.grid import SweepError
from flantune.sweep.results import VariantResult
from flantune.sweep.runner import SWEEP_FILE, variant_record
from flantune.train.loop import MIXTURE_FILE
from flantune.train.metric_writers import METRICS_JSONL, read_metrics


def task_cluster(task: str) -> str | None:
    """The cluster label of a registered flantune task (any variant), else None."""
    from flantune.data.tasks import flan_task_for

    entry = flan_task_for(task)
    return entry[0].cluster if entry is not None else None


def cluster_means(metrics: dict[str, float]) -> dict[str, float]:
    """``{"CLUSTER/METRIC": mean over the cluster's evaluated tasks}`` for labelled tasks."""
    groups: dict[str, list[float]] = {}
    for key, value in metrics.items():
        task, _, metric = key.partition("/")
        cluster = task_cluster(task)
        if cluster is not None:
            groups.setdefault(f"{cluster}/{metric}", []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def _seed(model_dir: Path) -> int | None:
    for name in ("operative_config.gin", "config.gin"):
        path = model_dir / name
        if path.exists():
            match = re.search(r"^\s*(?:flantune\.)?train_config\.seed\s*=\s*(\d+)",
                              path.read_text(), re.M)
            return int(match.group(1)) if match else 0
    return None


def _realized_shares(model_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Realized shares: the per-task example counts of the last checkpoint's data position,
    summed over processes; expected shares from mixture.json."""
    path = model_dir / MIXTURE_FILE
    if not path.exists():
        return {}, {}
    mixture = json.loads(path.read_text())
    expected = dict(zip(mixture["tasks"], mixture["expected_shares"], strict=True))
    steps = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()
                   and (p / "data_state").is_dir())
    if not steps:
        return {}, expected
    import orbax.checkpoint as ocp

    states = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        model_dir / str(steps[-1]) / "data_state")
    totals = [0] * len(mixture["tasks"])
    for text in states.values():
        for i, count in enumerate(json.loads(text)["counts"]):
            totals[i] += count
    total = sum(totals)
    realized = {t: c / total for t, c in zip(mixture["tasks"], totals, strict=True)} \
        if total else {}
    return realized, expected


def collect(sweep_dir: str | Path) -> tuple[dict[str, Any], list[VariantResult]]:
    """The sweep definition and every variant's results found in SWEEP_DIR."""
    sweep_dir = Path(sweep_dir)
    definition_path = sweep_dir / SWEEP_FILE
    if not definition_path.exists():
        raise SweepError(f"{sweep_dir} holds no {SWEEP_FILE}; run `flantune sweep` into it first.")
    definition = json.loads(definition_path.read_text())
    results = []
    for model_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        record = variant_record(model_dir)
        if record is None:
            continue
        result = VariantResult(record["variant"], record["bindings"], record["status"],
                               model_dir, seed=_seed(model_dir))
        train_log = model_dir / "train" / METRICS_JSONL
        if train_log.exists():
            result.losses = {s: m["loss"] for s, m in read_metrics(train_log).items()
                             if "loss" in m}
        eval_log = model_dir / "eval" / METRICS_JSONL
        if eval_log.exists():
            evaluated = read_metrics(eval_log)
            if evaluated:
                result.eval_step = max(evaluated)
                result.metrics = {k: v for k, v in evaluated[result.eval_step].items()
                                  if "/" in k}
        result.realized_shares, result.expected_shares = _realized_shares(model_dir)
        result.cluster_means = cluster_means(result.metrics)
        results.append(result)
    order = {name: i for i, name in enumerate(_variant_order(definition))}
    results.sort(key=lambda r: order.get(r.name, len(order)))
    return definition, results


def _variant_order(definition: dict[str, Any]) -> list[str]:
    from flantune.sweep.grid import axes_from_mapping, variants

    axes = axes_from_mapping({a["name"]: a["values"] for a in definition["axes"]})
    return [v.name for v in variants(axes)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def metric_columns(results: list[VariantResult]) -> list[str]:
    return sorted({k for r in results for k in r.metrics})


def write_csv(path: Path, definition: dict[str, Any], results: list[VariantResult]) -> None:
    axes = [a["name"] for a in definition["axes"]]
    columns = metric_columns(results)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        clusters = sorted({k for r in results for k in r.cluster_means})
        writer.writerow(["variant", *axes, "status", "seed", "final_train_loss", "eval_step",
                         *columns, *(f"cluster:{c}" for c in clusters)])
        for r in results:
            final = r.losses[max(r.losses)] if r.losses else ""
            writer.writerow([r.name, *(json.dumps(r.bindings.get(a)) for a in axes), r.status,
                             r.seed, final, r.eval_step,
                             *(r.metrics.get(c, "") for c in columns),
                             *(r.cluster_means.get(c, "") for c in clusters)])


def markdown(definition: dict[str, Any], results: list[VariantResult],
             plots: list[str]) -> str:
    axes = [a["name"] for a in definition["axes"]]
    columns = metric_columns(results)
    lines = ["# Sweep report", "",
             "Base gin files: " + ", ".join(f"`{g}`" for g in definition["gin_files"]),
             "Common bindings: " + (", ".join(f"`{b}`" for b in definition["bindings"])
                                    or "none"),
             "Axes: " + ", ".join(f"`{a}`" for a in axes), "",
             "Each variant's `config.gin` / `operative_config.gin` in its directory is the exact "
             "configuration that produced its row.", "",
             "| variant | " + " | ".join(axes) + " | seed | final loss | "
             + " | ".join(c.replace("|", "/") for c in columns) + " |",
             "|---" * (len(axes) + 3 + len(columns)) + "|"]
    for r in results:
        final = f"{r.losses[max(r.losses)]:.4f}" if r.losses else "-"
        cells = [r.name if r.status == "finished" else f"{r.name} ({r.status})",
                 *(_fmt(r.bindings.get(a)) for a in axes), str(r.seed), final,
                 *(_fmt(r.metrics[c]) if c in r.metrics else "-" for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    clusters = sorted({k for r in results for k in r.cluster_means})
    if clusters:
        lines += ["Per-cluster means (tasks grouped by their cluster label):", "",
                  "| variant | " + " | ".join(clusters) + " |",
                  "|---" * (len(clusters) + 1) + "|"]
        lines += ["| " + " | ".join([r.name, *(_fmt(r.cluster_means[c]) if c in r.cluster_means
                                               else "-" for c in clusters)]) + " |"
                  for r in results]
        lines.append("")
    for plot in plots:
        lines += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Writes report.md, results.csv and the plots into SWEEP_DIR; returns their paths."""
    sweep_dir = Path(sweep_dir)
    definition, results = collect(sweep_dir)
    if not results:
        raise SweepError(f"No variant has run in {sweep_dir} yet.")
    written = {"csv": sweep_dir / "results.csv", "markdown": sweep_dir / "report.md"}
    write_csv(written["csv"], definition, results)
    images = plots.write_plots(sweep_dir, definition, results)
    written["markdown"].write_text(markdown(definition, results, [str(p) for p in images]))
    written.update({p.stem: p for p in images})
    return written
