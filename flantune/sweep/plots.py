"""The sweep report's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flantune.sweep.results import VariantResult  # noqa: E402


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _base_task(name: str) -> str:
    """rg_lcm_zsnoopt -> rg_lcm (variants of a task are summed in the shares plot)."""
    for suffix in ("_zsopt", "_zsnoopt", "_fsopt", "_fsnoopt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def metric_plot(path: Path, definition: dict, results: list[VariantResult]) -> Path | None:
    """Each eval metric against the first axis' value; one line per held-out task (and per
    value of any further axes)."""
    columns = sorted({k for r in results for k in r.metrics})
    if not columns:
        return None
    axes = [a["name"] for a in definition["axes"]]
    first = axes[0]
    x_values = [_label(v) for v in definition["axes"][0]["values"]]
    metrics = sorted({c.split("/", 1)[1] for c in columns})
    fig, panels = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    for panel, metric in zip(panels[0], metrics, strict=True):
        for column in (c for c in columns if c.split("/", 1)[1] == metric):
            task = column.split("/", 1)[0]
            groups: dict[str, list[tuple[int, float]]] = {}
            for r in results:
                if column not in r.metrics:
                    continue
                rest = ", ".join(f"{a.rsplit('.', 1)[-1]}={_label(r.bindings.get(a))}"
                                 for a in axes[1:])
                x = x_values.index(_label(r.bindings.get(first)))
                groups.setdefault(rest, []).append((x, r.metrics[column]))
            for rest, points in groups.items():
                points.sort()
                label = task if not rest else f"{task} ({rest})"
                panel.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                           label=label)
        panel.set_xticks(range(len(x_values)), x_values, rotation=20, ha="right")
        panel.set_xlabel(first.rsplit(".", 1)[-1])
        panel.set_ylabel(metric)
        panel.set_title(f"held-out {metric}")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_plot(path: Path, results: list[VariantResult]) -> Path | None:
    runs = [r for r in results if r.losses]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        steps = sorted(r.losses)
        ax.plot(steps, [r.losses[s] for s in steps], label=r.name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss per variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def shares_plot(path: Path, results: list[VariantResult]) -> Path | None:
    """Realized mixture shares per variant, stacked by task (variants of a task summed)."""
    runs = [r for r in results if r.realized_shares]
    if not runs:
        return None
    per_run = []
    for r in runs:
        merged: dict[str, float] = {}
        for task, share in r.realized_shares.items():
            merged[_base_task(task)] = merged.get(_base_task(task), 0.0) + share
        per_run.append(merged)
    tasks = sorted({t for m in per_run for t in m})
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(runs) + 2.5))
    colors = plt.get_cmap("tab20")
    left = [0.0] * len(runs)
    for i, task in enumerate(tasks):
        widths = [m.get(task, 0.0) for m in per_run]
        ax.barh(range(len(runs)), widths, left=left, color=colors(i % 20), label=task)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(runs)), [r.name for r in runs], fontsize=7)
    ax.set_xlabel("realized share of examples")
    ax.set_xlim(0, 1)
    ax.set_title("realized mixture per variant")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cluster_plot(path: Path, results: list[VariantResult]) -> Path | None:
    """Mean metric per task cluster, one bar per variant (one panel per metric)."""
    runs = [r for r in results if r.cluster_means]
    if not runs:
        return None
    keys = sorted({k for r in runs for k in r.cluster_means})
    metrics = sorted({k.split("/", 1)[1] for k in keys})
    fig, panels = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    for panel, metric in zip(panels[0], metrics, strict=True):
        clusters = sorted({k.split("/", 1)[0] for k in keys if k.endswith("/" + metric)})
        width = 0.8 / len(runs)
        for i, r in enumerate(runs):
            values = [r.cluster_means.get(f"{c}/{metric}", 0.0) for c in clusters]
            panel.bar([j + i * width for j in range(len(clusters))], values, width,
                      label=r.name)
        panel.set_xticks([j + 0.4 - width / 2 for j in range(len(clusters))], clusters)
        panel.set_ylabel(f"mean {metric}")
        panel.set_title(f"{metric} by task cluster")
        panel.grid(alpha=0.3, axis="y")
        panel.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(sweep_dir: Path, definition: dict, results: list[VariantResult]) -> list[Path]:
    made = [metric_plot(sweep_dir / "heldout_metrics.png", definition, results),
            loss_plot(sweep_dir / "training_loss.png", results),
            shares_plot(sweep_dir / "mixture_shares.png", results),
            cluster_plot(sweep_dir / "cluster_metrics.png", results)]
    return [p for p in made if p is not None]
