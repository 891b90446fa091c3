"""CPU per durable event, with an independent load generator: ``python -m bench.cpu``.

wrk (Debian's package) drives the real daemon with a Lua script of pushes (``bench/wrk/``): a
new call's ``dialbegin`` per request, or whole CooCenter call lifecycles. The daemon's CPU time
(every thread, from /proc) and its committed ``seq`` are read before and after the run, so the
figure is the daemon's own cost per committed event, whatever the generator costs.

``--tree DIR`` runs the daemon from another checkout (say ``git worktree add /tmp/old HEAD~1``)
with this checkout's environment, to put a change's before and after side by side in one run.
``--sink`` measures each run twice, the second time with one webhook sink delivering every
event to ``bench.receiver`` (concurrency ``--sink-concurrency``): the sink's cost per event.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.delivery import SECRET
from bench.procs import REPO, Child, listening_port, python

SCRIPTS: Final = {
    "dialbegin": REPO / "bench" / "wrk" / "dialbegin.lua",
    "lifecycle": REPO / "bench" / "wrk" / "lifecycle.lua",
}
_LATENCY: Final = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def _last_seq(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        return int(json.load(response)["outbox"]["last_seq"])


def _sink_config(work: Path, port: int, concurrency: int) -> Path:
    path = work / "sink.toml"
    path.write_text(
        '[[sources]]\nname = "coocenter"\nvendor = "coocenter"\n\n'
        f'[[sinks]]\ntype = "webhook"\nname = "bench"\nurl = "http://127.0.0.1:{port}/hook"\n'
        f'secrets = ["{SECRET}"]\nconcurrency = {concurrency}\n'
    )
    return path


def measure(
    script: str,
    *,
    duration_s: float,
    connections: int,
    tree: Path | None = None,
    sink: int | None = None,
) -> dict[str, Any]:
    """One wrk run of ``script`` against a fresh daemon; the daemon's CPU per event.

    ``sink``: with one webhook sink of this concurrency delivering to ``bench.receiver``.
    """
    with tempfile.TemporaryDirectory(prefix="pbx-cpu-") as folder:
        work = Path(folder)
        root = tree.resolve() if tree is not None else REPO
        argv = [sys.executable, "-m", "bridge", "run", "--listen=127.0.0.1:0"]
        argv.append(f"--data-dir={work / 'data'}")
        receiver = None
        if sink is not None:
            receiver = Child("receiver", python("bench.receiver", "--port=0"), work / "rcv.out")
            bound = receiver.wait_line(lambda item: item.get("event") == "bound")
            argv.append(f"--config={_sink_config(work, int(bound['port']), sink)}")
        env = {**os.environ, "PYTHONPATH": str(root)}
        daemon = Child("daemon", argv, work / "daemon.log", cwd=root, env=env)
        try:
            port = listening_port(daemon)
            url = f"http://127.0.0.1:{port}/ingest/coocenter"
            warm = ["wrk", "-t1", "-c8", "-d1s", "-s", str(SCRIPTS[script]), url]
            subprocess.run(warm, check=True, capture_output=True)
            seq0, cpu0, t0 = _last_seq(port), daemon.cpu_s(), time.monotonic()
            run = ["wrk", "-t2", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
            done = subprocess.run(
                [*run, "-s", str(SCRIPTS[script]), url], check=True, capture_output=True, text=True
            )
            seq1, cpu1, t1 = _last_seq(port), daemon.cpu_s(), time.monotonic()
        finally:
            daemon.stop()
            if receiver is not None:
                receiver.stop()
    requests = int(re.search(r"(\d+) requests in", done.stdout).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    latency = {f"p{q}_ms": float(v) * _UNIT_MS[u] for q, v, u in _LATENCY.findall(done.stdout)}
    events, cpu_s, wall_s = seq1 - seq0, cpu1 - cpu0, t1 - t0
    return {
        "script": script,
        "tree": str(root),
        "sink": sink,
        "requests_per_s": requests / duration_s,
        "events_per_s": events / wall_s,
        "daemon_cpu_pct": 100 * cpu_s / wall_s,
        "cpu_us_per_event": 1e6 * cpu_s / max(1, events),
        "cpu_us_per_request": 1e6 * cpu_s / max(1, requests),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        **latency,
    }


def row(result: dict[str, Any], label: str) -> str:
    p50, p99 = result.get("p50_ms", float("nan")), result.get("p99_ms", float("nan"))
    errors = f"  ({result['non_2xx']} non-2xx)" if result["non_2xx"] else ""
    return (
        f"{label:<30}{result['requests_per_s']:>9.0f} req/s{result['events_per_s']:>9.0f} ev/s"
        f"{result['cpu_us_per_event']:>8.0f} us CPU/event  p50 {p50:.2f} ms  p99 {p99:.2f} ms"
        f"{errors}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--script", choices=sorted(SCRIPTS), action="append")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tree", type=Path, help="also measure the daemon of this checkout")
    parser.add_argument("--sink", action="store_true", help="also with one webhook sink")
    parser.add_argument("--sink-concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if not available():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    for script in args.script or sorted(SCRIPTS):
        trees = [None] if args.tree is None else [args.tree, None]
        for tree in trees:
            for sink in [None, args.sink_concurrency] if args.sink else [None]:
                result = measure(
                    script,
                    duration_s=args.duration,
                    connections=args.connections,
                    tree=tree,
                    sink=sink,
                )
                label = f"{script} ({'this tree' if tree is None else tree})"
                if sink is not None:
                    label += f" + sink c={sink}"
                print(row(result, label), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
