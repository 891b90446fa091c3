"""``make bench``: durable ingest vs a bare aiohttp server, ingest-to-SSE latency, realtime.

Every server and load generator is its own process (uvloop where installed), all on 127.0.0.1:

1. baseline: ``bench.baseline`` (read the body, answer 200) under ``--connections`` closed-loop
   senders for ``--duration`` seconds after ``--warmup``;
2. ingest: the real daemon, fresh data dir, default ``synchronous=full``, the identical load;
3. the ratio of the two;
4. e2e: a fresh daemon, an SSE subscriber connected first, then pushes sent open-loop at
   ``--rate``; latency is subscriber receipt minus the push's send time (carried in raw).
5. realtime: a fresh daemon subscribed over STOMP to ``bench.stomp_server``, which publishes
   ``--realtime-messages`` one-event messages as fast as it can; messages/s from the first
   publish to all committed, its ratio to ingest's events/s, and the publisher's own ceiling
   (the same messages into a subscriber that only counts them). See bench/realtime.py.
6. delivery: a fresh daemon with one webhook sink to ``bench.receiver``: delivered events/s
   under the ingest load (per ``--delivery-concurrency``), push-to-receipt latency at
   ``--rate``, and the drain of a ``--backlog`` ingested while the receiver was down. See
   bench/delivery.py.

Prints a table and writes ``bench/results/latest.json``. Figures only, no pass/fail.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from bench import delivery, phases, realtime
from bench.procs import REPO
from bridge import config as bridge_config
from bridge.errors import ConfigError

RESULTS = REPO / "bench" / "results" / "latest.json"
PHASES = ("baseline", "ingest", "lifecycle", "e2e", "realtime", "delivery")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
    parser.add_argument("--connections", type=int, default=64, help="concurrent senders")
    parser.add_argument(
        "--loadgen-procs", type=int, default=1, help="generator processes sharing the connections"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="e2e pushes per second")
    parser.add_argument(
        "--realtime-messages",
        type=int,
        default=50_000,
        help="STOMP messages (one event each) the realtime phase publishes",
    )
    parser.add_argument(
        "--delivery-concurrency",
        default="8,32",
        help="comma-separated webhook sink concurrencies (the first: latency and backlog runs)",
    )
    parser.add_argument(
        "--delivery-batch", type=int, default=1, help="the webhook sink's batch_size"
    )
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="events the delivery phase drains"
    )
    parser.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        help="the daemon's storage.synchronous (default: the config's, i.e. full)",
    )
    parser.add_argument("--config", type=Path, help="daemon TOML (default: the embedded one)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)}",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the ExitStack: children stopped, dirs removed

    signal.signal(signal.SIGTERM, handler)


def _uvloop() -> str | None:
    try:
        import uvloop
    except ImportError:
        return None
    return str(getattr(uvloop, "__version__", "unknown"))


def daemon_config(args: argparse.Namespace, workdir: Path) -> Path | None:
    """The TOML the daemon runs with: ``--config``, or the default plus ``--synchronous``."""
    if args.config is not None:
        return Path(args.config).resolve()
    if args.synchronous in (None, "full"):
        return None
    path = workdir / "bench.toml"
    path.write_text(
        f'[storage]\nsynchronous = "{args.synchronous}"\n\n'
        '[[sources]]\nname = "coocenter"\nvendor = "coocenter"\n'
    )
    return path


def storage_settings(config: Path | None) -> dict[str, Any]:
    storage = bridge_config.load(config).storage
    return {
        "synchronous": storage.synchronous,
        "linger_ms": storage.linger_ms,
        "max_batch": storage.max_batch,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wanted = {name.strip() for name in args.phases.split(",")}
    closed = phases.Load(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        procs=args.loadgen_procs,
        rate=args.rate,
    )
    paced = phases.Load(
        duration_s=args.duration, warmup_s=args.warmup, connections=64, procs=1, rate=args.rate
    )
    out: dict[str, Any] = {}
    with ExitStack() as outer:
        workdir = Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="pbx-bench-")))
        config = daemon_config(args, workdir)
        out["storage"] = storage_settings(config)
        if "baseline" in wanted:
            print(f"baseline: {args.duration:g}s of {args.connections} senders ...", flush=True)
            with ExitStack() as stack:
                server, port = phases.start_baseline(stack, workdir)
                out["baseline"] = phases.closed_loop(stack, workdir, "base", server, port, closed)
        if "ingest" in wanted:
            print(f"ingest:   {args.duration:g}s of {args.connections} senders ...", flush=True)
            with ExitStack() as stack:
                daemon, port = phases.start_daemon(stack, workdir, "ingest", config)
                out["ingest"] = phases.closed_loop(
                    stack, workdir, "ingest", daemon, port, closed, outbox=True
                )
        if "lifecycle" in wanted:
            print(f"lifecycle: {args.duration:g}s of {args.connections} senders ...", flush=True)
            with ExitStack() as stack:
                daemon, port = phases.start_daemon(stack, workdir, "lifecycle", config)
                out["lifecycle"] = phases.closed_loop(
                    stack, workdir, "lifecycle", daemon, port, closed, outbox=True, mix="lifecycle"
                )
        if "e2e" in wanted:
            print(f"e2e:      {args.duration:g}s at {args.rate:g} pushes/s ...", flush=True)
            with ExitStack() as stack:
                daemon, port = phases.start_daemon(stack, workdir, "e2e", config)
                out["e2e"] = phases.sse_latency(stack, workdir, daemon, port, paced)
        if "realtime" in wanted:
            print(f"realtime: {args.realtime_messages} STOMP messages ...", flush=True)
            out["realtime"] = realtime.measure(
                workdir, args.config, args.synchronous, args.realtime_messages
            )
        if "delivery" in wanted:
            print("delivery: webhook sink to a local receiver ...", flush=True)
            settings = delivery.Settings(
                closed=closed,
                paced=paced,
                concurrencies=_concurrencies(args),
                batch_size=args.delivery_batch,
                backlog=args.backlog,
                base=None if args.config is None else Path(args.config).resolve(),
                synchronous=args.synchronous,
            )
            out["delivery"] = delivery.measure(workdir, settings)
    return out


def _concurrencies(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(int(value) for value in args.delivery_concurrency.split(","))


def summary(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    storage = out.pop("storage", {})
    base = out.get("baseline", {})
    ingest = out.get("ingest", {})
    e2e = out.get("e2e", {})
    stomp = out.get("realtime", {})
    sink = out.get("delivery", {})
    steady = sink["steady"][0] if sink else {}
    paced = sink.get("latency", {})
    drained = sink.get("backlog", {})
    ratio = realtime_ratio = None
    if base and ingest and base["events_per_s"]:
        ratio = ingest["events_per_s"] / base["events_per_s"]
    if stomp and ingest and ingest["events_per_s"]:
        realtime_ratio = stomp["messages_per_s"] / ingest["events_per_s"]
    sink_ratio = None
    if steady and ingest and ingest["events_per_s"]:
        sink_ratio = steady["ingest_events_per_s"] / ingest["events_per_s"]
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "ingest_events_per_s": ingest.get("events_per_s"),
        "ingest_p50_ms": ingest.get("p50_ms"),
        "ingest_p99_ms": ingest.get("p99_ms"),
        "lifecycle_pushes_per_s": out.get("lifecycle", {}).get("events_per_s"),
        "lifecycle_events_per_s": out.get("lifecycle", {}).get("committed_events_per_s"),
        "lifecycle_p99_ms": out.get("lifecycle", {}).get("p99_ms"),
        "baseline_events_per_s": base.get("events_per_s"),
        "baseline_p50_ms": base.get("p50_ms"),
        "baseline_p99_ms": base.get("p99_ms"),
        "ingest_ratio": ratio,
        "e2e_sse_p50_ms": e2e.get("p50_ms"),
        "e2e_sse_p99_ms": e2e.get("p99_ms"),
        "realtime_messages_per_s": stomp.get("messages_per_s"),
        "realtime_ratio": realtime_ratio,
        "delivery_events_per_s": steady.get("delivered_per_s"),
        "ingest_with_sink_events_per_s": steady.get("ingest_events_per_s"),
        "ingest_sink_ratio": sink_ratio,
        "delivery_p50_ms": paced.get("p50_ms"),
        "delivery_p99_ms": paced.get("p99_ms"),
        "backlog_drain_events_per_s": drained.get("drain_events_per_s"),
        "backlog_drain_s": drained.get("drain_s"),
        "backlog_duplicates": drained.get("duplicates"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "uvloop": _uvloop(),
        },
        "settings": {
            **storage,
            "daemon_config": None if args.config is None else str(args.config),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "loadgen_procs": args.loadgen_procs,
            "e2e_rate_per_s": args.rate,
            "realtime_messages": args.realtime_messages,
            "delivery_concurrency": list(_concurrencies(args)),
            "delivery_batch_size": args.delivery_batch,
            "backlog": args.backlog,
            "payload": "coocenter extensionstatus (1 event per push)",
            "realtime_payload": "coral CHANNEL_PARK of a new leg (1 event per message)",
        },
        "phases": out,
    }


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    phases_ = result["phases"]
    rows = [f"{'':<22}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU':>9}{'gen CPU':>9}"]
    labels = (
        ("baseline", "baseline (aiohttp)"),
        ("ingest", "durable ingest"),
        ("lifecycle", "call lifecycles"),
    )
    for name, label in labels:
        phase = phases_.get(name)
        if phase:
            gen_cpu = "+".join(f"{cpu:.0f}" for cpu in phase["loadgen_cpu_pct"])
            rows.append(
                f"{label:<22}{phase['events_per_s']:>10.0f}{phase['p50_ms']:>9.2f}"
                f"{phase['p99_ms']:>9.2f}{phase['server_cpu_pct']:>8.0f}%{gen_cpu:>8}%"
            )
    lifecycle = phases_.get("lifecycle")
    if lifecycle and "committed_events_per_s" in lifecycle:
        rows.append(
            f"{'':<22}({lifecycle['committed_events_per_s']:.0f} events/s committed from"
            f" {lifecycle['events_per_s']:.0f} pushes/s: dialbegin, dialend, hangup, cdr)"
        )
    rows.append(f"{'ratio ingest/baseline':<22}{_f(result['ingest_ratio'], '>10.2f')}")
    e2e = phases_.get("e2e")
    if e2e:
        rows.append(
            f"{'ingest -> SSE':<22}{e2e['offered_per_s']:>10.0f}{e2e['p50_ms']:>9.2f}"
            f"{e2e['p99_ms']:>9.2f}{e2e['server_cpu_pct']:>8.0f}%"
            f"   ({e2e['received']}/{e2e['sent']} received, ack p99 {e2e['ack']['p99_ms']:.2f} ms)"
        )
    rows.extend(_realtime_rows(result))
    rows.extend(delivery.table_rows(result["phases"].get("delivery")))
    if result["ingest_sink_ratio"] is not None:
        rows.append(
            f"{'ratio with/without sink':<22}{result['ingest_sink_ratio']:>10.2f}"
            f"   (durable ingest {result['ingest_with_sink_events_per_s']:.0f}/s with one webhook"
            f" sink delivering, {result['ingest_events_per_s']:.0f}/s without, same run)"
        )
    errors = {name: phase["errors"] for name, phase in phases_.items() if phase.get("errors")}
    if errors:
        rows.append(f"non-2xx answers (not counted above): {errors}")
    ingest = phases_.get("ingest")
    if ingest and "events_per_commit" in ingest:
        rows.append(
            f"outbox: {ingest['commits_per_s']:.0f} commits/s, "
            f"{ingest['events_per_commit']:.1f} events per commit"
        )
    return "\n".join(rows)


def _realtime_rows(result: dict[str, Any]) -> list[str]:
    phase = result["phases"].get("realtime")
    if not phase:
        return []
    ceiling = phase["publisher_ceiling"]
    return [
        f"{'realtime (STOMP)':<22}{phase['messages_per_s']:>10.0f}{'-':>9}{'-':>9}"
        f"{phase['server_cpu_pct']:>8.0f}%{phase['publisher_cpu_pct']:>8.0f}%"
        f"   ({phase['events']} events, {phase['events_per_commit']:.1f} per commit)",
        f"{'ratio realtime/ingest':<22}{_f(result['realtime_ratio'], '>10.2f')}",
        f"{'publisher alone':<22}{ceiling['messages_per_s']:>10.0f}{'-':>9}{'-':>9}{'-':>9}"
        f"{ceiling['publisher_cpu_pct']:>8.0f}%   (into a sink that only counts)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.config is not None and args.synchronous is not None:
        parser.error("--synchronous with --config: set storage.synchronous in the file")
    unknown = {name.strip() for name in args.phases.split(",")} - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    try:
        _concurrencies(args)
    except ValueError:
        parser.error(f"--delivery-concurrency: integers, not {args.delivery_concurrency!r}")
    if args.backlog < 1:
        parser.error("--backlog: at least 1 event")
    _stop_on_sigterm()
    try:
        out = measure(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: children stopped, temp dirs removed", file=sys.stderr)
        return 130
    result = summary(args, out)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
