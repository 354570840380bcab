"""Uploads into a Volume, processed by a backend function, results in a Dict: the everyday
Modal pattern of one function writing files that another reads.

The web endpoint streams each upload into the volume (mounted at ``/data``, as on Modal;
``EXAMPLE_MOUNT`` moves it), then spawns ``process``, which runs in its own replica, reads
the file from the same volume, writes a summary next to it and puts it in a Dict.

rayweb volume create uploads-files   # or let create_if_missing=True do it
rayweb serve examples/uploads.py
curl -X POST --data-binary @README.md 'http://127.0.0.1:8000/uploads-api-dev/upload/readme.md'
curl 'http://127.0.0.1:8000/uploads-api-dev/result/readme.md'
rayweb volume ls uploads-files incoming
rayweb dict items uploads-results
"""

import hashlib
import json
import os
import re
from pathlib import Path

import rayweb

app = rayweb.App("uploads")
volume = rayweb.Volume.from_name("uploads-files", create_if_missing=True)
results = rayweb.Dict.from_name("uploads-results", create_if_missing=True)
MOUNT = os.environ.get("EXAMPLE_MOUNT", "/data")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@app.function(volumes={MOUNT: volume}, scaledown_window=60)
def process(name: str) -> dict:
    volume.reload()  # on Modal: see the uploader's commit (on a shared filesystem: at once)
    data = Path(MOUNT, "incoming", name).read_bytes()
    summary = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": data.count(b"\n"),
        "pid": os.getpid(),
    }
    Path(MOUNT, "processed").mkdir(exist_ok=True)
    Path(MOUNT, "processed", f"{name}.json").write_text(json.dumps(summary))
    volume.commit()
    results[name] = summary
    return summary


@app.function(volumes={MOUNT: volume})
@rayweb.concurrent(max_inputs=8)
@rayweb.asgi_app()
def api():
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse

    web = FastAPI()

    @web.post("/upload/{name}")
    async def upload(name: str, request: Request) -> dict:
        if not SAFE_NAME.match(name):
            raise HTTPException(400, "name: letters, digits, '.', '_', '-' (no paths)")
        incoming = Path(MOUNT, "incoming")
        incoming.mkdir(parents=True, exist_ok=True)
        size = 0
        with open(incoming / name, "wb") as f:  # streamed: memory stays flat for big files
            async for chunk in request.stream():
                f.write(chunk)
                size += len(chunk)
        volume.commit()
        call = await process.spawn.aio(name)
        return {"name": name, "bytes": size, "call_id": call.object_id, "pid": os.getpid()}

    @web.get("/result/{name}")
    async def result(name: str):
        found = await results.get.aio(name)
        if found is None:
            return JSONResponse({"status": "pending"}, status_code=202)
        return {"status": "done", **found}

    @web.get("/files")
    def files() -> list[str]:
        return sorted(e.path for e in volume.listdir("/", recursive=True))

    return web
