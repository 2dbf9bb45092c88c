"""Mesh shapes from configuration and their errors (one CPU device in this process)."""

from __future__ import annotations

import gin
import jax
import pytest

from flantune.partitioning import (
    MESH_AXES,
    MeshConfig,
    MeshShapeError,
    data_parallel_size,
    make_mesh,
    mesh_shape,
)


def test_remaining_devices_go_to_the_minus_one_axis():
    assert mesh_shape(MeshConfig(), 8) == (1, 8, 1, 1)
    assert mesh_shape(MeshConfig(data=-1, model=2), 8) == (1, 4, 1, 2)
    assert mesh_shape(MeshConfig(replica=2, data=1, fsdp=-1, model=2), 16) == (2, 1, 4, 2)


def test_explicit_sizes_must_multiply_to_the_device_count():
    with pytest.raises(MeshShapeError, match=r"data=3 x fsdp=1 x model=2 needs 6 devices but 8"):
        mesh_shape(MeshConfig(data=3, model=2), 8)
    with pytest.raises(MeshShapeError, match=r"multiply to 3, which does not divide the 8"):
        mesh_shape(MeshConfig(data=-1, model=3), 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"data": -1, "fsdp": -1}, r"-1 for \['data', 'fsdp'\]"),
    ({"model": 0}, r"MeshConfig.model=0 must be a positive int or -1"),
    ({"fsdp": 2.0}, r"MeshConfig.fsdp=2.0"),
])
def test_bad_mesh_config_is_rejected(kwargs, message):
    with pytest.raises(MeshShapeError, match=message):
        MeshConfig(**kwargs)


def test_make_mesh_names_axes_and_uses_all_devices():
    mesh = make_mesh()
    assert mesh.axis_names == MESH_AXES
    assert mesh.devices.size == jax.device_count()
    assert data_parallel_size(mesh) == jax.device_count()


def test_make_mesh_error_names_device_count():
    with pytest.raises(MeshShapeError, match=rf"jax.device_count\(\)={jax.device_count()}"):
        make_mesh(MeshConfig(data=jax.device_count() + 1))


def test_mesh_config_is_gin_configurable():
    gin.clear_config()
    try:
        gin.parse_config(["flantune.MeshConfig.data = 2", "flantune.MeshConfig.model = -1"])
        assert mesh_shape(MeshConfig(), 8) == (1, 2, 1, 4)
    finally:
        gin.clear_config()
