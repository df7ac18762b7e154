"""How deep a JSON text nests, measured on its bytes before parsing (no recursion, bounded memory).

``json.loads`` recurses once per nested array/object: a body of 100,000 ``[`` raises RecursionError
(an HTTP 500 before this check), and anything that walks the parsed value recursively later
(pydantic, ``json.dumps``) can meet the same limit. No Mailbridge input nests more than a few
levels, so callers refuse text nested deeper than :data:`MAX_DEPTH` before parsing it.

The scan is stdlib only and runs in C for the bulk of the work: a text with at most ``limit``
opening brackets cannot nest deeper, so most bodies are never scanned. Otherwise the text is read
in chunks: escape pairs (``\\\\``, ``\\"``) are dropped, the chunk is split on ``"`` (the parts
alternate outside / inside a string), and the brackets outside strings become +1 / -1 whose
running sum is the depth. Extra memory is bounded by the chunk size (a few MB at worst), whatever the size of the text.
"""

from __future__ import annotations

import base64
import binascii
import json
from array import array
from itertools import accumulate
from typing import Any

from shared.base import errors

MAX_DEPTH = 64

_CHUNK = 64 * 1024  # split() makes an object per string: ~25 bytes of list + objects per byte, at worst
_SLICE = 8 * 1024  # running sums are computed per slice: a list of at most this many ints
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 / -1
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays/objects more than ``limit`` levels deep.

    Exact for valid JSON. For invalid JSON the answer does not matter (the parser refuses it), except
    that the part before the first error is measured exactly, so the parser never recurses past
    ``limit`` on its way to that error."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    escapes = b"\\" in raw
    depth, in_string, carry = 0, False, b""
    for start in range(0, len(raw), _CHUNK):
        chunk = carry + raw[start : start + _CHUNK]
        carry = b""
        if escapes:
            # A backslash escapes the next byte: keep an odd trailing run's last one for the next chunk.
            if (len(chunk) - len(chunk.rstrip(b"\\"))) % 2:
                chunk, carry = chunk[:-1], b"\\"
            chunk = chunk.replace(b"\\\\", b"").replace(b'\\"', b"")
        parts = chunk.split(b'"')
        outside = b"".join(parts[1 if in_string else 0 :: 2])
        if len(parts) % 2 == 0:  # an odd number of quotes: the string state flips
            in_string = not in_string
        del parts
        signs = outside.translate(_SIGNS, _NOT_BRACKETS)
        for offset in range(0, len(signs), _SLICE):
            levels = list(accumulate(array("b", signs[offset : offset + _SLICE]), initial=depth))
            if max(levels) > limit:
                return True
            depth = levels[-1]
    return False


def decode_payload(raw: bytes | str) -> Any:
    """Queue message text -> JSON value. Plain JSON, or base64-encoded JSON (the Functions SDK default)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise errors.InvalidJson(detail="not UTF-8") from None
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        _shallow(stripped)
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise errors.InvalidJson(detail=f"JSON error at character {exc.pos}") from None
    try:
        decoded = base64.b64decode(stripped, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise errors.InvalidJson() from None
    _shallow(decoded)
    try:
        return json.loads(decoded)
    except ValueError:  # JSONDecodeError is a ValueError
        raise errors.InvalidJson() from None


def _shallow(text: str) -> None:
    """InvalidJson for text nested deeper than json_limits.MAX_DEPTH: json.loads would recurse into a
    RecursionError (the message retried to the poison queue instead of recorded rejected)."""
    if nesting_exceeds(text.encode("utf-8")):
        raise errors.InvalidJson(detail=f"nested more than {MAX_DEPTH} levels deep")
