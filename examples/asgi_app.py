"""A FastAPI app with several routes and a lifespan, served with @rayweb.asgi_app().

rayweb serve examples/asgi_app.py
curl http://127.0.0.1:8000/asgi-demo-web-dev/items/3
"""

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import rayweb

app = rayweb.App("asgi-demo")


@app.function()
@rayweb.asgi_app()
def web():
    @asynccontextmanager
    async def lifespan(api: FastAPI):
        api.state.started = True  # runs once per replica, before the first request
        yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/")
    def root():
        return {"hello": "asgi"}

    @api.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    @api.post("/items")
    async def create(request: Request):
        return {"created": await request.json()}

    @api.get("/lifespan")
    def lifespan_state(request: Request):
        return {"started": getattr(request.app.state, "started", False)}

    return api
