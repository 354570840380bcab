"""One model class, run with other options at runtime (Modal's ``Cls.with_options``,
``with_concurrency`` and ``with_batching``) and with other parameters (``Model(size=3)``):
each variant and each parameter set is a pool of replicas of its own, started at its first
call, with the class's code and the new resources, scaling, timeout, batch limits or
parameters (its ``@enter`` runs once per container). The web endpoint picks one per request.

rayweb serve examples/model_variants.py
curl 'http://127.0.0.1:8000/variants-api-dev/describe?cpu=0.2'
"""

import asyncio
import os
import time

from fastapi import FastAPI

import rayweb

app = rayweb.App("variants")


def _assigned_cpu() -> float:
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)


@app.cls(cpu=0.1, max_containers=1, scaledown_window=30)  # a GPU model would add gpu="T4"
class Model:
    size: int = rayweb.parameter(default=1)

    @rayweb.enter()
    def load(self):
        self.entered = time.monotonic()  # a real model would load the weights for `size`
        self.in_flight = 0
        self.peak = 0  # inputs this container ran at once

    @rayweb.method()
    async def describe(self, nap: float = 0.0) -> dict:
        called = time.monotonic()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(nap)
        finally:
            self.in_flight -= 1
        return {
            "pid": os.getpid(),
            "cpu": _assigned_cpu(),
            "size": self.size,
            "peak": self.peak,
            "entered_before_call": self.entered < called - 0.001,
        }

    @rayweb.method()
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@app.cls(scaledown_window=30)
class Embedder:
    @rayweb.batched(max_batch_size=2, wait_ms=100)
    def embed(self, texts: list[str]) -> list[dict]:
        return [{"length": len(t), "batch": len(texts)} for t in texts]


web = FastAPI()


@web.get("/describe")
async def describe(cpu: float | None = None, size: int = 1):
    model = Model.with_options(cpu=cpu) if cpu else Model
    return await model(size=size).describe.remote.aio()


@app.function()
@rayweb.concurrent(max_inputs=8)
@rayweb.asgi_app()
def api():
    return web
