"""@rayweb.concurrent on a function and on a class: one replica takes several requests.

Without it a replica takes one request at a time (Modal's default).

    rayweb serve examples/concurrent_inputs.py
"""

import asyncio
import time

import rayweb

app = rayweb.App("concurrency-demo")


@app.function(max_containers=1)
@rayweb.concurrent(max_inputs=4, target_inputs=2)
@rayweb.fastapi_endpoint()
async def slow(seconds: float = 1.0) -> dict:
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.function(max_containers=1)
@rayweb.fastapi_endpoint()
def one_at_a_time(seconds: float = 1.0) -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.cls(max_containers=1)
@rayweb.concurrent(max_inputs=3)
class Worker:
    @rayweb.fastapi_endpoint()
    def work(self, seconds: float = 1.0) -> dict:
        start = time.time()
        time.sleep(seconds)  # sync methods run in threads: each request gets one
        return {"start": start, "end": time.time()}
