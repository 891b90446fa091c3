"""The command-line side of commands to the PBX: ``pbx-bridge call|hangup|transfer|hold|resume|
agent|command|capabilities|reconcile``. Each is a client of a running daemon's
``/v1/commands`` (so every command is durable, audited and idempotent there, never here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

AddCommand = Callable[..., argparse.ArgumentParser]
ApiArgs = Callable[[argparse.ArgumentParser], None]

NAMES = (
    "call",
    "hangup",
    "transfer",
    "hold",
    "resume",
    "agent",
    "command",
    "capabilities",
    "reconcile",
)
_AGENT = {
    "login": "agent.login",
    "logout": "agent.logout",
    "pause": "agent.pause",
    "unpause": "agent.unpause",
    "available": "agent.set_available",
    "unavailable": "agent.set_available",
}


def add_parsers(commands: Any, command: AddCommand, api_args: ApiArgs) -> None:
    def source(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--source", required=True, help="the source whose PBX acts")
        parser.add_argument(
            "--key",
            help="Idempotency-Key (default: a new one each run; give one to retry safely)",
        )
        api_args(parser)

    def call_ref(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--call-id", help="the vendor's call id (data.call_id)")
        parser.add_argument("--extension", help="the extension on the call (some vendors)")

    call = command(
        commands,
        "call",
        "click-to-call: ring an extension, then connect it to a number",
        "Ask the source's PBX to call --from (an extension or agent) and connect it to --to. "
        "The command and its outcome are committed as command.* events; the call's own events "
        "follow in `pbx-bridge tail` as the PBX pushes them.",
        "pbx-bridge call --source coocenter --from 808 --to 0912345678",
        "pbx-bridge call --source oncall --from 101 --to 0909123456 --key crm-4711",
    )
    call.add_argument("--from", dest="from_", required=True, help="extension or agent number")
    call.add_argument("--to", required=True, help="the number to call")
    source(call)
    for name, summary in (
        ("hangup", "end a call"),
        ("hold", "hold a call"),
        ("resume", "resume a held call"),
    ):
        parser = command(
            commands,
            name,
            summary,
            f"{summary.capitalize()} at the source's PBX. Vendors name the call differently: "
            "`pbx-bridge capabilities --source S` says which of --call-id and --extension the "
            "source takes.",
            f"pbx-bridge {name} --source coral --call-id 4a1f0c2e-1111",
            *(
                [f"pbx-bridge {name} --source coocenter --extension 808"]
                if name == "hangup"
                else []
            ),
        )
        call_ref(parser)
        source(parser)
    transfer = command(
        commands,
        "transfer",
        "transfer a call to a number, extension or queue",
        "Transfer a call at the source's PBX.",
        "pbx-bridge transfer --source coocenter --extension 808 --to 809 --to-kind extension",
        "pbx-bridge command --source coral call.transfer call_id=4a1f to=5001 caller=0912345678",
    )
    call_ref(transfer)
    transfer.add_argument("--to", required=True, help="where to")
    transfer.add_argument(
        "--to-kind", choices=("number", "extension", "queue"), help="what --to is"
    )
    transfer.add_argument("--caller", help="the caller's number (Coral's transfer takes it)")
    source(transfer)
    agent = command(
        commands,
        "agent",
        "log an agent in or out, pause, or set available",
        "Change an agent's state at the source's PBX: login, logout, pause (with --reason where "
        "the vendor takes one), unpause; available / unavailable for a cloud IVR's agent "
        "numbers.",
        "pbx-bridge agent login --source coocenter --agent 808 --queue 6001",
        "pbx-bridge agent pause --source coral --agent 1001 --reason lunch",
        "pbx-bridge agent unavailable --source callog --agent 9876543210",
    )
    agent.add_argument("state", choices=tuple(_AGENT), help="what to do")
    agent.add_argument("--agent", required=True, help="the agent's id or number")
    agent.add_argument("--extension", help="the extension the agent uses (some vendors)")
    agent.add_argument("--queue", help="the queue (some vendors)")
    agent.add_argument("--reason", help="a pause reason (some vendors)")
    source(agent)
    generic = command(
        commands,
        "command",
        "send any action a source supports, with NAME=VALUE arguments",
        "Send one action with its arguments as NAME=VALUE pairs (true/false for yes-no "
        "arguments). `pbx-bridge capabilities --source S` lists the actions and arguments.",
        "pbx-bridge command --source coral calls.active",
        "pbx-bridge command --source coocenter extensions.status extension=808",
        "pbx-bridge command --source hq extension.provision operation=add extension=2001 "
        "first_name=Asha",
    )
    generic.add_argument("action", help="the action, e.g. calls.active")
    generic.add_argument("args", nargs="*", metavar="NAME=VALUE", help="its arguments")
    source(generic)
    caps = command(
        commands,
        "capabilities",
        "the actions a source supports, with their arguments",
        "List what the source's PBX can be asked through the bridge.",
        "pbx-bridge capabilities --source coocenter",
    )
    caps.add_argument("--source", required=True, help="the source")
    caps.add_argument("--json", action="store_true", help="the whole answer as JSON")
    api_args(caps)
    reconcile = command(
        commands,
        "reconcile",
        "fold what the PBX's records say into the outbox",
        "Read the source's call history since --since (where the vendor has one) and commit "
        "the records that never arrived as pushes; those that did are recognised and not "
        "repeated. With --active, ask the PBX for its active calls instead and end the calls "
        "the bridge holds open that the PBX no longer has.",
        "pbx-bridge reconcile --source oncall --since 2026-12-01T00:00:00Z",
        "pbx-bridge reconcile --source coral --active",
    )
    reconcile.add_argument("--source", required=True, help="the source")
    reconcile.add_argument("--since", help="RFC 3339 time or epoch seconds")
    reconcile.add_argument("--until", help="RFC 3339 time or epoch seconds")
    reconcile.add_argument("--active", action="store_true", help="repair from the active calls")
    api_args(reconcile)


def body_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``/v1/commands`` body a command line asks for."""
    name = args.command
    values: dict[str, Any] = {}
    if name == "call":
        action, values = "call.originate", {"from": args.from_, "to": args.to}
    elif name in ("hangup", "hold", "resume", "transfer"):
        action = {"hangup": "call.hangup", "hold": "call.hold", "resume": "call.resume"}.get(
            name, "call.transfer"
        )
        values = {"call_id": args.call_id, "extension": args.extension}
        if name == "transfer":
            values |= {"to": args.to, "to_kind": args.to_kind, "caller": args.caller}
    elif name == "agent":
        action = _AGENT[args.state]
        values = {
            "agent": args.agent,
            "extension": args.extension,
            "queue": args.queue,
            "reason": args.reason,
        }
        if action == "agent.set_available":
            values["available"] = args.state == "available"
    else:
        action = args.action
        for pair in args.args:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise SystemExit(f"pbx-bridge command: expected NAME=VALUE, got {pair!r}")
            values[key] = {"true": True, "false": False}.get(value, value)
    args_ = {key: value for key, value in values.items() if value is not None}
    return {"source": args.source, "action": action, "args": args_}


