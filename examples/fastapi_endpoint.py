"""Modal's web-endpoint page, with rayweb in place of modal.

rayweb serve examples/fastapi_endpoint.py
curl 'http://127.0.0.1:8000/api-service-search-dev?query=ray&limit=2'
"""

import asyncio

from fastapi import Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import rayweb

app = rayweb.App("api-service")


@app.function()
@rayweb.fastapi_endpoint()
def search(query: str, limit: int = 10) -> dict:
    """GET with typed query parameters and a default."""
    return {"query": query, "results": [f"{query}-{i}" for i in range(limit)]}


@app.function()
@rayweb.fastapi_endpoint(method="POST")
def echo(body: dict) -> dict:
    """POST with a free-form JSON body."""
    return {"received": body}


class Item(BaseModel):
    name: str
    qty: int = 1


@app.function()
@rayweb.fastapi_endpoint(method="POST", docs=True)
async def order(item: Item) -> dict:
    """POST with a pydantic model body; async; /docs is on."""
    return {"name": item.name, "total": item.qty * 3}


@app.function()
@rayweb.fastapi_endpoint()
def plain(name: str = "world") -> Response:
    """Returning a Response sets body, media type and headers directly."""
    return Response(f"hello {name}", media_type="text/plain", headers={"x-greeting": "1"})


@app.function()
@rayweb.fastapi_endpoint()
def stream(n: int = 3) -> StreamingResponse:
    """A streamed response."""

    async def events():
        for i in range(n):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    with rayweb.serve(app) as handle:
        input("Serving; press Enter to stop.\n")
