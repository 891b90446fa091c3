"""The ``pbx-bridge`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import __version__, config
from bridge.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8480"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx-bridge",
        description="PBX call events in, one durable normalised stream out.",
    )
    parser.add_argument("--version", action="version", version=f"pbx-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="TOML config file (default: the embedded default)")
    run.add_argument("--listen", help="HOST:PORT, overrides server.listen")
    run.add_argument("--data-dir", help="overrides storage.data_dir")

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    tail = commands.add_parser("tail", help="print the live event stream")
    tail.add_argument("--url", default=DEFAULT_URL, help=f"bridge URL (default {DEFAULT_URL})")
    tail.add_argument("--type", action="append", default=[], help="type pattern, e.g. call.*")
    tail.add_argument("--after", type=int, help="start after this seq (default: only new events)")
    tail.add_argument("--token", help="API bearer token")
    tail.add_argument("--limit", type=int, help="stop after this many events")

    quarantine = commands.add_parser("quarantine", help="payloads that could not be read")
    quarantine.add_argument("action", choices=("list", "show", "reprocess"))
    quarantine.add_argument("ids", nargs="*", type=int, help="entry ids (show, reprocess)")
    quarantine.add_argument("--all", action="store_true", help="reprocess every held entry")
    quarantine.add_argument("--state", default="held", choices=("held", "reprocessed", "all"))
    quarantine.add_argument("--source", help="list only this source's entries")
    quarantine.add_argument("--url", default=DEFAULT_URL)
    quarantine.add_argument("--token", help="API bearer token")

    sinks = commands.add_parser("sinks", help="the sinks' cursors, lag and health")
    _api_args(sinks)

    dlq = commands.add_parser("dlq", help="a sink's dead letters")
    dlq.add_argument("action", choices=("list", "retry", "purge"))
    dlq.add_argument("seqs", nargs="*", type=int, help="event seqs (retry, purge)")
    dlq.add_argument("--sink", required=True)
    dlq.add_argument("--all", action="store_true", help="every dead letter of the sink")
    _api_args(dlq)

    replay = commands.add_parser("replay", help="send a sink's history again")
    replay.add_argument("--sink", required=True)
    replay.add_argument("--from-seq", type=int, required=True)
    _api_args(replay)

    calls = commands.add_parser("calls", help="the folded call records (call log, missed calls)")
    calls.add_argument("--missed", action="store_true", help="only calls reported missed")
    calls.add_argument("--source", help="only this source's calls")
    calls.add_argument("--state", choices=("active", "ended", "ringing", "answered", "initiated"))
    calls.add_argument("--since", help="active since (RFC 3339 or epoch seconds)")
    calls.add_argument("--limit", type=int, default=50)
    calls.add_argument("--json", action="store_true", help="one JSON record per line")
    _api_args(calls)

    simulate = commands.add_parser("simulate", help="play a vendor PBX against the bridge")
    vendors = simulate.add_subparsers(dest="vendor", required=True)
    coo = vendors.add_parser("coocenter", help="Zycoo CooCenter call lifecycles")
    coo.add_argument("--url", default=f"{DEFAULT_URL}/ingest/coocenter")
    coo.add_argument("--webkey", help="send Authorization: md5(WEBKEY + date)")
    coo.add_argument(
        "--dialstatus",
        choices=("zycoo", "asterisk"),
        default="zycoo",
        help="dialend's dialstatus: \"hangup\" as in Zycoo's API book (zycoo), or Asterisk's "
        "ANSWER/NOANSWER/CANCEL (asterisk)",
    )
    _sim_common(coo)
    _sim_zone(coo)
    coral = vendors.add_parser("coral", help="Coral IRIS IVDX HTTP pushes")
    coral.add_argument("--url", default=f"{DEFAULT_URL}/ingest/coral")
    _sim_common(coral)
    _sim_zone(coral)
    oncall = vendors.add_parser("oncall", help="OnCall/PortSIP Event URL and CDR pushes")
    oncall.add_argument("--url", default=f"{DEFAULT_URL}/ingest/oncall")
    oncall.add_argument("--username", help="HTTP Basic (or, with --digest, Digest) user")
    oncall.add_argument("--password")
    oncall.add_argument("--digest", action="store_true", help="authenticate with HTTP Digest")
    oncall.add_argument(
        "--reorder", action="store_true", help="deliver out of order, as PortSIP may"
    )
    _sim_common(oncall)
    realtime = vendors.add_parser(
        "coral-realtime", help="a Coral STOMP-over-WebSocket server playing channel states"
    )
    realtime.add_argument("--listen", default="127.0.0.1:8989", help="HOST:PORT (loopback)")
    realtime.add_argument("--calls", type=int, default=20)
    realtime.add_argument("--rate", type=float, default=5.0, help="messages per second")
    realtime.add_argument(
        "--group", default="778", help="operator-console group: /topic/OC_<group>"
    )
    realtime.add_argument("--drop-every-s", type=float, help="drop every connection this often")
    realtime.add_argument("--seed", type=int)
    callog = vendors.add_parser("callog", help="cloud IVR call logs (one GET per call)")
    callog.add_argument("--url", default=f"{DEFAULT_URL}/ingest/callog")
    callog.add_argument("--token", help="the shared token, sent as a query parameter")
    callog.add_argument("--token-param", default="token")
    _sim_common(callog)
    _sim_zone(callog)
    return parser


def _api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"bridge URL (default {DEFAULT_URL})")
    parser.add_argument("--token", help="API bearer token")


def _sim_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0, help="new calls per second")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--retransmit-s", type=float, default=2.0)
    parser.add_argument("--duplicate-ratio", type=float, default=0.1)


def _sim_zone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        default="UTC",
        help="the PBX's local zone: the source's timezone in the bridge's config (default UTC)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check-config":
            loaded = config.load(args.file)
            names = ", ".join(source.name for source in loaded.sources) or "none"
            print(f"{args.file}: ok ({len(loaded.sources)} sources: {names})")
            return 0
        if args.command == "tail":
            return _tail(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command in ("sinks", "dlq", "replay"):
            return _sink_command(args)
        if args.command == "calls":
            return asyncio.run(calls_command(args))
        if args.command == "quarantine":
            from bridge import opscli

            return asyncio.run(
                opscli.quarantine(
                    url=args.url,
                    token=args.token,
                    action=args.action,
                    ids=args.ids,
                    every=args.all,
                    state=args.state,
                    source=args.source,
                )
            )
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def calls_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> Coroutine[Any, Any, int]:
    """``pbx-bridge calls``: the call records, through the running daemon."""
    from bridge import opscli

    return opscli.calls(
        url=args.url,
        token=args.token,
        missed=args.missed,
        source=args.source,
        state=args.state,
        since=args.since,
        limit=args.limit,
        as_json=args.json,
        out=out,
    )


def _run(args: argparse.Namespace) -> int:
    from bridge import app, logs

    loaded = config.override(config.load(args.config), listen=args.listen, data_dir=args.data_dir)
    logs.setup(loaded.logging)
    _install_uvloop()
    try:
        asyncio.run(app.serve(loaded))
    except (OSError, sqlite3.Error) as exc:
        # The usual 3 a.m. causes: the port is taken, the data directory is not writable.
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _sink_command(args: argparse.Namespace) -> int:
    from bridge import opscli

    if args.command == "sinks":
        return asyncio.run(opscli.sinks(url=args.url, token=args.token))
    if args.command == "replay":
        return asyncio.run(
            opscli.replay(url=args.url, token=args.token, sink=args.sink, from_seq=args.from_seq)
        )
    return asyncio.run(
        opscli.dlq(
            url=args.url,
            token=args.token,
            sink=args.sink,
            action=args.action,
            seqs=args.seqs,
            every=args.all,
        )
    )


def _tail(args: argparse.Namespace) -> int:
    from bridge.tail import tail

    asyncio.run(
        tail(
            url=args.url,
            types=tuple(args.type),
            after=args.after,
            token=args.token,
            limit=args.limit,
        )
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from bridge.simulate import callog, coocenter, coral, oncall

    if args.vendor == "coral-realtime":
        from bridge.simulate import coral_realtime

        host, port = config.split_listen(args.listen, "--listen")
        asyncio.run(
            coral_realtime.serve_forever(
                host=host,
                port=port,
                calls=args.calls,
                rate=args.rate,
                group=args.group,
                drop_every_s=args.drop_every_s,
                seed=args.seed,
            )
        )
        return 0

    common = {
        "url": args.url,
        "calls": args.calls,
        "rate": args.rate,
        "seed": args.seed,
        "retransmit_s": args.retransmit_s,
        "duplicate_ratio": args.duplicate_ratio,
        "out": sys.stdout,
    }
    if args.vendor == "oncall":
        report = asyncio.run(
            oncall.run(
                username=args.username,
                password=args.password,
                digest=args.digest,
                reorder=args.reorder,
                **common,
            )
        )
        return 0 if report.failed == 0 else 1
    tz = _sim_tz(args.timezone)
    if args.vendor == "coocenter":
        report = asyncio.run(
            coocenter.run(webkey=args.webkey, dialstatus=args.dialstatus, tz=tz, **common)
        )
    elif args.vendor == "callog":
        report = asyncio.run(
            callog.run(token=args.token, token_param=args.token_param, tz=tz, **common)
        )
    else:
        report = asyncio.run(coral.run(tz=tz, **common))
    return 0 if report.failed == 0 else 1


def _sim_tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("--timezone", f"unknown time zone {name!r}") from None
