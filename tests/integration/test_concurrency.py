"""@concurrent(max_inputs=N): N requests run at once on one replica; the N+1th waits.

These are behaviour checks with wide margins (a sleep of SLEEP seconds either overlaps or
it does not), not speed measurements; speed lives in bench/.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import example_app

SLEEP = 2.0


def _burst(url: str, n: int) -> float:
    with ThreadPoolExecutor(n) as pool:
        start = time.monotonic()
        results = list(
            pool.map(lambda _: httpx.get(url, params={"seconds": SLEEP}, timeout=60), range(n))
        )
        elapsed = time.monotonic() - start
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    return elapsed


@pytest.fixture(scope="module")
def urls(ray_cluster):
    import rayweb
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(example_app("concurrent_inputs.py"), port=TEST_PORT, quiet=True)
    yield handle.urls
    handle.stop()


def test_max_inputs_requests_overlap(urls):
    assert _burst(urls["slow"], 4) < 2 * SLEEP * 0.9


def test_one_more_than_max_inputs_waits_for_a_slot(urls):
    assert _burst(urls["slow"], 5) >= 2 * SLEEP * 0.95


def test_without_concurrent_one_request_at_a_time(urls):
    assert _burst(urls["one_at_a_time"], 2) >= 2 * SLEEP * 0.95


def test_concurrent_on_a_class(urls):
    assert _burst(urls["Worker.work"], 3) < 2 * SLEEP * 0.9
    assert _burst(urls["Worker.work"], 4) >= 2 * SLEEP * 0.95
