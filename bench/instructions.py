"""Instructions per push through normalise + commit, counted by callgrind: ``python -m
bench.instructions [--tree OLD]``.

Wall-clock CPU on a shared 2-core machine wanders by 10-20 % from run to run; callgrind counts
instructions, which repeat to the digit for the same code and input. Each measurement runs a
workload twice, with N and 2N calls, under ``valgrind --tool=callgrind`` and reports the
difference per push, so start-up and imports cancel out. The workloads are CooCenter pushes of
new calls: ``dialbegin`` alone, or whole lifecycles (dialbegin, dialend, hangup, cdr; one call
in three unanswered), committed in batches of 32 to a real SQLite file, as the writer does.

``--tree DIR`` measures another checkout too (``git worktree add /tmp/old HEAD~1``), so a
change's cost is its before and after side by side.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import REPO

_COLLECTED = re.compile(r"Collected : (\d+)")


def _pushes(mix: str, call: int) -> list[dict[str, Any]]:
    uid = f"{call}.1"
    dial = {
        "timestamp": "1725845648.5",
        "channel": f"SIP/trunk1-{call}",
        "calleridnum": "13800138000",
        "destchannel": f"SIP/801-{call}",
        "destcalleridnum": "801",
        "uniqueid": uid,
    }
    begin = {"event": "dialbegin", "destuniqueid": f"{uid}2", **dial}
    if mix == "dialbegin":
        return [begin]
    answered = call % 3 != 0
    return [
        begin,
        {"event": "dialend", "dialstatus": "ANSWER" if answered else "NOANSWER", **dial},
        {"event": "hangup", "uniqueid": uid, "calleridnum": "13800138000"},
        {
            "event": "cdr",
            "uniqueid": uid,
            "source": "13800138000",
            "destination": "801",
            "starttime": "2024-09-09 09:34:08",
            "endtime": "2024-09-09 09:35:20",
            "disposition": "ANSWERED" if answered else "NO ANSWER",
            "calltype": "inbound",
        },
    ]


def workload(mix: str, calls: int) -> None:
    """Normalise and commit ``calls`` calls' pushes (runs in the child, under callgrind)."""
    from datetime import UTC, datetime

    from bridge.store import commit, schema
    from bridge.vendors import coocenter
    from bridge.vendors.base import Payload, SourceContext

    received = datetime(2024, 9, 9, 1, 34, 8, tzinfo=UTC)
    ctx = SourceContext(name="coocenter", vendor="coocenter", tz=UTC, received_at=received)
    bodies = [json.dumps(p).encode() for c in range(calls) for p in _pushes(mix, c)]
    with tempfile.TemporaryDirectory() as folder:
        conn = schema.connect(str(Path(folder) / "outbox.sqlite3"), synchronous="normal")
        schema.migrate(conn)
        seq = 1
        for start in range(0, len(bodies), 32):
            batch = [coocenter.normalize(Payload(body=b), ctx) for b in bodies[start : start + 32]]
            result: Any = commit.commit(conn, batch, next_seq=seq, now=time.time())
            added = result[0] if isinstance(result, tuple) else result  # before/after the fold
            for events in added:
                if events:
                    seq = events[-1].seq + 1


def count(tree: Path, mix: str, calls: int) -> int:
    """Instructions of one child run of the workload."""
    # This file by path: the other tree's bench/ may not have it, and its bridge/ must win.
    here = str(Path(__file__).resolve())
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(tree)!r});"
        f" runpy.run_path({here!r})['workload']({mix!r}, {calls})"
    )
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv += [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=True)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {done.stderr[-500:]}")
    return int(found.group(1))


def per_push(tree: Path, mix: str, calls: int) -> float:
    pushes = calls * len(_pushes(mix, 1))
    return (count(tree, mix, 2 * calls) - count(tree, mix, calls)) / pushes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--tree", type=Path, help="also measure this checkout (the baseline)")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    trees = [REPO] if args.tree is None else [args.tree.resolve(), REPO]
    for mix in ("dialbegin", "lifecycle"):
        figures = [per_push(tree, mix, args.calls) for tree in trees]
        cells = "   ".join(
            f"{tree}: {n / 1000:.1f}k" for tree, n in zip(trees, figures, strict=True)
        )
        ratio = f"   (x{figures[-1] / figures[0]:.3f})" if len(figures) == 2 else ""
        print(f"{mix:<10} instructions per push   {cells}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
