"""What a Self-Instruct run writes into its output directory, each file atomically (written
beside, then renamed), so an interrupted run never leaves a half-written file:

- ``self_instruct.jsonl``: the kept tasks in the ``self_instruct`` record format (one task a
  line: ``id``, ``instruction``, ``instances``, ``is_classification``, ``round``);
- ``report.json`` / ``report.md``: kept and rejected counts per reason per round, totals,
  the ROUGE-L histogram and example tasks;
- ``rouge_l_histogram.png``: each new instruction's highest ROUGE-L F against the pool;
- ``state.json``: what a resumed run needs.

Only process 0 writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import jax
import numpy as np

TASKS_FILE = "self_instruct.jsonl"
HISTOGRAM_BINS = 20
REPORT_EXAMPLES = 5


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); it is not a Self-Instruct state "
                         "file. Remove it to start the run afresh.") from None


def histogram(similarities: list[float]) -> dict[str, list[float]]:
    counts, edges = np.histogram(np.asarray(similarities, np.float64), bins=HISTOGRAM_BINS,
                                 range=(0.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def totals(rounds: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter = Counter()
    for summary in rounds:
        total.update({k: v for k, v in summary.items() if k != "round"})
    return dict(sorted(total.items()))


def report(state: Any, config: Any) -> dict[str, Any]:
    return {"tasks": len(state.tasks), "rounds": state.rounds_done,
            "pool_generated": len(state.pool), "generated_tokens": state.generated_tokens,
            "similarity_threshold": config.similarity_threshold,
            "totals": totals(state.rounds), "per_round": state.rounds,
            "rouge_l_histogram": histogram(state.similarities),
            "examples": state.tasks[:REPORT_EXAMPLES]}


def report_markdown(data: dict[str, Any]) -> str:
    lines = [f"# Self-Instruct: {data['tasks']} tasks in {data['rounds']} rounds", "",
             f"Generated instructions in the pool: {data['pool_generated']}; generated tokens: "
             f"{data['generated_tokens']}; novelty: ROUGE-L F <= {data['similarity_threshold']}.",
             "", "## Totals", "", "| count | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in data["totals"].items()]
    keys = sorted({k for r in data["per_round"] for k in r if k != "round"})
    lines += ["", "## Per round", "", "| round | " + " | ".join(keys) + " |",
              "|---|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, 0)) for k in ["round", *keys]) + " |"
              for r in data["per_round"]]
    lines += ["", "## Examples", ""]
    for task in data["examples"]:
        kind = "classification" if task["is_classification"] else "generation"
        lines.append(f"- **{task['instruction']}** ({kind})")
        for instance in task["instances"]:
            lines.append(f"  - input: {instance['input']!r} -> output: {instance['output']!r}")
    lines += ["", "![ROUGE-L histogram](rouge_l_histogram.png)", ""]
    return "\n".join(lines)


def histogram_png(similarities: list[float], threshold: float) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(similarities, bins=HISTOGRAM_BINS, range=(0.0, 1.0), color="#4477aa")
    axes.axvline(threshold, color="#cc3311", linestyle="--", label=f"threshold {threshold}")
    axes.set_xlabel("highest ROUGE-L F against the pool")
    axes.set_ylabel("new instructions")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    # No timestamps in the PNG: the same run writes the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def write_outputs(directory: Path, saved_state: dict[str, Any], state: Any,
                  config: Any) -> None:
    """Writes the task file, the report and then the state (last: a run interrupted before it
    redoes the round, rewriting the same files)."""
    if jax.process_index() != 0:
        return
    lines = "".join(json.dumps(task, ensure_ascii=False) + "\n" for task in state.tasks)
    atomic_write(directory / TASKS_FILE, lines.encode("utf-8"))
    data = report(state, config)
    atomic_write(directory / "report.json", json.dumps(data, indent=1).encode())
    atomic_write(directory / "report.md", report_markdown(data).encode())
    atomic_write(directory / "rouge_l_histogram.png",
                 histogram_png(state.similarities, config.similarity_threshold))
    atomic_write(directory / "state.json", json.dumps(saved_state).encode())
