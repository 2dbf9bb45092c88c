"""Tests for flantune.data.sources on real small files, TFDS datasets and generators."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flantune.data.errors import DataError, RecordError, UnknownNameError
from flantune.data.sources import (
    CsvSource,
    IterableSource,
    JsonlSource,
    ReasoningGymSource,
    RecordSource,
    TfdsSource,
    to_python,
)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
SKIP_HINT = "on_bad_record='skip'"


def _write(path: Path, *lines: bytes | str | dict) -> Path:
    data = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        data += (line.encode() if isinstance(line, str) else line) + b"\n"
    path.write_bytes(data)
    return path


def _assert_random_access_matches_iteration(source: RecordSource) -> None:
    sequential = list(source)
    assert len(sequential) == len(source)
    order = list(range(len(source)))
    random.Random(0).shuffle(order)
    for index in order:
        assert source[index] == sequential[index]
    assert source[-1] == sequential[-1]
    assert source[np.int64(0)] == sequential[0]
    with pytest.raises(TypeError):
        source[0.0]
    with pytest.raises(IndexError):
        source[len(source)]
    with pytest.raises(IndexError):
        source[-len(source) - 1]


# --------------------------------------------------------------------------- JSONL


def test_jsonl_alpaca_skips_blank_lines_and_keeps_file_lines():
    source = JsonlSource(FIXTURES / "alpaca_small.jsonl", format="alpaca")
    assert len(source) == 4
    path = str(FIXTURES / "alpaca_small.jsonl")
    assert [source.where(i) for i in range(4)] == [f"{path}:{n}" for n in (1, 2, 5, 6)]
    assert source[1] == {"instruction": "Translate to French.", "context": "Good morning",
                         "response": "Bonjour."}
    assert source[3]["context"] == ""  # no "input" field at all
    assert source.skipped == []
    _assert_random_access_matches_iteration(source)


def test_jsonl_matches_a_plain_json_reading_of_the_file():
    path = FIXTURES / "alpaca_small.jsonl"
    expected = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    assert list(JsonlSource(path)) == expected


def test_jsonl_raw_use_with_required_fields(tmp_path):
    path = _write(tmp_path / "raw.jsonl", {"text": "a", "label": 1}, {"text": "b", "label": 0})
    source = JsonlSource(path, fields=["text", "label"])
    assert list(source) == [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    with pytest.raises(RecordError, match=r"raw.jsonl:1\] missing required field 'title'"):
        len(JsonlSource(path, fields=["title"]))


@pytest.mark.parametrize("bad_line, message", [
    (b'{"instruction": "x", "output": "y"', r"malformed JSON at column 35: Expecting ',' "),
    (b'["not", "an", "object"]', r"expected a JSON object, got list"),
    (b'"just a string"', r"expected a JSON object, got str"),
    (b'{"instruction": "Tell a joke."}', r"missing field 'output'"),
    (b'{"instruction": "Tell a joke.", "output": ""}', r"field 'output' is empty"),
    (b'{"instruction": "Caf\xe9", "output": "y"}',
     r"invalid UTF-8 byte b'\\xe9' at byte 21 of the line \(file byte offset 78\)"),
])
def test_jsonl_bad_line_names_file_and_line(tmp_path, bad_line, message):
    good = b'{"instruction": "Say hi.", "input": "", "output": "Hi!"}'
    path = _write(tmp_path / "data.jsonl", good, b"", bad_line, good)
    source = JsonlSource(path, format="alpaca", task="my_task")
    with pytest.raises(RecordError) as info:
        len(source)
    text = str(info.value)
    assert text.startswith(f"[task 'my_task', {path}:3] ")
    assert SKIP_HINT in text
    assert info.value.path == str(path) and info.value.line == 3 and info.value.task == "my_task"
    assert re.search(message, text), text


def test_jsonl_utf8_byte_offset_is_exact(tmp_path):
    path = _write(tmp_path / "d.jsonl", b'{"a": "ok"}', b'{"a": "\xff"}')
    with pytest.raises(RecordError, match=r"d.jsonl:2\] invalid UTF-8 byte b'\\xff' at byte 8 of "
                                          r"the line \(file byte offset 19\)"):
        len(JsonlSource(path))
    assert path.read_bytes()[19] == 0xFF


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_jsonl_line_cut_inside_a_utf8_character_is_reported_as_truncated(tmp_path, ending):
    line = '{"text": "naïve café"}'.encode()
    cut = line[:line.index("é".encode()) + 1]  # the first of é's two bytes
    path = tmp_path / "cut.jsonl"
    path.write_bytes(line + b"\n" + cut + ending)
    with pytest.raises(RecordError) as info:
        len(JsonlSource(path))
    text = str(info.value)
    assert "cut.jsonl:2] the line is truncated: it ends inside a UTF-8 character" in text
    assert f"(bytes b'\\xc3' at byte {len(cut)} of the line (file byte offset " \
           f"{len(line) + len(cut)})" in text, text
    assert "iconv" not in text and "latin" not in text
    assert path.read_bytes()[len(line) + len(cut)] == 0xC3


def test_jsonl_skip_mode_counts_and_reports_once(caplog):
    path = str(FIXTURES / "broken.jsonl")
    with caplog.at_level(logging.WARNING, logger="flantune.data.sources"):
        source = JsonlSource(path, format="alpaca", on_bad_record="skip")
        assert len(source) == 2
        assert [r["response"] for r in source] == ["5", "Blue."]
        assert [source.where(i) for i in range(2)] == [f"{path}:1", f"{path}:7"]
    assert [loc for loc, _ in source.skipped] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    reasons = [why for _, why in source.skipped]
    assert "malformed JSON" in reasons[0]
    assert "expected a JSON object" in reasons[1]
    assert "missing field 'output'" in reasons[2]
    assert "is empty" in reasons[3]
    assert "invalid UTF-8" in reasons[4]
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipped 5 bad record(s)" in warnings[0].getMessage()
    assert f"{path}:2" in warnings[0].getMessage()


def test_jsonl_raise_mode_stops_at_first_bad_line():
    with pytest.raises(RecordError, match=r"broken.jsonl:2\] malformed JSON"):
        len(JsonlSource(FIXTURES / "broken.jsonl", format="alpaca"))


def test_jsonl_all_bad_or_empty_is_an_error(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", b"{", b"[1]")
    with pytest.raises(DataError, match=r"all 2 records of .*bad.jsonl are bad"):
        len(JsonlSource(bad, on_bad_record="skip"))
    empty = _write(tmp_path / "empty.jsonl", b"", b"  ")
    with pytest.raises(DataError, match=r"empty.jsonl holds no records"):
        len(JsonlSource(empty))


def test_jsonl_missing_file_fails_at_construction(tmp_path):
    with pytest.raises(DataError, match=r"JSONL file .*nope.jsonl does not exist"):
        JsonlSource(tmp_path / "nope.jsonl")


def test_jsonl_bad_on_bad_record_value():
    with pytest.raises(ValueError, match="must be 'raise' or 'skip'"):
        JsonlSource(FIXTURES / "alpaca_small.jsonl", on_bad_record="ignore")


def test_jsonl_bom_and_crlf(tmp_path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}\r\n'
                     b'{"prompt": "c", "completion": "d"}\r\n')
    source = JsonlSource(path, format="prompt_completion")
    assert list(source) == [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    assert source[0] == {"prompt": "a", "completion": "b"}


def test_jsonl_index_holds_offsets_not_records(tmp_path):
    lines = [{"prompt": f"p{i}", "completion": "x" * 200} for i in range(500)]
    source = JsonlSource(_write(tmp_path / "big.jsonl", *lines), format="prompt_completion")
    assert len(source) == 500
    assert source[437] == {"prompt": "p437", "completion": "x" * 200}
    offsets = source._index[0]
    assert offsets[1] == len(json.dumps(lines[0])) + 1
    assert all(isinstance(part, type(offsets)) for part in source._index)


def test_jsonl_conversations_expand_with_line_locations():
    path = str(FIXTURES / "sharegpt_small.jsonl")
    source = JsonlSource(path, format="sharegpt")
    assert len(source) == 4  # 3 assistant turns on line 1, 1 on line 2
    assert [source.where(i) for i in range(4)] == [
        f"{path}:1 (record 1 of 3 from this line)", f"{path}:1 (record 2 of 3 from this line)",
        f"{path}:1 (record 3 of 3 from this line)", f"{path}:2"]
    assert [r["turn"] for r in source] == [1, 2, 3, 1]
    assert source[2]["dialog"].endswith("User: Thanks!")
    assert source[2]["response"] == "You're welcome."
    assert source[3] == {"dialog": "User: Suggest a name for a grey cat.",
                         "response": "How about Ash?", "turn": 1, "system": ""}
    _assert_random_access_matches_iteration(source)


def test_jsonl_oasst_thread_and_tree():
    source = JsonlSource(FIXTURES / "oasst_small.jsonl", format="oasst")
    assert len(source) == 5
    assert [r["turn"] for r in source] == [1, 2, 1, 2, 1]
    assert source[3]["dialog"].endswith("User: Now one about snow.")


def test_jsonl_conversation_errors_name_line_and_message():
    path = str(FIXTURES / "sharegpt_broken.jsonl")
    with pytest.raises(RecordError, match=rf"\[{path}:2\] bad role sequence at message 2"):
        len(JsonlSource(path, format="sharegpt"))
    source = JsonlSource(path, format="sharegpt", on_bad_record="skip")
    assert len(source) == 1
    assert source.skipped == [
        (f"{path}:2", "bad role sequence at message 2: got user; expected an assistant message "
                      "(user and assistant must alternate, user first) [format 'sharegpt']"),
        (f"{path}:3", "message 2: empty assistant turn [format 'sharegpt']"),
        (f"{path}:4", "message 2 has unknown role 'robot'; known roles: assistant, gpt, human, "
                      "system, user [format 'sharegpt']"),
        (f"{path}:5", "bad role sequence at message 3: got system; a system message may only "
                      "come first (user and assistant must alternate, user first) "
                      "[format 'sharegpt']"),
    ]


def test_jsonl_pickles_and_detects_changed_file(tmp_path):
    path = _write(tmp_path / "d.jsonl", {"prompt": "a", "completion": "b"})
    source = JsonlSource(path, format="prompt_completion")
    assert source[0] == {"prompt": "a", "completion": "b"}
    clone = pickle.loads(pickle.dumps(source))
    assert list(clone) == list(source)
    with open(path, "ab") as handle:
        handle.write(b'{"prompt": "c", "completion": "d"}\n')
    with pytest.raises(DataError, match="changed size since it was indexed"):
        pickle.loads(pickle.dumps(source))[0]


# --------------------------------------------------------------------------- CSV


def test_csv_with_multiline_quoted_field():
    path = str(FIXTURES / "good.csv")
    source = CsvSource(path, format="alpaca")
    assert len(source) == 3
    assert [source.where(i) for i in range(3)] == [f"{path}:2", f"{path}:4", f"{path}:6"]
    assert source[1] == {"instruction": "Write a two-line poem, with a comma.", "context": "",
                         "response": "Roses lean,\nthe garden sleeps."}
    assert source[2] == {"instruction": "Reverse the word.", "context": "stressed",
                         "response": "desserts"}
    _assert_random_access_matches_iteration(source)


def test_csv_raw_rows_and_delimiter():
    source = CsvSource(FIXTURES / "semicolon.csv", delimiter=";", fields=["prompt"])
    assert list(source) == [{"prompt": "The capital of Peru is", "completion": "Lima"},
                            {"prompt": "2 + 2 =", "completion": "4"}]


def test_csv_skip_mode_counts_bad_rows(caplog):
    path = str(FIXTURES / "broken.csv")
    with caplog.at_level(logging.WARNING, logger="flantune.data.sources"):
        source = CsvSource(path, format="alpaca", on_bad_record="skip")
        assert [r["response"] for r in source] == ["Hi!", "Bye!"]
    assert [source.where(i) for i in range(2)] == [f"{path}:2", f"{path}:7"]
    assert source.skipped == [
        (f"{path}:3", "row has 4 fields but the header has 3"),
        (f"{path}:4", "field 'instruction' holds invalid UTF-8 byte b'\\xe9'; re-encode the "
                      "file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"),
        (f"{path}:5", "field 'output' is empty; every record needs a non-empty 'output' "
                      "[format 'alpaca']"),
    ]
    assert sum("skipped 3 bad record(s)" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("row, message", [
    (b"Too,many,fields,here", r"row has 4 fields but the header has 3"),
    (b"Caf\xe9,,Latte", r"field 'instruction' holds invalid UTF-8 byte b'\\xe9'"),
    (b"Question,,", r"field 'output' is empty"),
    (b'"unterminated,,x', r"malformed CSV"),
])
def test_csv_bad_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,input,output\nSay hi.,,Hi!\n" + row + b"\n")
    with pytest.raises(RecordError, match=rf"\[{path}:3\] {message}.*{SKIP_HINT}"):
        len(CsvSource(path, format="alpaca"))


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty; it needs a header row"),
    (b"instruction,,output\n", r"bad CSV header .*an empty column name"),
    (b"a,b,a\n", r"duplicate column names \['a'\]"),
    (b"text,label\nhi,1\n", r"no column for required field\(s\) \['output'\]"),
])
def test_csv_header_problems(tmp_path, content, message):
    path = tmp_path / "h.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        len(CsvSource(path, fields=["output"] if b"text" in content else None))


# --------------------------------------------------------------------------- iterables


def test_iterable_source_is_lazy_and_random_access():
    pulled = []

    def numbers():
        for i in range(10):
            pulled.append(i)
            yield {"question": f"{i} squared?", "answer": str(i * i)}

    source = IterableSource(numbers)
    assert source[3] == {"question": "3 squared?", "answer": "9"}
    assert pulled == [0, 1, 2, 3]
    assert source.where(2).endswith("<locals>.numbers item 2")
    assert len(source) == 10
    _assert_random_access_matches_iteration(source)
    assert pulled == list(range(10))  # the generator ran once


def test_iterable_source_limit_and_format():
    def endless():
        i = 0
        while True:
            yield {"prompt": f"count {i}", "completion": str(i + 1)}
            i += 1

    source = IterableSource(endless, name="counter", format="prompt_completion", limit=5)
    assert len(source) == 5
    assert source[4] == {"prompt": "count 4", "completion": "5"}


def test_iterable_source_bad_items():
    def items():
        yield {"a": 1}
        yield ["not", "a", "dict"]
        yield {"a": 2}

    with pytest.raises(RecordError, match=r"\[gen item 1\] expected a JSON object, got list"):
        len(IterableSource(items, name="gen"))
    source = IterableSource(items, name="gen", on_bad_record="skip")
    assert list(source) == [{"a": 1}, {"a": 2}]
    assert source.skipped == [("gen item 1", "expected a JSON object, got list: "
                                             "['not', 'a', 'dict']")]


def test_failing_custom_format_gets_the_line(tmp_path):
    path = _write(tmp_path / "qa.jsonl", {"q": "Why?", "a": "Because."}, {"q": "How?"})

    def question_answer(raw):
        return {"instruction": raw["q"], "context": "", "response": raw["a"]}

    with pytest.raises(RecordError, match=r"qa.jsonl:2\] format 'question_answer' failed: "
                                          r"KeyError: 'a'"):
        len(JsonlSource(path, format=question_answer))
    source = JsonlSource(path, format=question_answer, on_bad_record="skip")
    assert list(source) == [{"instruction": "Why?", "context": "", "response": "Because."}]


def test_iterable_source_accepts_a_plain_iterable():
    source = IterableSource([{"x": 1}, {"x": 2}], name="list")
    assert list(source) == [{"x": 1}, {"x": 2}]


# --------------------------------------------------------------------------- TFDS

tfds = pytest.importorskip("tensorflow_datasets")


class FlantuneTinyQa(tfds.core.GeneratorBasedBuilder):
    """A tiny TFDS dataset prepared on the fly, to test sources against real TFDS files."""

    VERSION = tfds.core.Version("1.0.0")

    # TFDS looks for checksum files next to a builder's source through `importlib_resources`,
    # which is not installed here; this builder downloads nothing, so it has no source path.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "question": tfds.features.Text(), "answer": tfds.features.Text(),
            "label": np.int64, "tags": tfds.features.Sequence(tfds.features.Text())}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(7), "test": self._generate_examples(3)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"question": f"What is {i} + {i}?", "answer": str(2 * i), "label": i % 2,
                      "tags": ["math", f"n{i}"]}


def _expected_tiny_qa(count: int) -> list[dict]:
    return [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "label": i % 2,
             "tags": ["math", f"n{i}"]} for i in range(count)]


def _by_label_then_question(records):
    return sorted(records, key=lambda r: r["question"])


@pytest.mark.parametrize("file_format, random_access", [("array_record", True),
                                                        ("tfrecord", False)])
def test_tfds_prepared_dataset(tmp_path, file_format, random_access):
    FlantuneTinyQa(data_dir=str(tmp_path), file_format=file_format).download_and_prepare()
    source = TfdsSource("flantune_tiny_qa:1.0.0", "train", data_dir=tmp_path,
                        fields=["question", "answer"])
    assert (source._random_access is not None) == random_access
    assert len(source) == 7
    records = list(source)
    # TFDS stores examples in its own (hashed-key) order; the content must be exact.
    assert _by_label_then_question(records) == _by_label_then_question(_expected_tiny_qa(7))
    assert all(type(r["question"]) is str and type(r["label"]) is int for r in records)
    _assert_random_access_matches_iteration(source)
    assert source.where(2) == "tfds:flantune_tiny_qa:1.0.0/train[2]"


class FlantuneTinyBadQa(FlantuneTinyQa):
    """FlantuneTinyQa whose question 3 is not UTF-8."""

    def _generate_examples(self, count):
        for key, example in super()._generate_examples(count):
            if key == 3:
                example = {**example, "question": b"What is \xff?"}
            yield key, example


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_tfds_bad_record_raises_or_is_skipped_and_counted(tmp_path, file_format, caplog):
    FlantuneTinyBadQa(data_dir=str(tmp_path), file_format=file_format).download_and_prepare()
    strict = TfdsSource("flantune_tiny_bad_qa", "train", data_dir=tmp_path, task="t")
    assert len(strict) == 7
    bad = []
    for index in range(7):
        try:
            strict[index]
        except RecordError as err:
            bad.append(index)
            assert str(err).startswith(f"[task 't', tfds:flantune_tiny_bad_qa/train[{index}]] "
                                       "a string feature is not valid UTF-8"), err
            assert SKIP_HINT in str(err)
    assert len(bad) == 1
    good = [strict[i] for i in range(7) if i not in bad]  # records after it stay aligned
    assert _by_label_then_question(good) == _by_label_then_question(
        [r for r in _expected_tiny_qa(7) if r["question"] != "What is 3 + 3?"])

    with caplog.at_level(logging.WARNING):
        lenient = TfdsSource("flantune_tiny_bad_qa", "train", data_dir=tmp_path,
                             on_bad_record="skip")
        assert len(lenient) == 6
    assert list(lenient) == good
    assert lenient.skipped == [(f"tfds:flantune_tiny_bad_qa/train[{bad[0]}]",
                                "a string feature is not valid UTF-8 (invalid start byte)")]
    assert [lenient.where(i) for i in range(6)] == [
        f"tfds:flantune_tiny_bad_qa/train[{i}]" for i in range(7) if i not in bad]
    assert sum("skipped 1 bad record(s)" in r.getMessage() for r in caplog.records) == 1


def test_tfds_both_file_formats_give_the_same_order(tmp_path):
    FlantuneTinyQa(data_dir=str(tmp_path / "a"), file_format="array_record").download_and_prepare()
    FlantuneTinyQa(data_dir=str(tmp_path / "t"), file_format="tfrecord").download_and_prepare()
    a = TfdsSource("flantune_tiny_qa", "test", data_dir=tmp_path / "a")
    t = TfdsSource("flantune_tiny_qa", "test", data_dir=tmp_path / "t")
    assert list(a) == list(t)


def test_tfds_bad_split_and_fields(tmp_path):
    FlantuneTinyQa(data_dir=str(tmp_path)).download_and_prepare()
    with pytest.raises(DataError, match=r"has no split 'validation'; its splits are "
                                        r"\['test', 'train'\]"):
        TfdsSource("flantune_tiny_qa", "validation", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"has no feature\(s\) \['context'\]; its features are"):
        TfdsSource("flantune_tiny_qa", "train", data_dir=tmp_path, fields=["context"])


def test_tfds_not_prepared_explains_how_to_prepare(tmp_path):
    with pytest.raises(DataError) as info:
        TfdsSource("glue/rte:2.0.0", "train", data_dir=tmp_path)
    text = str(info.value)
    assert "TFDS dataset 'glue/rte:2.0.0' is not prepared locally" in text
    assert f"looked in {tmp_path}/glue/rte/2.0.0" in text
    assert f"tfds build glue/rte:2.0.0 --data_dir={tmp_path}" in text
    assert "download_and_prepare(" in text


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown TFDS dataset 'no_such_dataset_xyz'"):
        TfdsSource("no_such_dataset_xyz", "train", data_dir=tmp_path)


def test_tfds_mock_data_glue_rte():
    with tfds.testing.mock_data(num_examples=6):
        source = TfdsSource("glue/rte:2.0.0", "validation", fields=["sentence1", "sentence2"])
        assert len(source) == 6
        records = list(source)
        reference = tfds.data_source("glue/rte:2.0.0", split="validation")
        for index, record in enumerate(records):
            assert set(record) == {"idx", "label", "sentence1", "sentence2"}
            assert isinstance(record["sentence1"], str) and isinstance(record["label"], int)
            raw = reference[index]
            sentence = raw["sentence1"]
            assert record["sentence1"] == (sentence.decode() if isinstance(sentence, bytes)
                                           else sentence)
            assert record["label"] == int(raw["label"])
        _assert_random_access_matches_iteration(source)


def test_to_python_conversions():
    value = {"b": b"caf\xc3\xa9", "s": np.bytes_(b"x"), "i": np.int32(3), "f": np.float32(0.5),
             "a": np.array([1, 2]), "t": np.array([b"p", b"q"], dtype=object),
             "n": {"inner": np.array(b"z", dtype=object)}}
    assert to_python(value) == {"b": "café", "s": "x", "i": 3, "f": 0.5, "a": [1, 2],
                                "t": ["p", "q"], "n": {"inner": "z"}}


# --------------------------------------------------------------------------- reasoning-gym

_DUMP_RECORDS = """
import json, sys
from flantune.data.sources import ReasoningGymSource
source = ReasoningGymSource(sys.argv[1], size=int(sys.argv[2]), seed=int(sys.argv[3]))
print(json.dumps(list(source), sort_keys=True, default=repr))
"""


def _dump(records) -> str:
    return json.dumps(records, sort_keys=True, default=repr)


def test_reasoning_gym_records_and_scoring():
    source = ReasoningGymSource("basic_arithmetic", size=20, seed=42)
    assert len(source) == 20
    record = source[7]
    assert set(record) >= {"question", "answer", "metadata", "has_answer", "dataset", "index"}
    assert record["has_answer"] and record["index"] == 7
    # The answer is the value of the expression the generator wrote into its metadata.
    expression = record["metadata"]["expression"]
    assert int(record["answer"]) == eval(expression, {"__builtins__": {}})  # noqa: S307
    assert source.score_answer(record["answer"], record) == 1.0
    assert source.score_answer(str(int(record["answer"]) + 1), record) == 0.0
    assert source.where(7) == "reasoning_gym:basic_arithmetic(seed=42)[7]"
    _assert_random_access_matches_iteration(source)


@pytest.mark.slow  # the child process imports the data package (TensorFlow): ~15 s here
def test_reasoning_gym_same_seed_same_records_in_another_process():
    here = ReasoningGymSource("gcd", size=25, seed=123)
    again = ReasoningGymSource("gcd", size=25, seed=123)
    other_seed = ReasoningGymSource("gcd", size=25, seed=124)
    assert _dump(list(here)) == _dump(list(again))
    assert _dump(list(here)) != _dump(list(other_seed))
    env = {**os.environ, "PYTHONHASHSEED": "7", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _DUMP_RECORDS, "gcd", "25", "123"],
                            capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert json.loads(result.stdout) == json.loads(_dump(list(here)))


def test_reasoning_gym_keeps_stdout_clean(capfd):
    source = ReasoningGymSource("leg_counting", size=3, seed=0)
    list(source)
    source.score_answer("4", source[0])
    assert capfd.readouterr().out == ""


def test_reasoning_gym_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"'basic_arithmetc'; did you mean "
                                               r"basic_arithmetic"):
        ReasoningGymSource("basic_arithmetc", size=3, seed=0)


@pytest.mark.parametrize("name", ["word_ladder", "ransom_note", "codeio"])
def test_reasoning_gym_nondeterministic_generators_need_consent(name, monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(DataError, match="allow_nondeterministic=True"):
        ReasoningGymSource(name, size=3, seed=0)


def test_reasoning_gym_hash_dependent_generator_allowed_with_fixed_hash_seed(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert len(ReasoningGymSource("ransom_note", size=3, seed=0)) == 3
    monkeypatch.delenv("PYTHONHASHSEED")
    assert len(ReasoningGymSource("ransom_note", size=3, seed=0,
                                  allow_nondeterministic=True)) == 3


def test_reasoning_gym_bad_config():
    with pytest.raises(DataError, match=r"bad config \{'bogus': 1\}.*Its options are \["):
        ReasoningGymSource("basic_arithmetic", size=3, seed=0, config={"bogus": 1})
    with pytest.raises(DataError, match=r"pass \['seed'\] as arguments"):
        ReasoningGymSource("basic_arithmetic", size=3, seed=0, config={"seed": 5})


def test_reasoning_gym_config_is_applied():
    source = ReasoningGymSource("basic_arithmetic", size=10, seed=1,
                                config={"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                        "max_digits": 1, "operators": ("+",)})
    for record in source:
        expression = record["metadata"]["expression"]
        assert expression.count("+") == 1, expression


# string_manipulation, seed 1: item 1167's answer is the empty string (reasoning-gym 0.1.25).
EMPTY_ANSWER = "reasoning_gym:string_manipulation(seed=1)[1167]"


def test_reasoning_gym_empty_answer_raises_naming_the_item():
    source = ReasoningGymSource("string_manipulation", size=1170, seed=1, task="sm")
    assert len(source) == 1170 and source[1166]["answer"]
    with pytest.raises(RecordError) as info:
        source[1167]
    text = str(info.value)
    assert text.startswith(f"[task 'sm', {EMPTY_ANSWER}] the generator gave an empty answer")
    assert SKIP_HINT in text


def test_reasoning_gym_skip_leaves_the_empty_answer_out_and_counts_it(caplog):
    strict = ReasoningGymSource("string_manipulation", size=1170, seed=1)
    with caplog.at_level(logging.WARNING):
        source = ReasoningGymSource("string_manipulation", size=1170, seed=1,
                                    on_bad_record="skip")
        assert len(source) == 1169
    assert [where for where, _ in source.skipped] == [EMPTY_ANSWER]
    assert source.skipped[0][1].startswith("the generator gave an empty answer")
    assert source[1166] == strict[1166]
    assert source[1167] == strict[1168] and source[1167]["index"] == 1168  # the generator's
    assert source.where(1167) == "reasoning_gym:string_manipulation(seed=1)[1168]"
    assert source.where(-1) == "reasoning_gym:string_manipulation(seed=1)[1169]"
    assert all(record["answer"].strip() for record in source)
    assert sum("skipped 1 bad record(s)" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- shipped examples

EXAMPLES = REPO / "tasks" / "examples"


@pytest.mark.parametrize("name, fmt, fields", [
    ("alpaca_style.jsonl", "alpaca", {"instruction", "context", "response"}),
    ("dolly_style.jsonl", "dolly", {"instruction", "context", "response", "category"}),
])
def test_example_instruction_files_load_cleanly(name, fmt, fields):
    lines = (EXAMPLES / name).read_text("utf-8").splitlines()
    source = JsonlSource(EXAMPLES / name, format=fmt)
    assert 30 <= len(source) == len(lines) <= 60
    assert source.skipped == []
    for record, line in zip(source, lines, strict=True):
        raw = json.loads(line)
        assert set(record) == fields
        assert record["instruction"] == raw["instruction"]
        assert record["response"] == raw["output" if fmt == "alpaca" else "response"]


def test_example_conversations_expand_to_every_assistant_turn():
    lines = (EXAMPLES / "sharegpt_style.jsonl").read_text("utf-8").splitlines()
    raws = [json.loads(line) for line in lines]
    replies = [m["value"] for raw in raws for m in raw["conversations"] if m["from"] == "gpt"]
    source = JsonlSource(EXAMPLES / "sharegpt_style.jsonl", format="sharegpt")
    assert 30 <= len(raws) <= 60
    assert [r["response"] for r in source] == replies
    multi_turn = [r for r in source if r["turn"] > 1]
    assert multi_turn, "the examples should include multi-turn conversations"
    for record in multi_turn:
        assert record["dialog"].count("User: ") == record["turn"]
        assert record["dialog"].count("Assistant: ") == record["turn"] - 1
