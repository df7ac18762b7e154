"""HTTP adapters for sending (function key): enqueue a message, read its delivery record, send a test."""

from __future__ import annotations

import azure.functions as func

from blueprints.http_util import api, json_response, read_json

messages_bp = func.Blueprint()

# A 25 MB message arrives base64-encoded inside JSON: allow for the 4/3 growth plus the envelope.
_BODY_LIMIT_FACTOR = 1.4


def _intake():
    """The intake service, imported on first use (function_app stays cheap to load)."""
    from shared.send.intake import MessageIntake
    from shared.services import get_services

    return MessageIntake(get_services())


@messages_bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api
def enqueue_message(req: func.HttpRequest) -> func.HttpResponse:
    """A mailbridge.send/v1 message in; 202 {id, status, status_url} (200 + duplicate:true on a replay).
    ``?user_ref=`` (optional): the message's connection must belong to that user_ref, else 404
    ``unknown_connection`` as for an unknown id. A query parameter, not a body field: the message schema
    is the queue's public contract (mailbridge.send/v1) and stays as it is."""
    intake = _intake()
    limit = int(intake.settings.max_message_bytes * _BODY_LIMIT_FACTOR) + 256 * 1024
    status, body = intake.accept(read_json(req, max_bytes=limit), req.params.get("user_ref"))
    return json_response(body, status=status, headers={"Location": body["status_url"]})


@messages_bp.route(route="messages", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api
def list_messages(req: func.HttpRequest) -> func.HttpResponse:
    """The outgoing log: ?connection_id=&status=&since=&limit=&continuation=&user_ref=, newest first."""
    from shared.send.outgoing_log import OutgoingLog
    from shared.services import get_services

    return json_response(OutgoingLog(get_services()).page(dict(req.params)))


@messages_bp.route(route="messages/{message_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api
def get_message(req: func.HttpRequest) -> func.HttpResponse:
    """The delivery record: GET /api/messages/{id}?connection_id=...&user_ref=... (user_ref optional)."""
    params = req.params
    return json_response(
        _intake().status(req.route_params["message_id"], params.get("connection_id"), params.get("user_ref"))
    )


@messages_bp.route(route="messages/{message_id}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
@api
def cancel_message(req: func.HttpRequest) -> func.HttpResponse:
    """Cancel a message not yet sending: DELETE /api/messages/{id}?connection_id=...&user_ref=... -> 200 with the
    record (status ``canceled``); 409 ``not_cancelable`` once it is sending or final; 404 for an unknown id."""
    params = req.params
    return json_response(
        _intake().cancel(req.route_params["message_id"], params.get("connection_id"), params.get("user_ref"))
    )


@messages_bp.route(route="connections/{connection_id}/test", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api
def send_test_message(req: func.HttpRequest) -> func.HttpResponse:
    """Send a test message from the connected mailbox to itself; answers with its delivery record."""
    status, body = _intake().send_test(req.route_params["connection_id"], req.params.get("user_ref"))
    return json_response(body, status=status)
