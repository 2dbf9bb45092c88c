"""Decoding on an 8-device CPU mesh (data parallel; 2-D: data 4 x model 2) equals decoding on
one device, for both model families and every method."""

from __future__ import annotations

import pytest

from flantune.testing import run_python
from tests.decoding.eight_devices import CONFIGS
from tests.partitioning import tiny_models as tm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report() -> dict:
    code = "from tests.decoding.eight_devices import main; main()"
    return run_python(code, devices_per_process=8, timeout=900)[0]


@pytest.mark.parametrize("model", sorted(tm.MODELS))
@pytest.mark.parametrize("method", sorted(CONFIGS))
@pytest.mark.parametrize("mesh", ["data8", "data4_model2"])
def test_sharded_decoding_equals_one_device(report, model, method, mesh):
    entry = report[model][method]
    assert entry["rows_differ"]
    assert entry[mesh]["tokens_equal"], entry
    assert entry[mesh]["score_max_abs_diff"] < 1e-4, entry
