"""Server-sent events from fastapi_endpoint, asgi_app and wsgi_app; WebSockets on asgi_app;
large uploads streamed into request.stream(); and rayweb's limits.

    rayweb serve examples/streaming.py
    curl -N 'http://127.0.0.1:8000/streaming-events-dev?n=5'
"""

import asyncio
import time

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

import rayweb

# Limits are rayweb's own (enforced before your code); these are the defaults but for the
# smaller body limit. Use rayweb.Limits(rate_limit=None) to turn rate limiting off.
app = rayweb.App("streaming", limits=rayweb.Limits(max_request_body=256 * 1024**2))


@app.function()
@rayweb.fastapi_endpoint()
def events(n: int = 5, delay: float = 0.3) -> StreamingResponse:
    async def stream():
        for i in range(n):
            yield f"data: {i}\n\n"
            await asyncio.sleep(delay)

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.function()
@rayweb.concurrent(max_inputs=10)
@rayweb.asgi_app()
def live():
    web = FastAPI()

    @web.get("/sse")
    async def sse(n: int = 5, delay: float = 0.3):
        async def stream():
            for i in range(n):
                yield f"data: {i}\n\n"
                await asyncio.sleep(delay)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @web.post("/upload")
    async def upload(request: Request):
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}

    @web.websocket("/ws")
    async def ws(socket: WebSocket):
        offered = socket.scope.get("subprotocols", [])
        await socket.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text", "").startswith("close:"):
                    await socket.close(code=int(message["text"].split(":")[1]))
                    return
                if message.get("bytes") is not None:
                    await socket.send_bytes(message["bytes"])
                else:
                    await socket.send_text(message["text"])
        except WebSocketDisconnect:
            pass

    @web.get("/whoami")
    async def whoami(request: Request):
        return {"client": request.client.host if request.client else None}

    return web


@app.function()
@rayweb.wsgi_app()
def classic():
    from flask import Flask, Response

    web = Flask(__name__)

    @web.get("/sse")
    def sse():
        def stream():
            for i in range(5):
                yield f"data: {i}\n\n"
                time.sleep(0.3)

        return Response(stream(), mimetype="text/event-stream")

    return web
