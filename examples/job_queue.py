"""A job queue, as in Modal's examples: the web endpoint spawns a slow backend function and
returns the call's id at once; the client polls another endpoint, which reads the result
with ``FunctionCall.from_id(id).get(timeout=0)`` (202 while it runs). ``/submit-by-name``
finds the backend as a separate web app would, with ``Function.from_name(app, name)``.

rayweb serve examples/job_queue.py
curl -X POST 'http://127.0.0.1:8000/jobs-api-dev/submit' -H 'content-type: application/json' \
     -d '{"text": "hello", "seconds": 2}'
curl 'http://127.0.0.1:8000/jobs-api-dev/result/<call_id>'
"""

import time

import rayweb

app = rayweb.App("jobs")


@app.function(scaledown_window=120)
@rayweb.concurrent(max_inputs=8)
def process(job: dict) -> dict:
    time.sleep(float(job.get("seconds", 1)))
    return {"text": job["text"].upper(), "finished_at": time.time()}


@app.function()
@rayweb.concurrent(max_inputs=8)
@rayweb.asgi_app()
def api():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    web = FastAPI()

    @web.post("/submit")
    def submit(job: dict) -> dict:
        return {"call_id": process.spawn(job).object_id}

    @web.post("/submit-by-name")
    async def submit_by_name(job: dict) -> dict:
        backend = rayweb.Function.from_name("jobs", "process")  # as another app would
        return {"call_id": (await backend.spawn.aio(job)).object_id}

    @web.get("/result/{call_id}")
    def result(call_id: str):
        call = rayweb.FunctionCall.from_id(call_id)
        try:
            return {"status": "done", "result": call.get(timeout=0)}
        except TimeoutError:
            return JSONResponse({"status": "pending"}, status_code=202)

    @web.post("/cancel/{call_id}")
    def cancel(call_id: str) -> dict:
        rayweb.FunctionCall.from_id(call_id).cancel()
        return {"cancelled": call_id}

    return web
