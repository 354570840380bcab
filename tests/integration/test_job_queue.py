"""A job queue on the real cluster (examples/job_queue.py): a web endpoint spawns a slow
backend function, another endpoint and another process poll the call by its id."""

from __future__ import annotations

import time

import httpx
import pytest

import rayweb
from rayweb.exception import InputCancellation, OutputExpiredError
from tests.integration.conftest import TEST_PORT, example_app

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def jobs(ray_cluster):
    handle = rayweb.serve(example_app("job_queue.py"), port=TEST_PORT, quiet=True)
    try:
        yield handle.urls["api"]
    finally:
        handle.stop()


def test_spawn_then_poll_from_another_endpoint_and_another_process(jobs):
    submitted = httpx.post(jobs + "/submit", json={"text": "hello", "seconds": 2}, timeout=120)
    call_id = submitted.json()["call_id"]
    assert call_id.startswith("fc-")
    first = httpx.get(f"{jobs}/result/{call_id}", timeout=30)
    assert first.status_code == 202 and first.json() == {"status": "pending"}
    deadline = time.monotonic() + 60
    while (polled := httpx.get(f"{jobs}/result/{call_id}", timeout=30)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert polled.json()["result"]["text"] == "HELLO"
    # the same id from this process (the results live on the cluster, not in a replica)
    assert rayweb.FunctionCall.from_id(call_id).get(timeout=10)["text"] == "HELLO"
    with pytest.raises(OutputExpiredError):
        rayweb.FunctionCall.from_id("fc-never-spawned").get(timeout=1)


def test_a_web_endpoint_finds_a_backend_by_name(jobs):
    submitted = httpx.post(jobs + "/submit-by-name", json={"text": "by name", "seconds": 0})
    call_id = submitted.json()["call_id"]
    assert rayweb.FunctionCall.from_id(call_id).get(timeout=60)["text"] == "BY NAME"


def test_a_cancelled_call_raises_input_cancellation(jobs):
    call_id = httpx.post(jobs + "/submit", json={"text": "x", "seconds": 6}, timeout=120).json()[
        "call_id"
    ]
    assert httpx.post(f"{jobs}/cancel/{call_id}", timeout=30).status_code == 200
    with pytest.raises(InputCancellation):
        rayweb.FunctionCall.from_id(call_id).get(timeout=10)
