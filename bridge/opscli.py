"""Operator commands that talk to a running bridge's API: ``pbx-bridge quarantine ...``.

They go through the daemon, not the SQLite file: the daemon is the outbox's only writer.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

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
    out: TextIO = sys.stdout,
) -> int:
    """list | show ID | reprocess (IDS... | --all); returns the exit code."""
    try:
        if action == "list":
            answer = await call(url, f"/v1/quarantine?state={state}", token=token)
            for entry in answer["entries"]:
                print(
                    f"{entry['id']:>6}  {entry['source']:<12} {entry['state']:<11} "
                    f"seen={entry['seen']:<3} {entry['field'] or '(body)'}: {entry['error']}",
                    file=out,
                )
            print(f"{len(answer['entries'])} entries", file=out)
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
            failed = 0
            for result in answer["results"]:
                failed += result["result"] != "reprocessed"
                print(json.dumps(result), file=out)
            return 1 if failed else 0
    except (ApiError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
