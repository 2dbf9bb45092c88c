"""What the report and its plots know of one variant of a sweep."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class VariantResult:
    name: str
    bindings: dict[str, Any]
    status: str
    model_dir: Path
    seed: int | None = None
    losses: dict[int, float] = dataclasses.field(default_factory=dict)
    eval_step: int | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    realized_shares: dict[str, float] = dataclasses.field(default_factory=dict)
    expected_shares: dict[str, float] = dataclasses.field(default_factory=dict)
    cluster_means: dict[str, float] = dataclasses.field(default_factory=dict)
