"""A Flask app served with @rayweb.wsgi_app(): GET, POST JSON and a streamed response.

rayweb serve examples/wsgi_flask.py
curl http://127.0.0.1:8000/flask-demo-flask-app-dev/
"""

import time

import rayweb

app = rayweb.App("flask-demo")


@app.function()
@rayweb.wsgi_app()
def flask_app():
    from flask import Flask, Response, request

    web = Flask(__name__)

    @web.get("/")
    def home():
        return "hello from flask"

    @web.post("/echo")
    def echo():
        return {"got": request.get_json()}

    @web.get("/stream")
    def stream():
        def generate():
            for i in range(3):
                yield f"chunk {i}\n"
                time.sleep(0.05)

        return Response(generate(), mimetype="text/plain")

    return web
