"""What a command's events say and what its answer is: pure functions of the two events
(``command.requested`` and its outcome), so a replayed answer is the one first given."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from bridge.config import SourceConfig
from bridge.errors import CommandError, CommandRefused
from bridge.events import Event, rfc3339

# HTTP status of an outcome: the PBX refused (422), was never reached (502, safe to retry),
# or may have acted (504, never re-sent).
STATUS: Final = {"succeeded": 200, "refused": 422, "not_sent": 502, "unknown": 504}


def status_of(answer: Mapping[str, Any]) -> int:
    if answer["outcome"] == "succeeded":
        return 200
    code = answer.get("error", {}).get("code")
    if answer["outcome"] == "unknown":
        return STATUS["unknown"]
    return STATUS["not_sent"] if code == "not_sent" else STATUS["refused"]


def failure(exc: CommandError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, CommandRefused):
        if exc.vendor_code:
            error["vendor_code"] = exc.vendor_code
        if exc.status:
            error["vendor_status"] = exc.status
    outcome = "unknown" if exc.code == "unknown" else "failed"
    return {"outcome": outcome, "error": error}


def canonical(args: Mapping[str, Any]) -> str:
    return repr(sorted(args.items()))


def fingerprint_of(requested: Event) -> tuple[str, str, str]:
    name = requested.source.rsplit("/", 1)[-1]
    return (name, requested.data["action"], canonical(requested.data.get("args", {})))


def command_event(
    source: SourceConfig, kind: str, id_: str, action: str, now: float, data: dict[str, Any]
) -> Event:
    return Event(
        id=id_,
        source=f"/{source.vendor}/{source.name}",
        type=kind,
        time=rfc3339(datetime.fromtimestamp(now, UTC)),
        subject=f"command/{data['command_id']}",
        vendor=source.vendor,
        vendorevent=action,
        data={key: value for key, value in data.items() if value is not None},
    )


def answer_of(requested: Event, outcome: Event) -> dict[str, Any]:
    """The API's answer for a command, from its two events."""
    data = outcome.data
    answer: dict[str, Any] = {
        "id": requested.data["command_id"],
        "source": requested.source.rsplit("/", 1)[-1],
        "action": requested.data["action"],
        "args": requested.data.get("args", {}),
        "outcome": data["outcome"],
    }
    for key in ("result", "error", "message", "duration_ms"):
        if key in data:
            answer[key] = data[key]
    answer["requested_at"] = requested.time
    answer["finished_at"] = outcome.time
    if requested.data.get("idempotency_key") is not None:
        answer["idempotency_key"] = requested.data["idempotency_key"]
    if requested.seq is not None:
        answer["requested_seq"] = requested.seq
    if outcome.seq is not None:
        answer["outcome_seq"] = outcome.seq
    return answer
