"""One set of containers per @app.cls, as on Modal: the class's web methods (fastapi, ASGI,
WSGI) and its @methods run in the same replicas, with one @enter per container, each web
method at its own URL. @concurrent (here Modal's default: one input at a time) bounds them
all together.

rayweb serve examples/class_pool.py
curl 'http://127.0.0.1:8000/class-pool-model-predict-dev?x=3'
curl http://127.0.0.1:8000/class-pool-model-api-dev/info
curl http://127.0.0.1:8000/class-pool-model-legacy-dev/
"""

import json
import os
import time

from fastapi import FastAPI

import rayweb

app = rayweb.App("class-pool")

LOADS: list[float] = []  # @enter calls in this process: one per container


@app.cls(cpu=0.1, min_containers=1, max_containers=1)
class Model:
    @rayweb.enter()
    def load(self):
        time.sleep(0.2)  # loading weights: once per container, shared by every method
        LOADS.append(time.time())
        self.weights = {"scale": 10}

    def _run(self, x: float, delay: float) -> dict:
        started = time.time()
        time.sleep(delay)
        return {
            "y": x * self.weights["scale"],
            "pid": os.getpid(),
            "loads": len(LOADS),
            "span": [started, time.time()],  # when this input held the container
        }

    @rayweb.method()
    def embed(self, x: float, delay: float = 0.0) -> dict:
        return self._run(x, delay)

    @rayweb.fastapi_endpoint()
    def predict(self, x: float, delay: float = 0.0) -> dict:
        return self._run(x, delay)

    @rayweb.asgi_app()
    def api(self):
        web = FastAPI()

        @web.get("/info")
        def info(delay: float = 0.0) -> dict:
            return self._run(0.0, delay)

        return web

    @rayweb.wsgi_app()
    def legacy(self):
        def wsgi(environ, start_response):
            body = json.dumps(self._run(1.0, 0.0)).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        return wsgi
