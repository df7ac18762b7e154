"""docs/openapi.yaml is a valid OpenAPI 3.0 document that matches the routes function_app registers,
and the app's real answers (real Azurite, emulator) match the statuses and schemas it documents."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.fixtures.app import FUNCTION_KEY
from tests.test_security import devhost_app_fixture  # noqa: F401  (registers devhost_app: the real app)

REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO / "docs" / "openapi.yaml"
SEND_SCHEMA = REPO / "docs" / "schema" / "send-v1.json"
# The sample page exists only on loopback runs (blueprints/ui.py); the document names it as local-only.
LOCAL_ONLY_PREFIX = "ui"
SCHEMATHESIS_EXAMPLES = 10  # per operation; cheap enough for the suite
METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def http_routes(app_functions: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(path, method) -> (function name, auth level) for every HTTP function of function_app."""
    routes = {}
    for name, fn in app_functions.items():
        for binding in json.loads(fn.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                for method in binding["methods"]:
                    routes[("/" + binding["route"], method.lower())] = (name, binding["authLevel"].lower())
    return routes


def documented(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): op for path, item in spec["paths"].items() for method, op in item.items() if method in METHODS
    }


def test_document_is_valid_openapi_30(spec):
    assert spec["openapi"].startswith("3.0")
    validate(spec)


def test_every_route_is_documented_and_nothing_else(spec, app_functions):
    registered = {k: v for k, v in http_routes(app_functions).items() if not k[0].startswith(f"/{LOCAL_ONLY_PREFIX}")}
    docs = documented(spec)
    assert set(registered) == set(docs), {
        "undocumented": sorted(set(registered) - set(docs)),
        "not registered": sorted(set(docs) - set(registered)),
    }
    for key, (name, _) in registered.items():
        assert docs[key]["operationId"] == name, key


def test_local_only_routes_are_named_as_such(spec, app_functions):
    local = {path for path, _ in http_routes(app_functions) if path.startswith(f"/{LOCAL_ONLY_PREFIX}")}
    assert local, "the sample page routes moved: update LOCAL_ONLY_PREFIX"
    description = spec["info"]["description"]
    for path in local:
        assert f"/api{path}" in description, path


