"""OData query options the emulated message endpoints understand.

Only what the idempotent-send lookup needs, parsed strictly (anything else is a 400, so a
client cannot rely on a query the emulator silently ignores):
- `$filter=singleValueExtendedProperties/Any(ep: ep/id eq '<id>' and ep/value eq '<v>')`
  (conditions in either order; the value condition is optional and, as in Graph, case-insensitive;
  any lambda variable name),
- `$expand=singleValueExtendedProperties($filter=id eq '<id>')`, plain
  `singleValueExtendedProperties`, and `attachments`,
- `$select=a,b,c`, `$top` (1-1000, default 10 like Graph) and `$skip`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emulator.graph_message import GraphError

_LITERAL = r"'((?:[^']|'')*)'"
_ANY_RE = re.compile(
    r"^\s*singleValueExtendedProperties\s*/\s*any\s*\(\s*([A-Za-z_]\w*)\s*:\s*(.*)\)\s*$", re.IGNORECASE | re.DOTALL
)
_EXPAND_PROPS_RE = re.compile(
    r"^singleValueExtendedProperties\s*(?:\(\s*\$filter\s*=\s*id\s+eq\s+" + _LITERAL + r"\s*\))?$",
    re.IGNORECASE | re.DOTALL,
)


def _invalid_filter(detail: str) -> GraphError:
    return GraphError(
        400, "ErrorInvalidUrlQueryFilter", f"The query filter contains one or more invalid nodes. ({detail})"
    )


def _unquote(literal: str) -> str:
    return literal.replace("''", "'")


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


@dataclass
class PropertyFilter:
    """`singleValueExtendedProperties/Any(...)`: property id (case-insensitive) and optional value."""

    prop_id: str
    value: str | None = None

    def matches(self, props: list[dict[str, str]]) -> bool:
        """True when one of `props` has this id (and value, when given)."""
        want = " ".join(self.prop_id.split()).lower()
        # "Filtering the value property of an extended property is case-insensitive"
        # (singlevaluelegacyextendedproperty-get): 'Order-1' also finds 'order-1'.
        value = None if self.value is None else self.value.lower()
        return any(p["id"].lower() == want and (value is None or p["value"].lower() == value) for p in props)


def parse_filter(text: str) -> PropertyFilter:
    """Parse the one supported `$filter` form or raise a 400 GraphError."""
    match = _ANY_RE.match(text)
    if not match:
        raise _invalid_filter("only singleValueExtendedProperties/Any(...) is supported by the emulator")
    var, body = match.group(1), _strip_parens(match.group(2))
    cond_re = re.compile(
        r"^\(?\s*" + re.escape(var) + r"\s*/\s*(id|value)\s+eq\s+" + _LITERAL + r"\s*\)?$", re.IGNORECASE | re.DOTALL
    )
    parts = re.split(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", body, flags=re.IGNORECASE)
    found: dict[str, str] = {}
    for part in parts:
        cond = cond_re.match(part.strip())
        if not cond:
            raise _invalid_filter(f"cannot parse condition {part.strip()!r}")
        name = cond.group(1).lower()
        if name in found:
            raise _invalid_filter(f"duplicate condition on {name}")
        found[name] = _unquote(cond.group(2))
    if "id" not in found:
        raise _invalid_filter("the lambda must compare the property id")
    return PropertyFilter(found["id"], found.get("value"))


def _split_top_level(text: str) -> list[str]:
    """Split on commas not inside parentheses or quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


@dataclass
class Expand:
    """Parsed `$expand`: extended properties (all, or one id) and/or attachments."""

    props: bool = False
    prop_id: str | None = None
    attachments: bool = False

    def props_for(self, props: list[dict[str, str]]) -> list[dict[str, str]] | None:
        """The extended properties to return for a message (None when not expanded)."""
        if not self.props:
            return None
        if self.prop_id is None:
            return [dict(p) for p in props]
        want = " ".join(self.prop_id.split()).lower()
        return [dict(p) for p in props if p["id"].lower() == want]


def parse_expand(text: str | None) -> Expand:
    """Parse `$expand` or raise a 400 GraphError."""
    out = Expand()
    for part in _split_top_level(text or ""):
        if part.lower() == "attachments":
            out.attachments = True
            continue
        match = _EXPAND_PROPS_RE.match(part)
        if not match:
            raise GraphError(
                400,
                "BadRequest",
                f"Parsing OData Select and Expand failed: unsupported "
                f"$expand {part!r} (the emulator supports singleValueExtendedProperties and "
                "attachments).",
            )
        out.props = True
        out.prop_id = _unquote(match.group(1)) if match.group(1) is not None else None
    return out


@dataclass
class ListQuery:
    """All query options of a message listing."""

    filter: PropertyFilter | None = None
    expand: Expand = field(default_factory=Expand)
    select: list[str] | None = None
    top: int = 10
    skip: int = 0


def _int_option(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for {name}.") from None
    if not lo <= value <= hi:
        raise GraphError(400, "BadRequest", f"{name} must be between {lo} and {hi}.")
    return value


def parse_list_query(query: dict[str, str]) -> ListQuery:
    """Parse the query options of `GET .../messages`; unknown `$` options are refused."""
    known = {"$filter", "$expand", "$select", "$top", "$skip"}
    for key in query:
        if key.startswith("$") and key.lower() not in known:
            raise GraphError(400, "BadRequest", f"Query option '{key}' is not supported by the emulator.")
    lowered = {k.lower(): v for k, v in query.items()}
    out = ListQuery()
    if lowered.get("$filter"):
        out.filter = parse_filter(lowered["$filter"])
    out.expand = parse_expand(lowered.get("$expand"))
    if lowered.get("$select"):
        out.select = _split_top_level(lowered["$select"])
    out.top = _int_option(lowered, "$top", 10, 1, 1000)
    out.skip = _int_option(lowered, "$skip", 0, 0, 10_000_000)
    return out
