"""The byte scan behind the JSON depth limit: brackets outside strings only, escapes honoured, any chunking."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.limits import BodyLimits, json_depth


@pytest.mark.parametrize(("body", "depth"), [
    (b"", 0), (b"1", 0), (b'"[[["', 0), (b"[]", 1), (b"[{}]", 2), (b'{"a": [1, {"b": []}]}', 4),
    (b'["]"]', 1), (b'["\\"[["]', 1), (b'["\\\\", [[]]]', 3), (b'["\\\\\\"[[[", 1]', 1), (b'{"a": "\\u005b"}', 1),
    (b"[" * 1000 + b"]" * 1000, 1000), (b"[[[", 3), (b'"unterminated [[[', 0),
])
def test_json_depth(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth
    assert json_depth(body, chunk=3) == depth  # the state carried across chunks


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(alphabet='[]{}"\\ab\n'),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\k'), children,
                                                                       max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=17))
def test_json_depth_is_the_nesting_of_any_json(value: object, chunk: int) -> None:
    body = json.dumps(value).encode()
    assert json_depth(body, chunk=chunk) == _depth(value)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="body limits must be >= 1"):
        BodyLimits(None, max_json_depth=0)


def _scan(body: bytes) -> int:
    """The depth the slow way, a byte at a time: what json_depth must give on any bytes at all. A
    backslash takes the meaning from a quote or backslash after it, inside strings and out (outside
    one it is garbage anyway)."""
    deepest = depth = 0
    in_string = escaped = False
    for b in body:
        was_escaped, escaped = escaped, False
        if was_escaped and b in b'"\\':
            pass
        elif b == ord("\\"):
            escaped = True
        elif b == ord('"'):
            in_string = not in_string
        elif in_string:
            pass
        elif b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif b in b"]}":
            depth -= 1
    return deepest


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80).map(lambda b: bytes(b'[]{}"\\a'[x % 7] for x in b)), st.integers(min_value=1, max_value=9))
def test_json_depth_of_any_bytes_is_the_byte_by_byte_scan(body: bytes, chunk: int) -> None:
    """Garbage too: escapes, unbalanced quotes and brackets, backslashes outside strings."""
    assert json_depth(body, chunk=chunk) == _scan(body)