def test_security_matches_each_routes_auth_level(spec, app_functions):
    schemes = spec["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "x-functions-key"), ("query", "code")}
    docs = documented(spec)
    for key, (_, level) in http_routes(app_functions).items():
        if key in docs:
            security = docs[key].get("security", spec["security"])
            assert (security == []) == (level == "anonymous"), key
            if level != "anonymous":
                assert "401" in docs[key]["responses"], key


def test_json_errors_share_one_shape(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}
    for name, resp in spec["components"]["responses"].items():
        schema = resp.get("content", {}).get("application/json", {}).get("schema")
        if schema and name != "DeliveryFailed":
            assert schema == {"$ref": "#/components/schemas/Error"}, name


def test_message_outline_agrees_with_the_published_schema(spec):
    """The OpenAPI outline of the message must not contradict docs/schema/send-v1.json (the normative one)."""
    published = json.loads(SEND_SCHEMA.read_text())
    outline = spec["components"]["schemas"]["SendMessage"]
    assert outline["externalDocs"]["url"] == "schema/send-v1.json"
    assert set(outline["required"]) == set(published["required"])
    for name, prop in outline["properties"].items():
        assert name in published["properties"], name
        if "pattern" in prop:
            assert prop["pattern"] == published["properties"][name]["pattern"], name


# --- the app's answers match the document ----------------------------------------------------------------


def node_ref_parts(ref: str) -> list[str]:
    return ref.removeprefix("#/").split("/")


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node_ref_parts(node["$ref"]):
            target = target[part]
        node = target
    return node


def check_response(spec: dict[str, Any], path: str, method: str, resp) -> None:
    """The status is documented for this operation and a JSON body validates against its schema."""
    op = spec["paths"][path][method]
    status = str(resp.status_code)
    assert status in op["responses"], f"{method.upper()} {path} answered undocumented {status}: {resp.get_body()[:300]}"
    documented_resp = resolve(spec, op["responses"][status])
    content = documented_resp.get("content", {})
    if "application/json" in content:
        schema = {**resolve(spec, content["application/json"]["schema"]), "components": spec["components"]}
        OAS30Validator(schema).validate(json.loads(resp.get_body()))
    elif "text/html" in content:
        assert resp.mimetype == "text/html"


def test_answers_match_the_document(spec, mailbridge):
    mb = mailbridge()
    link = mb.http("create_connection_link", "POST", body={"user_ref": "u1", "return_url": "https://saas.example/back"})
    check_response(spec, "/connections", "post", link)
    check_response(spec, "/connections", "post", mb.http("create_connection_link", "POST", body={"user_ref": ""}))
    back = mb.connect("alice", user_ref="u1")
    cid = back["connection_id"]
    check_response(spec, "/health", "get", mb.http("health"))
    check_response(spec, "/connections", "get", mb.http("list_connections", params={"user_ref": "u1"}))
    check_response(spec, "/connections", "get", mb.http("list_connections"))
    route = {"connection_id": cid}
    check_response(spec, "/connections/{connection_id}", "get", mb.http("get_connection", route_params=route))
    missing = {"connection_id": "nope"}
    check_response(spec, "/connections/{connection_id}", "get", mb.http("get_connection", route_params=missing))
    message = {
        "id": f"m-{uuid.uuid4().hex[:10]}",
        "connection_id": cid,
        "to": ["someone@example.com"],
        "subject": "Hi",
        "body": {"content": "Hello"},
    }
    check_response(spec, "/messages", "post", mb.http("enqueue_message", "POST", body=message))
    check_response(spec, "/messages", "post", mb.http("enqueue_message", "POST", body=message))  # replay: 200
    check_response(spec, "/messages", "post", mb.http("enqueue_message", "POST", body={**message, "subject": "Other"}))
    check_response(spec, "/messages", "post", mb.http("enqueue_message", "POST", body=b"{not json"))
    msg_route = {"message_id": message["id"]}
    status = mb.http("get_message", params={"connection_id": cid}, route_params=msg_route)
    check_response(spec, "/messages/{message_id}", "get", status)
    check_response(spec, "/messages/{message_id}", "get", mb.http("get_message", route_params=msg_route))
    test = mb.http("send_test_message", "POST", route_params=route)
    check_response(spec, "/connections/{connection_id}/test", "post", test)
    check_response(spec, "/connect/start", "get", mb.http("connect_start", params={"ticket": "forged"}))
    check_response(spec, "/connect/callback", "get", mb.http("connect_callback", params={"state": "x", "code": "y"}))
    consent = mb.http("admin_consent", params={"tenant": "contoso.example"})
    check_response(spec, "/admin-consent", "get", consent)
    check_response(spec, "/admin-consent/callback", "get", mb.http("admin_consent_callback", params={"state": "x"}))
    check_response(
        spec, "/connections/{connection_id}", "delete", mb.http("delete_connection", "DELETE", route_params=route)
    )
    check_response(
        spec, "/connections/{connection_id}/test", "post", mb.http("send_test_message", "POST", route_params=route)
    )


# --- schemathesis against the real app under devhost --------------------------------------------------------


def test_schemathesis_finds_no_server_error(devhost_app, spec):
    """Cases generated from docs/openapi.yaml by schemathesis, sent over HTTP to the real app under devhost:
    never a 5xx, and a status the document lists for the operation."""
    import schemathesis
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    base_url = devhost_app["url"] + "/api"
    budget = settings(
        max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    for path, method in documented(spec):
        check_operation(schema, spec, base_url, path, method, budget)


def check_operation(schema, spec, base_url: str, path: str, method: str, budget) -> None:
    from hypothesis import given

    listed = set(spec["paths"][path][method]["responses"])

    @budget
    @given(case=schema[path][method.upper()].as_strategy())
    def run(case) -> None:
        resp = case.call(
            base_url=base_url, headers={"x-functions-key": FUNCTION_KEY}, allow_redirects=False, timeout=30
        )
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text[:300])
        assert str(resp.status_code) in listed, (method, path, resp.status_code, resp.text[:300])

    run()
