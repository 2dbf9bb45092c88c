"""Library tasks on TFDS datasets really prepared (offline) from small files in the upstream
formats: TFDS's own builders encode and decode them, so record functions see exactly what a
prepared dataset gives; metrics are checked against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

import flantune.tasks.flan  # noqa: F401 - registers the library
from flantune.data import TfdsSource
from flantune.data.tasks import flan_task_for
from flantune.data.variants import Variant
from flantune.metrics import accuracy, squad
from flantune.tasks.flan.common import DATASETS

# TFDS 4.9 imports importlib_resources while preparing any dataset (even on Python >= 3.9,
# where its metadata does not require it): without it `tfds build` fails too.
pytest.importorskip("importlib_resources", reason="TFDS needs it to prepare datasets")

SQUAD = {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [{
    "context": "Super Bowl 50 was won by the Denver Broncos, who beat the Carolina Panthers.",
    "qas": [
        {"id": "q1", "question": "Which team won Super Bowl 50?",
         "answers": [{"text": "Denver Broncos", "answer_start": 29},
                     {"text": "the Denver Broncos", "answer_start": 25},
                     {"text": "Denver Broncos", "answer_start": 29}]},
        {"id": "q2", "question": "Who lost?",
         "answers": [{"text": "Carolina Panthers", "answer_start": 59}]}]}]}]}

ARC = [  # one question labelled 1-4 (TFDS maps those to A-D), one labelled A-D
    {"id": "a1", "answerKey": "3", "question": {"stem": "Which is a mammal?", "choices": [
        {"text": "trout", "label": "1"}, {"text": "frog", "label": "2"},
        {"text": "whale", "label": "3"}, {"text": "shark", "label": "4"}]}},
    {"id": "a2", "answerKey": "B", "question": {"stem": "What melts ice fastest?", "choices": [
        {"text": "shade", "label": "A"}, {"text": "sunlight", "label": "B"},
        {"text": "wind", "label": "C"}, {"text": "snow", "label": "D"}]}},
]


def _prepare(name: str, data_dir: Path, downloads, monkeypatch, file_format: str) -> None:
    """Builds TFDS dataset ``name`` into ``data_dir`` with downloads replaced by local files."""
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                        lambda self, urls: downloads(urls))
    tfds.builder(name, data_dir=data_dir).download_and_prepare(file_format=file_format)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """squad/v1.1 and ai2_arc/ARC-Easy built from the files above (array_record)."""
    root = tmp_path_factory.mktemp("tfds")
    files = root / "files"
    files.mkdir()
    (files / "squad.json").write_text(json.dumps(SQUAD))
    arc = files / "ARC-V1-Feb2018-2" / "ARC-Easy"
    arc.mkdir(parents=True)
    for part in ("Train", "Dev", "Test"):
        (arc / f"ARC-Easy-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC))
    with pytest.MonkeyPatch.context() as monkeypatch:
        _prepare(DATASETS["squad_v1"].name, root / "data",
                 lambda urls: {k: str(files / "squad.json") for k in urls}, monkeypatch,
                 "array_record")
        _prepare(DATASETS["arc_easy"].name, root / "data", lambda urls: str(files),
                 monkeypatch, "array_record")
    return root / "data"


def _use(task: str, data_dir: Path, monkeypatch) -> object:
    flan_task, _ = flan_task_for(task)
    dataset = DATASETS[task]
    sources = {split: TfdsSource(dataset.name, dataset.tfds_split(split), data_dir=data_dir)
               for split in ("train", "validation")}
    monkeypatch.setattr(flan_task, "_sources", sources)
    monkeypatch.setattr(flan_task, "_exemplars", {})
    return flan_task


def test_squad_records_references_and_f1(prepared, monkeypatch):
    flan_task = _use("squad_v1", prepared, monkeypatch)
    records = {r["id"]: r for r in (flan_task.record("validation", i) for i in range(2))}
    assert records["q1"]["answer"] == "Denver Broncos"
    assert records["q1"]["references"] == ["Denver Broncos", "the Denver Broncos"]
    assert records["q2"]["references"] == ["Carolina Panthers"]
    index = [flan_task.record("validation", i)["id"] for i in range(2)].index("q1")
    rendered = flan_task.render("validation", index, Variant.ZS_NOOPT)
    assert "Which team won Super Bowl 50?" in rendered["inputs"]
    assert rendered["targets"] == "Denver Broncos"
    post = flan_task.postprocess_fn
    example = {"record": records["q1"]}
    target = post(rendered["targets"], example=example, is_target=True)
    # "Broncos" vs "Denver Broncos": precision 1, recall 1/2 -> F1 2/3; no exact match.
    assert squad([target], [post("Broncos", example=example)]) == {
        "em": 0.0, "f1": pytest.approx(200 / 3)}


def test_arc_options_answer_and_accuracy(prepared, monkeypatch):
    flan_task = _use("arc_easy", prepared, monkeypatch)
    records = {r["id"]: r for r in (flan_task.record("validation", i) for i in range(2))}
    assert records["a1"]["options"] == ["trout", "frog", "whale", "shark"]
    assert records["a1"]["answer"] == "whale" and records["a2"]["answer"] == "sunlight"
    post = flan_task.postprocess_fn
    targets, predictions = [], []
    for name, generated in (("a1", "Whale."), ("a2", "wind")):
        example = {"record": records[name]}
        targets.append(post(records[name]["answer"], example=example, is_target=True))
        predictions.append(post(generated, example=example))
    assert accuracy(targets, predictions) == {"accuracy": 50.0}
    rendered = flan_task.render("validation", 0, Variant.FS_OPT)
    assert rendered["num_exemplars"] >= 1 and "whale" in rendered["inputs"]


def test_sequential_tfrecord_datasets_work_too(tmp_path, monkeypatch):
    files = tmp_path / "files"
    files.mkdir()
    (files / "squad.json").write_text(json.dumps(SQUAD))
    _prepare(DATASETS["squad_v1"].name, tmp_path / "data",
             lambda urls: {k: str(files / "squad.json") for k in urls}, monkeypatch, "tfrecord")
    flan_task = _use("squad_v1", tmp_path / "data", monkeypatch)
    assert flan_task.num_records("train") == 2
    assert {flan_task.record("train", i)["answer"] for i in range(2)} == {
        "Denver Broncos", "Carolina Panthers"}
