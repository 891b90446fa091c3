"""The three measurements, each against servers started and stopped here."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.procs import Child, listening_port, python, wait_until_ns

# Time for a generator process to start and connect before its warm-up counts.
LAUNCH_MARGIN_NS: Final = 500_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    duration_s: float
    warmup_s: float
    connections: int
    procs: int
    rate: float


def percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return math.nan
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def latency_ms(values_us: list[int]) -> dict[str, float]:
    ordered = sorted(values_us)
    return {
        "p50_ms": percentile(ordered, 0.50) / 1000,
        "p99_ms": percentile(ordered, 0.99) / 1000,
        "p999_ms": percentile(ordered, 0.999) / 1000,
        "max_ms": (ordered[-1] / 1000) if ordered else math.nan,
    }


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(value) for value in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def _readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            body: dict[str, Any] = json.load(response)
            return body
    except OSError:
        return {}


def generators(
    stack: ExitStack,
    workdir: Path,
    tag: str,
    mode: str,
    port: int,
    load: Load,
    count: int = 0,
    mix: str = "status",
) -> tuple[list[Child], int, int]:
    """``load.procs`` generator processes and their window; ``count``: requests each, at most."""
    start = time.monotonic_ns() + LAUNCH_MARGIN_NS + int(load.warmup_s * 1e9)
    end = start + int(load.duration_s * 1e9)
    per_proc = max(1, load.connections // load.procs)
    children = []
    for gen in range(load.procs):
        argv = python(
            "bench.load",
            mode,
            f"--port={port}",
            f"--connections={per_proc}",
            f"--gen={gen}",
            f"--rate={load.rate / load.procs}",
            f"--start-ns={start}",
            f"--end-ns={end}",
            f"--count={count}",
            f"--mix={mix}",
        )
        child = Child(f"load-{tag}-{gen}", argv, workdir / f"load-{tag}-{gen}.out")
        stack.callback(child.stop)
        children.append(child)
    return children, start, end


def closed_loop(
    stack: ExitStack,
    workdir: Path,
    tag: str,
    server: Child,
    port: int,
    load: Load,
    *,
    outbox: bool = False,
    mix: str = "status",
) -> dict[str, Any]:
    """Throughput and ack latency of ``server`` under ``load.connections`` closed-loop senders."""
    gens, start, end = generators(stack, workdir, tag, "closed", port, load, mix=mix)
    wait_until_ns(start)
    cpu0 = [server.cpu_s(), *(gen.cpu_s() for gen in gens)]
    busy0, total0 = _machine_busy()
    ready0 = _readyz(port) if outbox else {}
    wait_until_ns(end)
    ready1 = _readyz(port) if outbox else {}
    cpu1 = [server.cpu_s(), *(gen.cpu_s() for gen in gens)]
    busy1, total1 = _machine_busy()
    windows = [gen.result() for gen in gens]
    latencies = [value for window in windows for value in window["latencies_us"]]
    cpu = [(b - a) / load.duration_s * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    out: dict[str, Any] = {
        "events_per_s": len(latencies) / load.duration_s,
        **latency_ms(latencies),
        "errors": sum(window["errors"] for window in windows),
        "server_cpu_pct": cpu[0],
        "loadgen_cpu_pct": cpu[1:],
        "machine_busy_pct": 100 * (busy1 - busy0) / max(1, total1 - total0),
    }
    if ready0 and ready1:
        commits = ready1["outbox"]["commits"] - ready0["outbox"]["commits"]
        events = ready1["outbox"]["last_seq"] - ready0["outbox"]["last_seq"]
        out["commits_per_s"] = commits / load.duration_s
        out["events_per_commit"] = events / max(1, commits)
        out["committed_events_per_s"] = events / load.duration_s
    return out


def sse_latency(
    stack: ExitStack, workdir: Path, daemon: Child, port: int, load: Load
) -> dict[str, Any]:
    """Open-loop pushes at ``load.rate``; send-to-SSE-receipt latency of each."""
    subscriber = Child("sse", python("bench.sse", f"--port={port}"), workdir / "sse.out")
    stack.callback(subscriber.stop)
    subscriber.wait_line(lambda item: item.get("event") == "subscribed")
    gens, start, end = generators(stack, workdir, "e2e", "open", port, load)
    wait_until_ns(start)
    cpu0 = daemon.cpu_s()
    wait_until_ns(end)
    cpu1 = daemon.cpu_s()
    windows = [gen.result() for gen in gens]
    time.sleep(1.0)  # the last events of the window are still on their way to the subscriber
    subscriber.interrupt()
    received = subscriber.result()
    latencies = [lat for sent, lat in received["samples"] if start <= sent < end]
    acks = [value for window in windows for value in window["latencies_us"]]
    sent = sum(window["sent"] for window in windows)
    return {
        "offered_per_s": sent / load.duration_s,
        "sent": sent,
        "received": len(latencies),
        "duplicates": received["duplicates"],
        "max_send_lag_ms": max(window["max_lag_us"] for window in windows) / 1000,
        **latency_ms(latencies),
        "ack": latency_ms(acks),
        "errors": sum(window["errors"] for window in windows),
        "server_cpu_pct": (cpu1 - cpu0) / load.duration_s * 100,
    }


def start_baseline(stack: ExitStack, workdir: Path) -> tuple[Child, int]:
    child = Child("baseline", python("bench.baseline", "--port=0"), workdir / "base.out")
    stack.callback(child.stop)
    return child, listening_port(child)


def start_daemon(
    stack: ExitStack, workdir: Path, tag: str, config: Path | None
) -> tuple[Child, int]:
    """The real daemon on a fresh data dir; ``config`` None means the embedded default."""
    argv = ["run", "--listen=127.0.0.1:0", f"--data-dir={workdir / f'data-{tag}'}"]
    if config is not None:
        argv.append(f"--config={config}")
    child = Child(f"daemon-{tag}", python("bridge", *argv), workdir / f"{tag}.log")
    stack.callback(child.stop)
    return child, listening_port(child)