async def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Exit status: 0 succeeded, 1 the PBX refused or the outcome is unknown, 2 refused here."""
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    if args.command == "capabilities":
        method, path, body = "GET", f"/v1/sources/{args.source}/capabilities", None
    elif args.command == "reconcile":
        if args.active:
            method, path, body = "POST", f"/v1/sources/{args.source}/repair", {}
        else:
            if not args.since:
                print("pbx-bridge reconcile: give --since (or --active)", file=err)
                return 2
            body = {"since": args.since, **({"until": args.until} if args.until else {})}
            method, path = "POST", f"/v1/sources/{args.source}/reconcile"
    else:
        method, path, body = "POST", "/v1/commands", body_of(args)
        headers["Idempotency-Key"] = args.key or str(uuid.uuid4())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, base + path, json=body, headers=headers) as response:
                status = response.status
                answer = await response.json(content_type=None)
    except (aiohttp.ClientError, json.JSONDecodeError) as exc:
        print(f"pbx-bridge {args.command}: the bridge at {base} did not answer: {exc}", file=err)
        _retry_hint(headers, err)
        return 2
    if args.command == "capabilities" and status == 200 and not args.json:
        _show_capabilities(answer, out)
        return 0
    print(json.dumps(answer, indent=2, ensure_ascii=False), file=out)
    if status == 200:
        return 0
    if isinstance(answer, dict) and "outcome" in answer:
        error = answer.get("error") or {}
        print(
            f"pbx-bridge {args.command}: {answer['outcome']}: {error.get('message', '')}",
            file=err,
        )
        if answer["outcome"] == "unknown" or error.get("code") == "not_sent":
            _retry_hint(headers, err)
        return 1
    detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
    print(f"pbx-bridge {args.command}: {status}: {detail}", file=err)
    return 2


def _retry_hint(headers: dict[str, str], err: TextIO) -> None:
    """The key a retry must reuse: without it, running the command again may dial twice."""
    key = headers.get("Idempotency-Key")
    if key is not None:
        print(f"pbx-bridge: to retry this command safely, add --key {key}", file=err)


def _show_capabilities(answer: dict[str, Any], out: TextIO) -> None:
    actions: dict[str, Any] = answer.get("actions", {})
    print(f"{answer.get('source')} ({answer.get('vendor')}): {len(actions)} actions", file=out)
    for name, spec in actions.items():
        props = spec["args"]["properties"]
        required = set(spec["args"]["required"])
        shown = " ".join(f"{arg}=" if arg in required else f"[{arg}=]" for arg in props)
        print(f"  {name:<22} {shown}", file=out)
        print(f"  {'':<22} {spec['summary']}", file=out)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))
