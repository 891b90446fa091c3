"""The event envelope helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import ID_NAMESPACE, event_id, rfc3339, type_matches


@given(st.text(), st.lists(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False))))
def test_event_id_is_a_standard_uuid5(source: str, identity: list[object]) -> None:
    """Our fast id is exactly uuid5(namespace, joined key): ids stay stable across versions."""
    key = "\x1f".join([source, *(str(part) for part in identity)])
    assert event_id(source, *identity) == str(uuid.uuid5(ID_NAMESPACE, key))


def test_rfc3339_is_utc_with_z() -> None:
    """Times are converted to UTC and written with a Z."""
    moment = datetime(2018, 11, 8, 10, 21, 29, tzinfo=timezone(timedelta(hours=8)))
    assert rfc3339(moment) == "2018-11-08T02:21:29Z"
    assert rfc3339(datetime(2024, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)) == "2024-01-01T00:00:00.005000Z"


def test_rfc3339_refuses_naive_times() -> None:
    """A naive time is a bug upstream: it must have been given the source's zone."""
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("kind", "patterns", "expected"),
    [
        ("call.ringing", (), True),
        ("call.ringing", ("call.*",), True),
        ("call.ringing", ("call.ringing",), True),
        ("callx.ringing", ("call.*",), False),
        ("extension.state", ("call.*", "pbx.health"), False),
        ("pbx.health", ("*",), True),
    ],
)
def test_type_patterns(kind: str, patterns: tuple[str, ...], expected: bool) -> None:
    """Exact names, prefix.* and * select types; nothing else does."""
    assert type_matches(kind, patterns) is expected
