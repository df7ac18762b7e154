"""The sample page's script (blueprints/ui_static/app.js) under Node with a stand-in DOM (tests/js/sample_page.js):
what it renders from the URL of the page. tests/test_browser.py drives the same page in Chromium; this runs
where Chromium is not installed. Needs ``node`` (skipped without it, failed under CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "blueprints" / "ui_static" / "app.js"
HARNESS = REPO / "tests" / "js" / "sample_page.js"
PAGE = "http://127.0.0.1:7071/api/ui"


def render(query: str) -> dict[str, Any]:
    """The #outcome box (tag, attrs, text, children) after the page loads with ``?query``."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("node not found (CI=true: the sample page script tests must run)")
        pytest.skip("node not found (apt-get install -y nodejs)")
    out = subprocess.run(
        [node, str(HARNESS), str(SCRIPT), f"{PAGE}?{query}"], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def elements(box: Any) -> list[dict[str, Any]]:
    found, stack = [], [box]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.append(node)
            stack.extend(node["children"])
    return found


def text(box: Any) -> str:
    if isinstance(box, str):
        return box
    return box["text"] + "".join(text(c) for c in box["children"])


def links(box: dict[str, Any]) -> list[dict[str, str]]:
    return [e["attrs"] for e in elements(box) if e["tag"] == "a"]


FOREIGN = [
    "https://evil.example/api/admin-consent",
    "http://127.0.0.1:7072/api/admin-consent",  # another port: another origin
    "http://localhost:7071/api/admin-consent",
    "https://127.0.0.1:7071/api/admin-consent",
    "//evil.example/api/admin-consent",
    "http://127.0.0.1:7071/api/admin-consent/../connect/start?ticket=x",  # normalised to another route
    "http://127.0.0.1:7071/api/admin-consentx",
    "http://user@127.0.0.1:7071/api/admin-consent",
    "https://login.microsoftonline.com.evil.example/common/v2.0/adminconsent",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", FOREIGN)
def test_a_foreign_admin_consent_url_is_not_rendered_as_a_link(url):
    box = render(f"status=error&error=admin_consent_required&admin_consent_url={quote(url, safe='')}")
    assert box["className"] == "outcome error" and "Not connected" in text(box)  # the error itself is shown
    assert links(box) == [], links(box)
    assert "evil" not in text(box)


@pytest.mark.parametrize("url", [f"{PAGE[: -len('/ui')]}/admin-consent", "/api/admin-consent?tenant=contoso.example"])
def test_the_apps_own_admin_consent_url_is_rendered_with_a_way_back(url):
    box = render(f"status=error&error=admin_consent_required&admin_consent_url={quote(url, safe='')}")
    (link,) = links(box)
    href = urlsplit(link["href"])
    assert (href.scheme, href.netloc, href.path) == ("http", "127.0.0.1:7071", "/api/admin-consent")
    assert parse_qs(href.query)["return_url"] == [PAGE]
    assert link["id"] == "admin-consent-link"
