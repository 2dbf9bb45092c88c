"""LoRA training: an untrained adapter is the base model exactly, the frozen base gets no
gradients, meshes, scanned layers and remat agree, adapter-only checkpoints resume bit for bit
and refuse another base, and adapters evaluate and export through the commands."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import tests.task_fixtures  # noqa: F401
from flantune.data import BatchIterator
from flantune.models import T5Config, build_model, save_hf_checkpoint
from flantune.models.config import DecoderConfig
from flantune.models.convert.native import save_params
from flantune.peft import LoraConfig, TargetError, build_adapted_model, select
from flantune.testing.multiprocess import run_python
from flantune.train.checkpoints import CheckpointConfig, CheckpointError, load_initial_params
from flantune.train.loop import TrainConfig, TrainError, train
from flantune.train.optimizers import OptimizerConfig, ScheduleConfig
from flantune.train.state import ModelSpec, init_state, state_shardings
from flantune.train.step import StepConfig, make_train_step

MODEL = T5Config(vocab_size=8000, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                 num_encoder_layers=2, num_decoder_layers=2)
DECODER = DecoderConfig(vocab_size=8000, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                        mlp_dim=64, num_layers=2)
LENGTHS = {"inputs": 48, "targets": 16}
LORA = LoraConfig(r=4, alpha=8.0, target_modules="all-linear")


def _inputs(config):
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(2, 8000, (2, 11)))
    if isinstance(config, T5Config):
        return tokens, jnp.asarray(rng.integers(2, 8000, (2, 7)))
    return (tokens,)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
@pytest.mark.parametrize("config", [MODEL, DECODER], ids=["t5", "llama"])
def test_an_untrained_adapter_is_exactly_the_base_model(config, scan_layers):
    config = dataclasses.replace(config, scan_layers=scan_layers)
    adapted = build_adapted_model(config, LORA, nnx.Rngs(0))
    base = build_model(config, nnx.Rngs(0))
    inputs = _inputs(config)
    assert np.array_equal(np.asarray(adapted(*inputs)), np.asarray(base(*inputs)))


def test_target_selection_defaults_presets_and_errors():
    names = [p.hf_module for p in select(MODEL, None)]
    # peft's default for T5: q and v of every attention, cross-attention included.
    assert len(names) == 2 * (2 + 2 * 2)
    assert "decoder.block.1.layer.1.EncDecAttention.v" in names
    assert {p.hf_module.rsplit(".", 1)[1] for p in select(DECODER, None)} == {"q_proj", "v_proj"}
    every = select(MODEL, "all-linear")
    assert "lm_head" not in [p.hf_module for p in every]
    assert all(p.is_attention for p in select(MODEL, "all-attention"))
    assert [p.name for p in select(MODEL, ["encoder/layers/layers/1/mlp/wi_0"])] == [
        "encoder/layers/layers/1/mlp/wi_0"]
    assert len(select(MODEL, r"decoder\.block\.0\..*\.q")) == 2  # self and cross attention
    with pytest.raises(TargetError, match=r"'qq' matches no projection.*'query'"):
        select(MODEL, ["q", "qq"])
    scanned = dataclasses.replace(MODEL, scan_layers=True)
    with pytest.raises(TargetError, match="only some layers"):
        select(scanned, r"encoder\.block\.0\..*")
    with pytest.raises(ValueError, match="positive integer"):
        LoraConfig(r=0)


def test_the_fused_product_has_the_gradients_of_the_separate_one():
    from flantune.peft.lora import fused_lora_matmul

    keys = jax.random.split(jax.random.key(0), 5)
    x, kernel = jax.random.normal(keys[0], (12, 8)), jax.random.normal(keys[1], (8, 6))
    a, b = jax.random.normal(keys[2], (8, 3)), jax.random.normal(keys[3], (3, 6))

    def loss(fn):
        return lambda *args: jnp.sum(jnp.sin(fn(*args)))

    separate = loss(lambda x, k, a, b: x @ k + (x @ a) @ b)
    fused = loss(fused_lora_matmul)
    np.testing.assert_allclose(fused(x, kernel, a, b), separate(x, kernel, a, b), rtol=1e-5)
    for argnums in ((2, 3), (0, 2, 3), (0, 1, 2, 3), (1,)):
        want = jax.grad(separate, argnums)(x, kernel, a, b)
        got = jax.grad(fused, argnums)(x, kernel, a, b)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _jaxpr_product_shapes(spec: ModelSpec, frozen_full: bool) -> tuple[set, set]:
    """Shapes of the train step's dot_general outputs that sum over more than the LoRA rank,
    and the frozen 2-D kernel shapes (as GEMM operands: [in, out] with heads flattened)."""
    optimizer = optax.adamw(1e-3)
    step = make_train_step(spec, optimizer, optax.constant_schedule(1e-3), StepConfig())
    batch = next(BatchIterator("test_mix", task_feature_lengths=LENGTHS, batch_size=3,
                               window=64, converter=spec.family))
    params = spec.init_params(jax.random.key(0))
    trainable, frozen = spec.split(params)
    state = {"params": trainable, "opt_state": optimizer.init(trainable),
             "step": jnp.zeros((), jnp.int32), "rng": jax.random.PRNGKey(0)}
    jaxpr = jax.make_jaxpr(step)(state, dict(batch), frozen)
    shapes = set()

    def visit(j):
        for eqn in j.eqns:
            if eqn.primitive.name == "dot_general":
                (contracting, _), _ = eqn.params["dimension_numbers"]
                size = int(np.prod([eqn.invars[0].aval.shape[d] for d in contracting]))
                # Products over more than the rank (a weight gradient sums over tokens); the
                # merged kernel's A @ B has a kernel's shape but sums over the rank only.
                if size > LORA.r:
                    shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
            for sub in jax.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    frozen_kernels = {(s[0], int(np.prod(s[1:]))) for s in
                      (x.shape for x in jax.tree.leaves(frozen if not frozen_full else params))
                      if len(s) >= 2 and s[0] != 8000}
    return shapes, frozen_kernels


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
def test_the_frozen_base_gets_no_weight_gradients(scan_layers):
    model = dataclasses.replace(MODEL, scan_layers=scan_layers)
    shapes, kernels = _jaxpr_product_shapes(ModelSpec.from_config(model, LORA), False)
    if scan_layers:  # products inside the scanned layer see one layer's kernel
        kernels |= {(s[1], int(np.prod(s[2:]))) for s in
                    (x.shape for x in jax.tree.leaves(ModelSpec.from_config(
                        model, LORA).abstract_frozen())) if len(s) >= 3 and s[1] != 8000}
    assert kernels and not (shapes & kernels), shapes & kernels
    # The check can fail: full fine-tuning computes exactly those products.
    full_shapes, full_kernels = _jaxpr_product_shapes(ModelSpec.from_config(model), True)
    if scan_layers:
        full_kernels |= {(s[1], int(np.prod(s[2:]))) for s in
                         (x.shape for x in jax.tree.leaves(ModelSpec.from_config(
                             model).abstract_params())) if len(s) >= 3 and s[1] != 8000}
    assert full_shapes & full_kernels


def test_the_train_state_holds_only_the_adapter():
    spec = ModelSpec.from_config(MODEL, LoraConfig(r=8))
    optimizer = optax.adamw(1e-3)
    from flantune import partitioning

    mesh = partitioning.make_mesh(partitioning.MeshConfig())
    rules = partitioning.axis_rules("data_parallel")
    state = init_state(spec, optimizer, state_shardings(spec, optimizer, mesh, rules))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        state["params"])]
    assert paths and all("_lora" in p for p in paths)
    opt_leaves = [x for x in jax.tree.leaves(state["opt_state"]) if x.ndim > 0]
    assert sum(x.size for x in opt_leaves) == 2 * sum(x.size for x in jax.tree.leaves(
        state["params"]))


def _base_checkpoint(tmp_path, config=MODEL, seed=7, name="base"):
    """A Hugging Face base checkpoint (loads into per-layer and scanned models)."""
    params = build_model(config, nnx.Rngs(seed))
    from flantune.models.build import model_params

    directory = tmp_path / name
    save_hf_checkpoint(config, jax.tree.map(np.asarray, model_params(params)), directory)
    return str(directory)


def _run(model_dir, base, **overrides) -> TrainConfig:
    options = dict(
        model_dir=str(model_dir), mixture_or_task_name="test_mix", task_feature_lengths=LENGTHS,
        train_steps=6, batch_size=4, model=MODEL, window=64, log_every_steps=1, progress=False,
        initial_checkpoint_path=base, adapter=LORA,
        optimizer=OptimizerConfig(name="adamw", schedule=ScheduleConfig(base_learning_rate=3e-2)),
        checkpoint=CheckpointConfig(save_interval_steps=3))
    options.update(overrides)
    return TrainConfig(**options)


@pytest.mark.slow
def test_adapter_runs_resume_bit_identically_and_refuse_another_base(tmp_path):
    base = _base_checkpoint(tmp_path)
    straight = train(_run(tmp_path / "straight", base, adapter=dataclasses.replace(
        LORA, dropout=0.2)))
    assert straight.losses[6] < straight.losses[1]
    first = train(_run(tmp_path / "resumed", base, train_steps=4,
                       adapter=dataclasses.replace(LORA, dropout=0.2)))
    second = train(_run(tmp_path / "resumed", base, adapter=dataclasses.replace(
        LORA, dropout=0.2)))
    assert {**first.losses, **second.losses} == straight.losses  # bit-identical
    # The step holds the adapter only (and its optimizer state).
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().metadata(tmp_path / "straight" / "6" / "state")
    flat = jax.tree_util.tree_leaves_with_path(tree.item_metadata.tree["params"])
    assert flat and all("_lora" in jax.tree_util.keystr(p) for p, _ in flat)
    reference = json.loads((tmp_path / "straight" / "adapter.json").read_text())
    assert reference["base"]["path"] == base
    other = _base_checkpoint(tmp_path, seed=8, name="other")
    with pytest.raises(TrainError, match="the base parameters differ"):
        train(_run(tmp_path / "straight", other, train_steps=9,
                   adapter=dataclasses.replace(LORA, dropout=0.2)))
    with pytest.raises(TrainError, match="the adapter differs"):
        train(_run(tmp_path / "straight", base, train_steps=9))
    with pytest.raises(TrainError, match="holds an adapter run"):
        train(_run(tmp_path / "straight", base, train_steps=9, adapter=None))
    # An adapter run is no base for another run, nor a full checkpoint to evaluate.
    with pytest.raises(CheckpointError, match="is an adapter checkpoint"):
        load_initial_params(tmp_path / "straight", ModelSpec.from_config(MODEL).abstract_params())


@pytest.mark.slow
def test_scanned_layers_and_remat_train_as_per_layer_ones(tmp_path):
    base = _base_checkpoint(tmp_path)
    plain = train(_run(tmp_path / "plain", base, train_steps=3))
    scanned = train(_run(tmp_path / "scanned", base, train_steps=3,
                         model=dataclasses.replace(MODEL, scan_layers=True, remat=True)))
    for step, loss in plain.losses.items():
        assert scanned.losses[step] == pytest.approx(loss, rel=1e-5), step


@pytest.mark.slow
def test_lora_on_one_device_equals_lora_on_sharded_meshes(tmp_path):
    base = _base_checkpoint(tmp_path)
    case = "import runpy; runpy.run_module('tests.peft.lora_cases', run_name='__main__')"
    (one,) = run_python(case, devices_per_process=1,
                        args=("losses", "one_device", str(tmp_path / "one"), base), timeout=600)
    assert one[-1] < one[0]
    for mesh in ("fsdp8", "data4_model2"):
        (sharded,) = run_python(case, devices_per_process=8,
                                args=("losses", mesh, str(tmp_path / mesh), base), timeout=600)
        assert sharded == pytest.approx(one, abs=1e-5), mesh


@pytest.mark.slow
def test_an_adapter_evaluates_and_exports_as_its_merged_model(tmp_path):
    from flantune.evaluation.command import EvalRun, run
    from flantune.evaluation.evaluator import EvalConfig
    from flantune.export.hf import export_to_hf

    base = tmp_path / "base"
    save_params(MODEL, jax.tree.map(np.asarray, _params(MODEL, 3)), base)
    lora_run = tmp_path / "lora"
    train(_run(lora_run, str(base), train_steps=4))
    merged_dir = tmp_path / "merged"
    export_to_hf(lora_run, merged_dir, max_shard_size=10**9, tokenizer=False, merge=True)
    eval_config = EvalConfig(mixture_or_task_name="test_reverse", max_examples_per_task=6,
                             batch_size=3)

    def evaluate(checkpoint, adapter=None):
        results, _ = run(EvalRun(checkpoint_path=str(checkpoint), output_dir=str(tmp_path / "o"),
                                 eval=eval_config, model=MODEL, task_feature_lengths=LENGTHS,
                                 adapter_path=adapter), infer=True)
        return results.tasks["test_reverse"]

    adapted = evaluate(base, str(lora_run))
    assert not adapted.errors, adapted.errors
    merged = evaluate(merged_dir)
    plain = evaluate(base)
    assert [p["prediction"] for p in adapted.predictions] == \
        [p["prediction"] for p in merged.predictions]
    assert [p["prediction"] for p in adapted.predictions] != \
        [p["prediction"] for p in plain.predictions]
    # The peft export of the run loads onto the exported base in peft and gives its logits.
    peft = pytest.importorskip("peft")
    hf_base = tmp_path / "hf_base"
    export_to_hf(base, hf_base, max_shard_size=10**9, tokenizer=False)
    export_to_hf(lora_run, tmp_path / "peft", max_shard_size=10**9)
    import torch
    import transformers

    from tests.models.hf_reference import t5_logits

    model = peft.PeftModel.from_pretrained(
        transformers.T5ForConditionalGeneration.from_pretrained(str(hf_base)),
        str(tmp_path / "peft")).eval()
    merged_hf = transformers.T5ForConditionalGeneration.from_pretrained(str(merged_dir)).eval()
    tokens, decoder = (np.asarray(x) for x in _inputs(MODEL))
    with torch.no_grad():
        np.testing.assert_allclose(t5_logits(model, tokens, decoder),
                                   t5_logits(merged_hf, tokens, decoder), atol=1e-4, rtol=0)
    # Another base under the adapter is refused by the evaluation.
    other = tmp_path / "other"
    save_params(MODEL, jax.tree.map(np.asarray, _params(MODEL, 4)), other)
    with pytest.raises(CheckpointError, match="the base parameters differ"):
        evaluate(other, str(lora_run))


def _params(config, seed):
    from flantune.models.build import model_params

    return model_params(build_model(config, nnx.Rngs(seed)))
