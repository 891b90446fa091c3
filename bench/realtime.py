"""The realtime phase: STOMP messages from a local server to committed events, per second.

Two runs of ``bench.stomp_server``, each publishing the same N one-event messages:

1. into a sink that only counts them (``bench.stomp_sink``): the publisher's own ceiling;
2. into the daemon, subscribed by a ``realtime`` source in a temp config, fresh data dir: from
   the first publish to the moment ``/readyz`` shows ``last_seq`` covering all N (polled over
   one kept-alive connection, every few ms near the end).

If (2) is near (1), the publisher, not the daemon, set the pace.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from bench.load import HOST
from bench.phases import start_daemon
from bench.procs import Child, python
from bench.stomp_server import DESTINATION
from bridge import config as bridge_config

POLL_S: Final = 0.005
# Far from the end, polls are spaced out: at 200 a second, /readyz alone took ~5% of the
# daemon's event loop (py-spy), time the stream would otherwise have had.
MAX_POLL_S: Final = 0.1
READY_TIMEOUT_S: Final = 20.0


class ReadyPoller:
    """``GET /readyz`` (or ``path``) on one kept-alive connection: a new TCP connection every
    few ms would cost the daemon (and the 2 CPUs we share with it) more than the request."""

    def __init__(self, port: int, path: str = "/readyz") -> None:
        self._port = port
        self._path = path
        self._conn = http.client.HTTPConnection(HOST, port, timeout=5)

    def get(self) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                self._conn.request("GET", self._path)
                with self._conn.getresponse() as response:
                    # 503 (a stream down) still carries the body we want.
                    body: dict[str, Any] = json.loads(response.read())
                    return body
            except (OSError, http.client.HTTPException):
                self._conn.close()  # the next request reconnects
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not match(state := self.get()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._path} never matched in {timeout_s}s: {state}")
            time.sleep(POLL_S)
        return state

    def close(self) -> None:
        self._conn.close()


def poll_interval_s(done: int, remaining: int, elapsed_s: float) -> float:
    """Half the time the rate so far says is left, within [POLL_S, MAX_POLL_S]."""
    if done <= 0 or elapsed_s <= 0:
        return POLL_S
    return min(MAX_POLL_S, max(POLL_S, remaining / (done / elapsed_s) / 2))


def daemon_config(
    workdir: Path, base: Path | None, synchronous: str | None, url: str
) -> tuple[Path, str]:
    """A TOML with a realtime source on ``url``, and that source's name.

    Without ``base``: the embedded default (one source per vendor) with ``coral`` subscribed.
    With it: the user's file plus a ``bench-realtime`` source (a ``[[sources]]`` table appended
    at the end adds to the array whatever came before).
    """
    realtime = f'realtime = {{ url = "{url}", destinations = ["{DESTINATION}"] }}\n'
    if base is not None:
        name = "bench-realtime"
        text = base.read_text() + f'\n[[sources]]\nname = "{name}"\nvendor = "coral"\n{realtime}'
    else:
        name = "coral"
        text = f'[storage]\nsynchronous = "{synchronous or "full"}"\n'
        for vendor in bridge_config.IMPLEMENTED_VENDORS:
            text += f'\n[[sources]]\nname = "{vendor}"\nvendor = "{vendor}"\n'
            text += realtime if vendor == name else ""
    path = workdir / "realtime.toml"
    path.write_text(text)
    bridge_config.load(path)  # a ConfigError now, not a daemon that dies while we wait
    return path, name


def _server(stack: ExitStack, workdir: Path, tag: str, messages: int) -> tuple[Child, str]:
    argv = python("bench.stomp_server", "--port=0", f"--messages={messages}", "--gated")
    child = Child(f"stomp-{tag}", argv, workdir / f"stomp-{tag}.out")
    stack.callback(child.stop)
    return child, str(child.wait_line(lambda item: item.get("event") == "listening")["url"])


def _published(server: Child, timeout_s: float) -> dict[str, Any]:
    return server.wait_line(lambda item: item.get("event") == "published", timeout_s)


def _timeout_s(messages: int) -> float:
    return 60.0 + messages / 500  # generous: a wedged run fails, a slow machine does not


def publisher_ceiling(workdir: Path, messages: int) -> dict[str, Any]:
    """N messages into a subscriber that only counts them."""
    with ExitStack() as stack:
        server, url = _server(stack, workdir, "ceiling", messages)
        argv = python("bench.stomp_sink", f"--url={url}", f"--messages={messages}")
        sink = Child("stomp-sink", argv, workdir / "stomp-sink.out")
        stack.callback(sink.stop)
        server.wait_line(lambda item: item.get("event") == "subscribed")
        server.proc.send_signal(signal.SIGUSR1)
        done = sink.result(_timeout_s(messages))
        published = _published(server, 10.0)
    elapsed_ns = done["last_ns"] - published["start_ns"]
    publish_ns = published["end_ns"] - published["start_ns"]
    return {
        "messages_per_s": messages / elapsed_ns * 1e9,
        "publish_messages_per_s": messages / publish_ns * 1e9,
        "publisher_cpu_pct": published["cpu_s"] / (publish_ns / 1e9) * 100,
    }


def into_daemon(
    workdir: Path, base: Path | None, synchronous: str | None, messages: int
) -> dict[str, Any]:
    """N messages into the daemon: first publish to all N committed."""
    with ExitStack() as stack:
        server, url = _server(stack, workdir, "daemon", messages)
        config, name = daemon_config(workdir, base, synchronous, url)
        daemon, port = start_daemon(stack, workdir, "realtime", config)
        server.wait_line(lambda item: item.get("event") == "subscribed")
        poller = ReadyPoller(port)
        stack.callback(poller.close)
        # Start from a quiet daemon: subscribed and its source.status event committed.
        state = poller.wait(
            lambda s: s["realtime"][name]["connected"] and s["outbox"]["last_seq"] >= 1,
            READY_TIMEOUT_S,
        )
        seq0, commits0 = state["outbox"]["last_seq"], state["outbox"]["commits"]
        cpu0 = daemon.cpu_s(), server.cpu_s()
        server.proc.send_signal(signal.SIGUSR1)
        started, target = time.monotonic(), seq0 + messages
        while (last := (state := poller.get())["outbox"]["last_seq"]) < target:
            if time.monotonic() - started > _timeout_s(messages) or daemon.proc.poll() is not None:
                raise RuntimeError(f"realtime: {state['outbox']} of {target}")
            time.sleep(poll_interval_s(last - seq0, target - last, time.monotonic() - started))
        done_ns = time.monotonic_ns()
        cpu1 = daemon.cpu_s(), server.cpu_s()
        published = _published(server, 10.0)
    elapsed_s = (done_ns - published["start_ns"]) / 1e9
    publish_s = (published["end_ns"] - published["start_ns"]) / 1e9
    commits = state["outbox"]["commits"] - commits0
    events = state["outbox"]["last_seq"] - seq0
    return {
        "messages": messages,
        "messages_per_s": messages / elapsed_s,
        "events": events,
        "elapsed_s": elapsed_s,
        "publish_messages_per_s": messages / publish_s,
        # What was still on its way (socket buffers, the writer's queue) when publishing ended.
        "drain_after_publish_ms": (done_ns - published["end_ns"]) / 1e6,
        "server_cpu_pct": (cpu1[0] - cpu0[0]) / elapsed_s * 100,
        "publisher_cpu_pct": (cpu1[1] - cpu0[1]) / elapsed_s * 100,
        "commits_per_s": commits / elapsed_s,
        "events_per_commit": events / max(1, commits),
        "stream": state["realtime"][name],
    }


def measure(
    workdir: Path, base: Path | None, synchronous: str | None, messages: int
) -> dict[str, Any]:
    out = into_daemon(workdir, base, synchronous, messages)
    out["publisher_ceiling"] = publisher_ceiling(workdir, messages)
    return out
