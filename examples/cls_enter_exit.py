"""@app.cls with @enter (once per replica, before the app is built), @exit and web methods.

rayweb serve examples/cls_enter_exit.py
curl 'http://127.0.0.1:8000/cls-demo-model-predict-dev?x=2'
"""

import os
import time

from fastapi import FastAPI

import rayweb

app = rayweb.App("cls-demo")


@app.cls(cpu=0.1)
class Model:
    @rayweb.enter()
    def load(self):
        # Expensive setup goes here: it runs once per replica, not per request.
        self.weights = {"scale": 10}
        self.loaded_at = time.time()
        self.pid = os.getpid()

    @rayweb.exit()
    def unload(self):
        marker = os.environ.get("RAYWEB_EXIT_MARKER")
        if marker:  # lets the test see that @exit ran at replica shutdown
            with open(marker, "a") as f:
                f.write(f"exit {self.pid}\n")

    @rayweb.fastapi_endpoint()
    def predict(self, x: float) -> dict:
        return {"y": x * self.weights["scale"], "pid": self.pid, "loaded_at": self.loaded_at}

    @rayweb.asgi_app()
    def api(self):
        web = FastAPI()

        @web.get("/info")
        def info():
            return {"weights": self.weights, "pid": self.pid}

        return web
