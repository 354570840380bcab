"""Endpoints that only token holders can call (requires_proxy_auth=True), HTTP and WebSocket.

rayweb token create --name demo          # prints a key (wk-...) and a secret (ws-...)
rayweb serve examples/proxy_auth.py
curl -H "Modal-Key: wk-..." -H "Modal-Secret: ws-..." http://127.0.0.1:8000/secure-hello-dev
curl -H "Authorization: Bearer wk-....ws-..." http://127.0.0.1:8000/secure-hello-dev
"""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

import rayweb

app = rayweb.App("secure")


@app.function()
@rayweb.fastapi_endpoint(requires_proxy_auth=True)
def hello() -> dict:
    return {"message": "only for token holders"}


@app.function()
@rayweb.asgi_app(requires_proxy_auth=True)
def api():
    web = FastAPI()

    @web.get("/")
    def root():
        return {"api": "ok"}

    @web.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        try:
            while True:
                await socket.send_text(await socket.receive_text())
        except WebSocketDisconnect:
            pass

    return web
