"""The FLAN library without its data: importing reads nothing, and a dataset that is not
prepared fails with what to run, not a TensorFlow stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

import flantune.tasks.flan  # noqa: F401 - registers the library
from flantune.data import TfdsSource
from flantune.data.errors import DataError
from flantune.data.tasks import flan_task_for
from flantune.tasks.flan.common import DATASETS

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_library_needs_no_data(tmp_path):
    code = ("import flantune.tasks.flan, seqio; from flantune.tasks.flan.common import DATASETS; "
            "print(len(DATASETS), 'flan2021_without_nli' in seqio.MixtureRegistry.names())")
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "empty"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout.split() == [str(len(DATASETS)), "True"]
    assert not (tmp_path / "empty").exists()


def test_a_task_whose_dataset_is_not_prepared_says_what_to_run(monkeypatch):
    if tfds.builder(DATASETS["rte"].name).is_prepared():
        pytest.skip("super_glue/rte is prepared on this machine")
    flan_task, _ = flan_task_for("rte")
    monkeypatch.setattr(flan_task, "_sources", {})
    with pytest.raises(DataError) as caught:
        flan_task.source("train")
    message = str(caught.value)
    assert message.startswith("task 'rte': TFDS dataset 'super_glue/rte:1.0.2' is not prepared")
    assert "tfds build super_glue/rte:1.0.2" in message


def test_the_message_names_the_data_dir_and_a_manual_step(tmp_path):
    with pytest.raises(DataError) as caught:
        TfdsSource(DATASETS["xsum"].name, "train", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "xsum" / "1.1.0") in message
    assert f"tfds build xsum:1.1.0 --data_dir={tmp_path} --manual_dir=DIR" in message
    assert "download_and_prepare --datasets=xsum:1.1.0" in message
    assert "xsum-extracts-from-downloads.tar.gz" in message  # TFDS's own instructions


def test_inspect_lists_the_library_with_clusters_templates_metrics_and_data(capsys):
    from flantune import cli

    assert cli.main(["inspect", "--library", "--cluster", "nli"]) == 0
    out = capsys.readouterr().out
    for name in ("anli_r1", "anli_r2", "anli_r3", "rte", "cb", "snli", "mnli", "qnli", "wnli"):
        assert f"│ {name} " in out
    assert "tfds:super_glue/cb:1.0.2" in out and "accuracy, macro_f1" in out
    assert "9 tasks in 1 clusters" in out and "sst2" not in out
    assert cli.main(["inspect", "--library", "--cluster", "no_such"]) == 2
    assert "No task in cluster 'no_such'" in capsys.readouterr().err


def test_library_rows_tell_whether_the_data_is_present():
    from flantune.inspect_view import library_rows

    rows = {row.task: row for row in library_rows()}
    assert rows["squad_v1"].source == "tfds:squad/v1.1:3.0.0"
    assert rows["squad_v1"].metrics == ("squad",) and rows["squad_v1"].cluster == (
        "reading_comprehension")
    prepared = tfds.builder("squad/v1.1:3.0.0").is_prepared()
    assert rows["squad_v1"].data == ("yes" if prepared else "no")
    assert all(row.data == "-" for row in rows.values() if not row.source.startswith("tfds:"))


def test_inspecting_a_mixture_without_its_data_is_a_clear_error(capsys):
    from flantune import cli

    if tfds.builder(DATASETS["anli_r1"].name).is_prepared():
        pytest.skip("anli/r1 is prepared on this machine")
    code = cli.main(["inspect", "flan2021_heldout_nli", "--module_import=flantune.tasks.flan",
                     "--examples", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "task 'anli_r1': TFDS dataset 'anli/r1:0.1.0' is not prepared" in err
