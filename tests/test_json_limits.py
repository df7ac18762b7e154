"""shared/base/json_limits.py: the nesting depth of a JSON text, measured on its bytes without parsing it."""

from __future__ import annotations

import json
import random
import tracemalloc
from typing import Any

import pytest

from shared.base import json_limits
from shared.base.json_limits import MAX_DEPTH, nesting_exceeds

# Strings full of what the scan must not mistake for structure: brackets, quotes, escapes.
TRICKY = ['a"[', "\\", "x{", '\\"]', "]]\\\\", "", "[[[[", "\\\\\\", '"', "é[ü", "\u2028{"]


def depth_of(value: Any) -> int:
    """The reference: nesting depth of a parsed value, iteratively."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, list | dict):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def shallow(rng: random.Random, level: int = 0) -> Any:
    if level >= 2 or rng.random() < 0.5:
        return rng.choice([*TRICKY, 1, None, 2.5, True])
    if rng.random() < 0.5:
        return [shallow(rng, level + 1) for _ in range(rng.randint(0, 2))]
    return {rng.choice(TRICKY) + str(i): shallow(rng, level + 1) for i in range(rng.randint(0, 2))}


def random_value(rng: random.Random, target: int) -> Any:
    """A document nested exactly ``target`` deep: a spine of containers with shallow, tricky siblings."""
    value: Any = rng.choice(TRICKY)
    for _ in range(target):
        siblings = [shallow(rng) for _ in range(rng.randint(0, 2))]
        siblings.insert(rng.randint(0, len(siblings)), value)
        if rng.random() < 0.5:
            value = siblings
        else:
            value = {rng.choice(TRICKY) + str(i): child for i, child in enumerate(siblings)}
    return value


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 256 * 1024])
def test_agrees_with_the_parsed_depth_on_random_documents(chunk, monkeypatch):
    """Exact on both sides of the limit, whatever the chunk boundaries cut (an escape, a string, a run)."""
    monkeypatch.setattr(json_limits, "_CHUNK", chunk)
    monkeypatch.setattr(json_limits, "_SLICE", max(1, chunk // 2))
    rng = random.Random(chunk)
    seen = set()
    for _ in range(200):
        target = rng.choice([rng.randint(0, MAX_DEPTH), MAX_DEPTH, MAX_DEPTH + 1, rng.randint(MAX_DEPTH, 90)])
        value = random_value(rng, target)
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        expected = depth_of(value) > MAX_DEPTH
        seen.add(expected)
        assert nesting_exceeds(raw) == expected, raw[:200]
    assert seen == {True, False}  # both answers were exercised


def test_limits_exactly_at_max_depth():
    assert not nesting_exceeds(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert nesting_exceeds(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert nesting_exceeds(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    assert nesting_exceeds(b"[" * 100_000)  # unbalanced: the prefix is measured
    inside = json.dumps({"s": "[" * 100_000 + '\\"' + "{" * 100}).encode()
    assert not nesting_exceeds(inside)  # brackets inside a string are text
    assert not nesting_exceeds(b"[]," * 100_000)  # wide, not deep


def test_scanning_a_large_body_takes_little_memory():
    """A body of many brackets (the slow path) is scanned with a few chunks of extra memory, not its size."""
    raw = b"[" + b'[{"a":"\\"]"}],' * 600_000 + b"[]]"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert not nesting_exceeds(raw)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(raw) > 8_000_000
    assert peak < len(raw) // 4, peak
