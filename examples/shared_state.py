"""State shared by a web endpoint and backend workers through a ``Dict`` and a ``Queue``, as in
Modal's examples: the endpoint puts tasks in a Queue and spawns a worker; the worker (a class,
whose ``@enter`` reads its settings from a Dict) takes tasks off the Queue and writes each
result into another Dict, where the endpoint finds it. Named Dicts and Queues are kept on the
cluster's head node: they survive restarts of `rayweb serve` and of the cluster.

rayweb serve examples/shared_state.py
curl -X POST 'http://127.0.0.1:8000/shared-state-api-dev/tasks' \
     -H 'content-type: application/json' -d '{"text": "hello world"}'
curl 'http://127.0.0.1:8000/shared-state-api-dev/tasks/<task_id>'
rayweb dict items shared-state-results
"""

import os
import uuid

import rayweb

app = rayweb.App("shared-state")
tasks = rayweb.Queue.from_name("shared-state-tasks", create_if_missing=True)
results = rayweb.Dict.from_name("shared-state-results", create_if_missing=True)
config = rayweb.Dict.from_name("shared-state-config", create_if_missing=True)


@app.cls(scaledown_window=60)
class Worker:
    @rayweb.enter()
    def load(self) -> None:
        self.settings = config.get("settings", {"upper": True})

    @rayweb.method()
    def drain(self) -> int:
        """Take every waiting task off the queue; returns how many this call did."""
        done = 0
        while batch := tasks.get_many(16, block=False):
            for task in batch:
                text = task["text"].upper() if self.settings["upper"] else task["text"]
                results[task["id"]] = {"text": text, "words": len(text.split()), "pid": os.getpid()}
                done += 1
        return done


@app.function()
@rayweb.concurrent(max_inputs=16)
@rayweb.asgi_app()
def api():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    web = FastAPI()

    @web.post("/tasks")
    async def submit(task: dict) -> dict:
        task_id = uuid.uuid4().hex
        await tasks.put.aio({"id": task_id, "text": task["text"]})
        await Worker().drain.spawn.aio()
        return {"task_id": task_id}

    @web.get("/tasks/{task_id}")
    async def result(task_id: str):
        found = await results.get.aio(task_id)
        if found is None:
            return JSONResponse({"status": "pending"}, status_code=202)
        return {"status": "done", **found}

    @web.put("/settings")
    def settings(values: dict) -> dict:
        config["settings"] = values  # read by workers that start after this
        return {"settings": config["settings"]}

    @web.get("/stats")
    def stats() -> dict:
        return {"queued": tasks.len(), "results": results.len(), "pid": os.getpid()}

    return web
