"""HTTP primitives shared by every emulated service: request/response objects and the router.

The emulator deliberately avoids a web framework: the standard library server is enough, keeps
start-up instant and keeps the emulator free of anything the app itself might also depend on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

JSON_TYPE = "application/json; charset=utf-8"


class Headers:
    """Case-insensitive, read-only view of request headers (first value wins)."""

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        self._items: dict[str, str] = {}
        pairs = items.items() if isinstance(items, Mapping) else (items or [])
        for key, value in pairs:
            self._items.setdefault(key.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the header value, ignoring the case of ``name``."""
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def items(self) -> list[tuple[str, str]]:
        """All (lower-cased name, value) pairs."""
        return list(self._items.items())


@dataclass
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    client_address: tuple[str, int] = ("127.0.0.1", 0)
    raw_query: str = ""
    base_url: str = ""

    def json(self) -> Any:
        """Body parsed as JSON; raises ValueError when it is not valid JSON."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body.decode("utf-8-sig"))

    def form(self) -> dict[str, str]:
        """Body parsed as application/x-www-form-urlencoded (first value of each field)."""
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def query_all(self) -> dict[str, list[str]]:
        """Every value of every query parameter."""
        return parse_qs(self.raw_query, keep_blank_values=True)


class Response:
    """An HTTP response. dict/list bodies become JSON; str bodies are UTF-8 encoded."""

    def __init__(
        self,
        status: int,
        body: bytes | str | dict | list | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        if isinstance(body, dict | list):
            self.body = json.dumps(body).encode("utf-8")
            self._default_type(JSON_TYPE)
        elif isinstance(body, str):
            self.body = body.encode("utf-8")
            self._default_type("text/plain; charset=utf-8")
        else:
            self.body = body or b""

    def _default_type(self, content_type: str) -> None:
        if not any(key.lower() == "content-type" for key in self.headers):
            self.headers["Content-Type"] = content_type

    def json(self) -> Any:
        """The body parsed as JSON (handy in unit tests)."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:80]!r})"


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (objects or lists)."""
    return Response(status, json.dumps(obj).encode("utf-8"), {"Content-Type": JSON_TYPE, **(headers or {})})


def html_response(status: int, html: str, headers: dict[str, str] | None = None) -> Response:
    """An HTML page response."""
    return Response(status, html.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8", **(headers or {})})


def redirect(url: str, status: int = 302) -> Response:
    """A redirect to ``url``."""
    return Response(status, b"", {"Location": url})


def add_query(url: str, params: dict[str, str]) -> str:
    """Append query parameters to a URL that may already have some."""
    sep = "&" if "?" in url else "?"
    return url + sep + urlencode(params)


class Drop(Exception):  # noqa: N818 - it is a control-flow signal, named for what it does
    """Raise from a handler to reset the TCP connection without any response."""


class HTTPError(Exception):
    """Raise from a handler to short-circuit with a ready-made response."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


Handler = Callable[..., Response]
_PARAM = re.compile(r"\{(\w+)(:path)?\}")


@dataclass
class Route:
    """A registered route: method, compiled pattern, endpoint name and handler."""

    method: str
    pattern: str
    name: str
    handler: Handler
    regex: re.Pattern[str]


class Router:
    """Maps (method, path) to handlers; path matching ignores case (Graph paths are case-insensitive)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        out, pos = [], 0
        for match in _PARAM.finditer(pattern):
            out.append(re.escape(pattern[pos : match.start()]))
            regex = ".+" if match.group(2) else "[^/]+"
            out.append(f"(?P<{match.group(1)}>{regex})")
            pos = match.end()
        out.append(re.escape(pattern[pos:]))
        return re.compile("^" + "".join(out) + "/?$", re.IGNORECASE)

    def add(self, method: str, pattern: str, name: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` + ``pattern`` under endpoint ``name``."""
        self.routes.append(Route(method.upper(), pattern, name, handler, self._compile(pattern)))

    def route(self, method: str, pattern: str, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`; pattern segments ``{p}`` match one segment, ``{p:path}`` the rest."""

        def decorator(handler: Handler) -> Handler:
            self.add(method, pattern, name, handler)
            return handler

        return decorator

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None | bool:
        """Return (route, params); False when the path exists for another method; None when unknown.

        Routes are tried in registration order, so register literal routes before catch-alls.
        """
        path_known = False
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == method.upper() or (route.method == "GET" and method.upper() == "HEAD"):
                return route, found.groupdict()
            path_known = True
        return False if path_known else None
