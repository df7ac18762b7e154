"""GET /api/health and function_app.py's validity for the real Functions host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_health_reports_configuration(monkeypatch, app_functions):
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    for key, value in sample.items():
        monkeypatch.setenv(key, value)
    resp = app_functions["health"].get_user_function()(func.HttpRequest("GET", "/api/health", body=b""))
    body = json.loads(resp.get_body())
    assert resp.status_code == 200 and body["ok"] is True and body["service"] == "mailbridge"
    assert body["scopes"] == ["Mail.Send"]
    assert sample["ENTRA_CLIENT_SECRET"] not in resp.get_body().decode()
    assert sample["TICKET_SIGNING_KEY"] not in resp.get_body().decode()


def test_health_names_a_missing_setting(monkeypatch, app_functions):
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv("ENTRA_CLIENT_ID", "x")
    resp = app_functions["health"].get_user_function()(func.HttpRequest("GET", "/api/health", body=b""))
    assert resp.status_code == 503
    assert json.loads(resp.get_body())["error"]["setting"] in {"KEY_VAULT_URL", "ENTRA_CLIENT_CREDENTIAL"}


def test_every_http_route_declares_its_auth_level(app_functions):
    for fn in app_functions.values():
        meta = json.loads(fn.get_function_json())
        trigger = meta["bindings"][0]
        if trigger["type"] == "httpTrigger":
            assert trigger["authLevel"] in {"ANONYMOUS", "FUNCTION", "ADMIN"}, fn.get_function_name()


@pytest.mark.slow
def test_azure_functions_doctor_finds_no_failure(tmp_path):
    out = tmp_path / "doctor.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "azure-functions-doctor"),
            "doctor",
            "--path",
            str(REPO),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out.write_text(proc.stdout)
    report = json.loads(proc.stdout)
    items = {i["rule_id"]: i for r in report["results"] for i in r["items"]}
    failed = [rid for rid, item in items.items() if item["status"] == "fail"]
    assert not failed, failed
    assert items["check_programming_model_v2"]["status"] == "pass"
    assert items["check_blueprint_registration"]["status"] == "pass"
