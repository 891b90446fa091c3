"""Operator commands that talk to a running bridge's API: ``pbx-bridge quarantine ...``.

They go through the daemon, not the SQLite file: the daemon is the outbox's only writer.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO
from urllib.parse import urlencode

import aiohttp


class ApiError(Exception):
    pass


async def call(
    url: str, path: str, *, token: str | None, method: str = "GET", body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url.rstrip("/") + path, json=body, headers=headers) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise ApiError(f"{r.status}: {answer.get('detail', answer)}")
            return answer


async def quarantine(
    *,
    url: str,
    token: str | None,
    action: str,
    ids: list[int],
    every: bool,
    state: str,
    source: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """list | show ID | reprocess (IDS... | --all); returns the exit code."""
    try:
        if action == "list":
            await _list_quarantine(url, token=token, state=state, source=source, out=out)
        elif action == "show":
            if len(ids) != 1:
                print("show takes one id", file=sys.stderr)
                return 2
            print(
                json.dumps(await call(url, f"/v1/quarantine/{ids[0]}", token=token), indent=2),
                file=out,
            )
        else:
            if not ids and not every:
                print("reprocess takes ids or --all", file=sys.stderr)
                return 2
            body = {"all": True} if every else {"ids": ids}
            answer = await call(
                url, "/v1/quarantine/reprocess", token=token, method="POST", body=body
            )
            results = answer["results"]
            for result in results:
                print(json.dumps(result), file=out)
            done = sum(1 for result in results if result["result"] == "reprocessed")
            failed = len(results) - done
            still = f", {failed} still held (see `pbx-bridge quarantine list`)" if failed else ""
            print(f"{done} of {len(results)} entries reprocessed{still}", file=out)
            return 1 if failed else 0
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _list_quarantine(
    url: str, *, token: str | None, state: str, source: str | None, out: TextIO
) -> None:
    """Every page of entries, then each source's room; nothing here assumes an HTTP source."""
    query = {"state": state, **({"source": source} if source else {})}
    shown, after, usage = 0, 0, {}
    while True:
        page = await call(
            url, "/v1/quarantine?" + urlencode({**query, "after": after}), token=token
        )
        for entry in page["entries"]:
            # path: the HTTP path tail after /ingest/<source>/, or a realtime STOMP destination.
            print(
                f"{entry['id']:>6}  {entry['source']:<12} {entry['state']:<11} "
                f"seen={entry['seen']:<3} size={entry['size']:<7} {entry['path'] or '-'}  "
                f"{entry['field'] or '(whole payload)'}: {entry['error']}",
                file=out,
            )
        shown += len(page["entries"])
        usage = page.get("sources", {})
        if page.get("next_after") is None:
            break
        after = page["next_after"]
    print(f"{shown} entries", file=out)
    for name, room in usage.items():
        if source and name != source:
            continue
        print(
            f"  {name}: {room['held_entries']}/{room['max_entries']} held, "
            f"{room['held_bytes']}/{room['max_bytes']} bytes",
            file=out,
        )


async def sinks(*, url: str, token: str | None, out: TextIO = sys.stdout) -> int:
    """One line per sink: cursor, lag, breaker, dead letters, last error."""
    try:
        answer = await call(url, "/v1/sinks", token=token)
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not answer["sinks"]:
        print("no sinks configured", file=out)
    for sink in answer["sinks"]:
        state = "disabled: " + sink["disabled"] if sink.get("disabled") else sink.get("breaker", "")
        print(
            f"{sink['name']:<16} {sink['type']:<8} cursor={sink['cursor']:<8} lag={sink['lag']:<6} "
            f"dead={sink.get('dead', 0):<4} {state} {sink.get('last_error') or ''}".rstrip(),
            file=out,
        )
    return 0


