"""The published schema and docs agree with the fixtures (which the vendor tests assert)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from tests import commandsdoc, docgen
from tests.fixtureutil import load_fixtures

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "bridge" / "schema" / "event.schema.json").read_text()
)
VENDORS = sorted(docgen.NORMALIZERS)
CASES = [(vendor, case, fixture) for vendor in VENDORS for case, fixture in load_fixtures(vendor)]


def test_commands_page_is_up_to_date() -> None:
    """docs/commands.md is what `make docs` generates from the command adapters now."""
    assert commandsdoc.PAGE.read_text(encoding="utf-8") == commandsdoc.render(), "run `make docs`"


def test_events_page_is_up_to_date() -> None:
    """docs/events.md is what `make docs` generates from the fixtures now."""
    assert docgen.PAGE.read_text(encoding="utf-8") == docgen.render(), "run `make docs`"


@pytest.mark.parametrize(
    ("vendor", "case", "fixture"), CASES, ids=[f"{v}/{c}" for v, c, _ in CASES]
)
def test_every_fixture_event_matches_the_json_schema(
    vendor: str, case: str, fixture: dict[str, object]
) -> None:
    """Each event a fixture produces (derived ones included) validates against the schema."""
    for event in docgen.story(vendor, fixture):
        jsonschema.validate(msgspec.to_builtins(event), SCHEMA)


def test_schema_rejects_an_unknown_type() -> None:
    """The schema is strict where the contract is: a made-up type fails validation."""
    (_, _, fixture) = CASES[0]
    event = msgspec.to_builtins(docgen.story(CASES[0][0], fixture)[0])
    event["type"] = "call.teleported"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, SCHEMA)


def test_every_scenario_event_matches_the_json_schema() -> None:
    """The whole-call scenarios' events, revocations included, validate against the schema."""
    from tests.callplay import Player
    from tests.scenarios import every

    for scenario in every():
        player = Player(settle_s=0)
        player.play(scenario.events)
        for event in [*player.committed, docgen.late_answer()]:
            jsonschema.validate(msgspec.to_builtins(event), SCHEMA)
