"""HTTP route templates of the Functions host: ``connections/{id}``, ``{id:int}``, ``{id?}``, ``{*rest}``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "bool": r"(?i:true|false)",
}


@dataclass
class Route:
    """A compiled route template bound to a function and its allowed methods."""

    template: str
    regex: re.Pattern[str]
    methods: set[str]
    auth_level: str
    function: Any

    @classmethod
    def compile(cls, template: str, methods: list[str] | None, auth_level: str, function: Any) -> Route:
        parts = []
        for segment in template.strip("/").split("/"):
            match = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}", segment)
            if not match:
                parts.append("/" + re.escape(segment))
                continue
            catch_all, name, constraint, optional = match.groups()
            if catch_all:
                parts.append(f"(?:/(?P<{name}>.*))?")
                continue
            body = _CONSTRAINTS.get(constraint or "", r"[^/]+")
            parts.append(f"(?:/(?P<{name}>{body})){'?' if optional else ''}")
        regex = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
        allowed = {m.upper() for m in (methods or ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])}
        return cls(template, regex, allowed, auth_level.lower(), function)

    def match(self, path: str) -> dict[str, str] | None:
        """Route params when ``path`` (without the route prefix, leading slash) matches, else None."""
        m = self.regex.match(path)
        if m is None:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}
