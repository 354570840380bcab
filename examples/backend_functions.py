"""A web endpoint in front of backend functions, as in Modal's examples: the API calls a
model class (``@enter`` once per container, a parameter per pool of instances), maps over
inputs, fans out with ``.remote.aio``, streams a generator as SSE and re-raises a remote
error with its own type.

rayweb serve examples/backend_functions.py
curl 'http://127.0.0.1:8000/backend-api-dev/predict?x=2&scale=3'
curl 'http://127.0.0.1:8000/backend-api-dev/squares?n=5'
curl -N 'http://127.0.0.1:8000/backend-api-dev/countdown?n=3'
"""

import asyncio
import os
import time

import rayweb

app = rayweb.App("backend")


@app.cls(scaledown_window=120)  # a GPU model would add gpu="L40S"
class Model:
    scale: int = rayweb.parameter(default=1)

    @rayweb.enter()
    def load(self):
        time.sleep(0.2)  # loading weights
        self.loaded_at = time.time()

    @rayweb.method()
    def predict(self, x: float) -> dict:
        return {"y": x * self.scale, "scale": self.scale, "pid": os.getpid()}


@app.function(scaledown_window=120)
def square(x: int) -> int:
    return x * x


@app.function(scaledown_window=120)
def fail(message: str) -> None:
    raise ValueError(message)


@app.function(scaledown_window=120)
@rayweb.concurrent(max_inputs=32)
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.function(scaledown_window=120)
def countdown(n: int, every: float = 0.3):
    for i in range(n, 0, -1):
        time.sleep(every)
        yield {"left": i, "at": time.time()}


@app.function()
@rayweb.concurrent(max_inputs=20)
@rayweb.asgi_app()
def api():
    import json

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    web = FastAPI()

    @web.get("/predict")
    def predict(x: float = 1.0, scale: int = 1) -> dict:
        return {**Model(scale=scale).predict.remote(x), "web_pid": os.getpid()}

    @web.get("/squares")
    def squares(n: int = 10) -> list:
        return list(square.map(range(n)))

    @web.get("/naps")
    async def naps(n: int = 20, seconds: float = 1.0) -> dict:
        started = time.monotonic()
        done = await asyncio.gather(*(nap.remote.aio(seconds) for _ in range(n)))
        return {"n": len(done), "elapsed": time.monotonic() - started}

    @web.get("/error")
    def error(message: str = "bad input") -> dict:
        try:
            fail.remote(message)
        except ValueError as exc:
            return {"type": type(exc).__name__, "message": str(exc), "notes": exc.__notes__}
        return {"type": None}

    @web.get("/countdown")
    def stream(n: int = 3) -> StreamingResponse:
        events = (f"data: {json.dumps(item)}\n\n" for item in countdown.remote_gen(n))
        return StreamingResponse(events, media_type="text/event-stream")

    return web
