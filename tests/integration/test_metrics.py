"""Requests through the gateway, which Serve's proxy never sees, in Serve's own request
metrics on Ray's metrics endpoint (one scrape sees all traffic), and in ``rayweb app list``'s
last minute."""

# No `from __future__ import annotations`: the endpoint below is shipped by value.

import time
from collections import Counter

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

import rayweb
from rayweb.driver.status import list_endpoints

pytestmark = pytest.mark.cluster

metered = rayweb.App("metered")


@metered.function(serialized=True, min_containers=1)
@rayweb.fastapi_endpoint()
def hit(teapot: bool = False) -> dict:
    from fastapi import HTTPException

    if teapot:
        raise HTTPException(status_code=418, detail="short and stout")
    return {"ok": True}


def _scrape(route: str) -> dict[str, Counter]:
    """Serve's request families for ``route`` on every node: sample -> {status: value}."""
    found: dict[str, Counter] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        text = httpx.get(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("route") != route:
                    continue
                status = sample.labels.get("status_code") or sample.labels.get("error_code", "")
                found.setdefault(sample.name, Counter())[status] += sample.value
    return found


def test_requests_through_the_gateway_raise_serves_request_metrics(served):
    handle = served(metered)
    url = handle.urls["hit"]
    route = "/metered-hit"
    before = _scrape(route)
    with httpx.Client() as client:
        assert all(client.get(url).status_code == 200 for _ in range(100))
        assert all(client.get(url, params={"teapot": True}).status_code == 418 for _ in range(5))

    def grown(name: str) -> Counter:
        now = _scrape(route).get(name, Counter())
        now.subtract(before.get(name, Counter()))
        return +now

    deadline = time.monotonic() + 60  # Ray exports what was recorded every few seconds
    while time.monotonic() < deadline:
        if grown("ray_serve_num_http_requests_total") == {"200": 100, "418": 5}:
            break
        time.sleep(1)
    assert grown("ray_serve_num_http_requests_total") == {"200": 100, "418": 5}
    assert grown("ray_serve_http_request_latency_ms_count") == {"200": 100, "418": 5}
    assert grown("ray_serve_num_http_error_requests_total") == {"418": 5}
    (row,) = [r for r in list_endpoints() if r.name == "metered-hit"]
    assert row.traffic.startswith("1.75/s, p50 ")  # 105 requests in the last minute