async def dlq(
    *,
    url: str,
    token: str | None,
    sink: str,
    action: str,
    seqs: list[int],
    every: bool,
    out: TextIO = sys.stdout,
) -> int:
    """list | retry (SEQS... | --all) | purge (SEQS... | --all) a sink's dead letters."""
    try:
        if action == "list":
            answer = await call(url, f"/v1/sinks/{sink}/dead", token=token)
            for letter in answer["dead"]:
                print(
                    f"{letter['seq']:>8}  {letter['type'] or '?':<20} {letter['subject']:<28} "
                    f"attempts={letter['attempts']} {letter['last_error'] or ''}",
                    file=out,
                )
            print(f"{len(answer['dead'])} dead letters", file=out)
            return 0
        if not seqs and not every:
            print(f"{action} takes seqs or --all", file=sys.stderr)
            return 2
        body = {"all": True} if every else {"seqs": seqs}
        answer = await call(
            url, f"/v1/sinks/{sink}/dead/{action}", token=token, method="POST", body=body
        )
        if action == "retry":
            count = answer.get("retried", 0)
            print(f"{count} dead letters of {sink} re-driven (they are delivered again)", file=out)
        else:
            count = answer.get("purged", 0)
            print(f"{count} dead letters of {sink} purged", file=out)
        return 0
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def replay(
    *,
    url: str,
    token: str | None,
    sink: str,
    from_seq: int,
    wait: bool = False,
    interval_s: float = 1.0,
    out: TextIO = sys.stdout,
) -> int:
    """Re-send a sink's history from ``from_seq`` (also re-enables a disabled sink).

    With ``wait``, poll the sink's cursor every ``interval_s`` and print its progress until it
    reaches the head seen when the replay started: 0 then, 1 if the sink is disabled or gone.
    """
    try:
        before = await _sink_row(url, token, sink)
        body = {"from_seq": from_seq}
        answer = await call(url, f"/v1/sinks/{sink}/replay", token=token, method="POST", body=body)
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # "head" and "events" are recent additions to the answer: do without them.
    head = int(answer.get("head", before["cursor"] + before["lag"] if before else from_seq - 1))
    events = answer.get("events")
    counted = f"{events} events" if events is not None else f"seqs {from_seq} to {head}"
    print(f"{sink}: replaying {counted} (from seq {from_seq}, head {head})", file=out, flush=True)
    if not wait:
        return 0
    return await _wait_for(
        url, token, sink, head=head, from_seq=from_seq, every_s=interval_s, out=out
    )


async def _sink_row(url: str, token: str | None, sink: str) -> dict[str, Any] | None:
    answer = await call(url, "/v1/sinks", token=token)
    return next((row for row in answer["sinks"] if row["name"] == sink), None)


async def _wait_for(
    url: str, token: str | None, sink: str, *, head: int, from_seq: int, every_s: float, out: TextIO
) -> int:
    """Print the sink's cursor whenever it moves, until it reaches ``head``."""
    shown: int | None = None
    total = max(0, head - from_seq + 1)
    while True:
        try:
            row = await _sink_row(url, token, sink)
        except (ApiError, aiohttp.ClientError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if row is None:
            print(f"error: the bridge has no sink named {sink!r} any more", file=sys.stderr)
            return 1
        cursor = int(row["cursor"])
        if cursor != shown:
            done = min(total, max(0, cursor - from_seq + 1))
            percent = 100 if total == 0 else done * 100 // total
            trouble = row.get("last_error") if row.get("breaker") not in (None, "closed") else None
            note = f"  ({row['breaker']}: {trouble})" if trouble else ""
            print(
                f"{sink}: cursor {cursor}/{head} ({percent}%), lag {row['lag']}{note}",
                file=out,
                flush=True,
            )
            shown = cursor
        if cursor >= head:
            print(f"{sink}: caught up with seq {head}", file=out, flush=True)
            return 0
        if row.get("disabled"):
            print(f"error: {sink} is disabled: {row['disabled']}", file=sys.stderr)
            return 1
        await asyncio.sleep(every_s)


async def calls(
    *,
    url: str,
    token: str | None,
    missed: bool,
    source: str | None,
    state: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> int:
    """The newest call records, one line each (or one JSON object each with ``--json``)."""
    query = {"limit": str(limit), "missed": "true" if missed else None, "source": source}
    query.update(state=state, since=since)
    path = "/v1/calls?" + urlencode({k: v for k, v in query.items() if v is not None})
    try:
        answer = await call(url, path, token=token)
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for record in answer["calls"]:
        if as_json:
            print(json.dumps(record, ensure_ascii=False), file=out)
            continue
        verdict = "MISSED" if record["missed"] else ""
        if record.get("missed_revoked"):
            verdict = "missed, revoked"
        elif record.get("missed_pending"):
            verdict = "deciding"
        parties = f"{record.get('from', '?')} -> {record.get('to', '?')}"
        print(
            f"{record['last_seq']:>8}  {record['source']:<12} {record['call_key']:<24} "
            f"{record['state']:<9} {record.get('direction', '?'):<9} {parties:<28} "
            f"{record.get('disposition', '-'):<10} {verdict}".rstrip(),
            file=out,
        )
    if not as_json:
        print(f"{len(answer['calls'])} calls", file=out)
    return 0
