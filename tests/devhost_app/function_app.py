"""A tiny function app that exercises every trigger kind the dev host must honour (used by test_devhost)."""

import json
import os
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
OUT = Path(os.environ.get("DEVHOST_TEST_OUT", "."))


def record(kind: str, **data) -> None:
    with open(OUT / f"{kind}.jsonl", "a") as fh:
        fh.write(json.dumps({"t": time.time(), **data}) + "\n")


@app.route(route="items/{item_id}", methods=["GET", "DELETE"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"id": req.route_params["item_id"], "method": req.method, "q": req.params.get("q")}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="items/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("literal route wins")


@app.route(route="open", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), status_code=201, mimetype="text/plain", headers={"X-Echo": "yes"})


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("unhandled")


@app.route(route="adminonly", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="AzureWebJobsStorage")
def worker(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    record("queue", id=msg.id, body=body, dequeue_count=msg.dequeue_count)
    if body.startswith("fail"):
        raise RuntimeError("asked to fail")
    if body.startswith("slow"):
        time.sleep(0.5)


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
def ticker(timer: func.TimerRequest) -> None:
    record("timer", past_due=timer.past_due, pid=os.getpid())
