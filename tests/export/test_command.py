"""The convert command (`flantune.export.command`, run by tools/convert_checkpoint.py):
Hugging Face -> flantune -> Hugging Face through `main(argv)`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from flantune.export import command
from tests.models import hf_reference as ref

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"


def _tool():
    """tools/convert_checkpoint.py, loaded by path (tools/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location("convert_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is command.main
    return module


def test_parse_size():
    tool = _tool()
    assert tool.parse_size("5GB") == 5 * 10**9
    assert tool.parse_size("2GiB") == 2 * 2**30
    assert tool.parse_size("1234") == 1234
    with pytest.raises(Exception, match="invalid size"):
        tool.parse_size("five")


def test_hf_to_flantune_to_hf_is_lossless(tmp_path, capsys):
    tool = _tool()
    source = ref.save(ref.t5("v1_1", seed=2), tmp_path / "hf")
    assert tool.main(["hf-to-flantune", str(source), str(tmp_path / "ours")]) == 0
    assert tool.main(["flantune-to-hf", str(tmp_path / "ours"), str(tmp_path / "back"),
                      "--max-shard-size", "30KB", "--no-tokenizer"]) == 0
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    with safe_open(str(source / "model.safetensors"), framework="numpy") as original:
        for name, shard in index["weight_map"].items():
            with safe_open(str(tmp_path / "back" / shard), framework="numpy") as handle:
                np.testing.assert_array_equal(handle.get_tensor(name), original.get_tensor(name))
    assert "safetensors file(s)" in capsys.readouterr().out


def test_bad_checkpoint_exits_with_the_error(tmp_path, capsys):
    tool = _tool()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert tool.main(["hf-to-flantune", str(tmp_path / "hf"), str(tmp_path / "out")]) == 1
    assert "unknown architecture" in capsys.readouterr().err


def test_flantune_cli_dispatches_convert(tmp_path, capsys):
    from flantune import cli

    source = ref.save(ref.decoder("llama", seed=3), tmp_path / "hf")
    assert cli.main(["convert", "hf-to-flantune", str(source), str(tmp_path / "ours")]) == 0
    assert "DecoderConfig" in capsys.readouterr().out
    assert cli.main(["convert", "flantune-to-hf", str(tmp_path / "ours"),
                     str(tmp_path / "back"), "--no-tokenizer"]) == 0
    assert (tmp_path / "back" / "config.json").exists()
    with pytest.raises(SystemExit):
        cli.main(["convert", "sideways"])
    assert "flantune convert" in capsys.readouterr().err
