"""The subprocess launcher: results in process order, failures and timeouts stop everything."""

from __future__ import annotations

import time

import pytest

from flantune.testing import MultiprocessError, run_python

REPORT = (
    "import json, os\n"
    "print('noise')\n"
    "print(json.dumps({k: os.environ.get(k) for k in ('FLANTUNE_PROCESS_ID', "
    "'FLANTUNE_NUM_PROCESSES', 'FLANTUNE_COORDINATOR_ADDRESS', 'XLA_FLAGS', 'EXTRA')}))\n")


def test_results_come_back_in_process_order_with_the_environment():
    results = run_python(REPORT, num_processes=3, devices_per_process=4, env={"EXTRA": "x"})
    assert [r["FLANTUNE_PROCESS_ID"] for r in results] == ["0", "1", "2"]
    assert {r["FLANTUNE_NUM_PROCESSES"] for r in results} == {"3"}
    addresses = {r["FLANTUNE_COORDINATOR_ADDRESS"] for r in results}
    assert len(addresses) == 1 and addresses.pop().startswith("127.0.0.1:")
    assert all("--xla_force_host_platform_device_count=4" in r["XLA_FLAGS"] for r in results)
    assert {r["EXTRA"] for r in results} == {"x"}


def test_a_failing_process_stops_the_others_and_reports_its_stderr():
    code = ("import os, sys, time\n"
            "if os.environ['FLANTUNE_PROCESS_ID'] == '1':\n"
            "    sys.exit('process one broke')\n"
            "time.sleep(60)\n")
    start = time.monotonic()
    with pytest.raises(MultiprocessError, match=r"(?s)process 1 \(exit code 1\).*one broke"):
        run_python(code, num_processes=2, timeout=60)
    assert time.monotonic() - start < 30


def test_timeout_kills_every_process():
    start = time.monotonic()
    with pytest.raises(MultiprocessError, match=r"2 of 2 processes timed out after 1 s"):
        run_python("import time; time.sleep(60)", num_processes=2, timeout=1)
    assert time.monotonic() - start < 30


def test_missing_json_result_is_an_error():
    with pytest.raises(MultiprocessError, match=r"process 0 printed no JSON"):
        run_python("print('not json')")
