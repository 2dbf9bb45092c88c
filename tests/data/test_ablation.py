"""Ablation mixtures: exact shares from their knobs, held-out clusters, templates per task."""

from __future__ import annotations

import gin
import pytest
import seqio

import flantune.tasks  # noqa: F401  (registers the demo tasks)
from flantune.data import DataError
from flantune.data.ablation import (
    ablation_mixture,
    base_tasks,
    cluster_mixture,
    clusters_of,
)
from flantune.data.mixtures import task_shares
from flantune.data.tasks import flan_task_for

DEMO_CLUSTERS = {"arithmetic", "number_theory", "logic", "words"}


def _cluster_of(seqio_name: str) -> str:
    return flan_task_for(seqio_name)[0].cluster


def test_demo_clusters_are_known():
    assert set(clusters_of(base_tasks("demo"))) == DEMO_CLUSTERS


def test_excluded_cluster_has_no_task_and_eval_side_has_only_it():
    train = ablation_mixture("demo", exclude_clusters=["words"], zero_shot_share=0.8)
    shares = task_shares(train)
    assert shares and all(_cluster_of(n) != "words" for n in shares)
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    held = cluster_mixture("demo", clusters=["words"])
    held_tasks = list(task_shares(held))
    assert held_tasks and all(_cluster_of(n) == "words" for n in held_tasks)
    assert all(n.endswith("_zsnoopt") for n in held_tasks)


def test_zero_shot_share_is_exact():
    for share in (0.0, 0.3, 1.0):
        shares = task_shares(ablation_mixture("demo", zero_shot_share=share))
        zero = sum(s for n, s in shares.items() if "_zs" in n)
        # Every demo training task has few-shot variants, so the split is exact.
        assert zero == pytest.approx(share, abs=1e-9)


def test_task_rates_follow_cap_and_explicit_weights():
    shares = task_shares(ablation_mixture("demo", cap=6000, zero_shot_share=1.0,
                                          options_share=0.5))
    per_task: dict[str, float] = {}
    for name, share in shares.items():
        base = flan_task_for(name)[0].name
        per_task[base] = per_task.get(base, 0.0) + share
    sizes = {t.name: min(t.num_records("train"), 6000) for t in base_tasks("demo")}
    total = sum(sizes.values())
    for name, size in sizes.items():
        assert per_task[name] == pytest.approx(size / total, rel=1e-9)
    explicit = task_shares(ablation_mixture(
        "demo", include_clusters=["logic"], rates={"rg_syllogism": 3.0,
                                                   "rg_family_relationships": 1.0}))
    syllogism = sum(s for n, s in explicit.items() if n.startswith("rg_syllogism"))
    assert syllogism == pytest.approx(0.75)


def test_templates_per_task_registers_restricted_tasks():
    name = ablation_mixture("demo", templates_per_task=1, include_clusters=["arithmetic"])
    for seqio_name in task_shares(name):
        flan_task, variant = flan_task_for(seqio_name)
        assert len(flan_task.templates) == 1
        assert flan_task.name.endswith("_t1")
        record = flan_task.render("train", 0, variant)
        assert record["inputs"] and record["targets"]


def test_same_arguments_same_name_and_different_arguments_differ():
    assert ablation_mixture("demo", cap=100) == ablation_mixture("demo", cap=100)
    assert ablation_mixture("demo", cap=100) != ablation_mixture("demo", cap=200)
    assert ablation_mixture("demo", cap=100) in seqio.MixtureRegistry.names()


@pytest.mark.parametrize("kwargs, message", [
    ({"exclude_clusters": ["wordz"]}, "no cluster 'wordz'"),
    ({"include_clusters": ["logic"], "exclude_clusters": ["logic"]}, "No task"),
    ({"zero_shot_share": 1.5}, r"zero_shot_share must lie in \[0, 1\]"),
    ({"rates": {"rg_nope": 1.0}}, "rg_nope"),
    ({"templates_per_task": 0}, "at least 1"),
])
def test_bad_knobs_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        ablation_mixture("demo", **kwargs)


def test_gin_reference_builds_the_mixture():
    import flantune.gin_config  # noqa: F401  (registers the configurables)
    from flantune.cli import _macro

    gin.clear_config()
    try:
        gin.parse_config([
            "MIXTURE_OR_TASK_NAME = @flantune.ablation_mixture()",
            "flantune.ablation_mixture.exclude_clusters = ['logic']",
            "flantune.ablation_mixture.zero_shot_share = 0.5",
        ])
        name = _macro("MIXTURE_OR_TASK_NAME")
        assert name == ablation_mixture("demo", exclude_clusters=["logic"], zero_shot_share=0.5)
    finally:
        gin.clear_config()
