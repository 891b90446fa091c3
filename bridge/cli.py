"""The ``pbx-bridge`` command line.

Options and positional arguments go in any order (``dlq purge --sink crm 1042 1043``):
:func:`parse_args` walks the subcommand names first, then lets the chosen command's own parser
read the rest intermixed. The client commands take ``--url``/``--token`` from
``PBX_BRIDGE_URL``/``PBX_BRIDGE_TOKEN`` when the flags are not given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import textwrap
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import __version__, config, redact
from bridge.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8480"
URL_ENV = "PBX_BRIDGE_URL"
TOKEN_ENV = "PBX_BRIDGE_TOKEN"
# Never shown as a default in --help: they may come from the environment.
_SECRET_DESTS = frozenset({"token", "password", "webkey"})


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, defaults appended; no "(default: None)" and no secrets."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or action.dest in _SECRET_DESTS:
            return text
        if "(default" in text:
            return text
        return super()._get_help_string(action)


def _wrap(text: str) -> str:
    """Fill prose paragraphs to the terminal's usual width; indented ones are kept as written."""
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("  ") else textwrap.fill(p, 78) for p in paragraphs)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _command(
    commands: Any, name: str, summary: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description),
        epilog=_examples(*examples),
        formatter_class=_Formatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    """The whole command line (its defaults read ``PBX_BRIDGE_URL``/``PBX_BRIDGE_TOKEN`` now)."""
    parser = argparse.ArgumentParser(
        prog="pbx-bridge",
        description=_wrap(
            "PBX call events in, one durable normalised stream out.\n\n"
            "Start the daemon with `run`; the other commands talk to a running daemon (set "
            f"{URL_ENV} and {TOKEN_ENV} once instead of passing --url and --token) or play a PBX."
        ),
        epilog=_examples(
            "pbx-bridge run",
            "pbx-bridge tail",
            "pbx-bridge simulate coocenter --calls 5",
            "pbx-bridge <command> --help",
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pbx-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    run = _command(
        commands,
        "run",
        "run the daemon",
        "Run the daemon in the foreground until SIGTERM or Ctrl-C. Without --config it uses the "
        "embedded default: a loopback listener on 127.0.0.1:8480, the outbox in ./var and one "
        "unauthenticated source per vendor, named after it (/ingest/coocenter, ...).",
        "pbx-bridge run",
        "pbx-bridge run --config /etc/pbx-bridge/pbx-bridge.toml",
        "pbx-bridge run --listen 127.0.0.1:9000 --data-dir /tmp/bridge",
    )
    run.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: the embedded default)"
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="HOST:PORT, overrides server.listen")
    run.add_argument("--data-dir", metavar="DIR", help="overrides storage.data_dir")

    check = _command(
        commands,
        "check-config",
        "validate a config file and exit",
        "Load a config file as `run` would and say what is wrong (each problem with its key "
        "path), or list its sources; with --print, show the effective config instead. Exit "
        "status 0 when valid, 2 when not.",
        "pbx-bridge check-config config/pbx-bridge.example.toml",
        "pbx-bridge check-config --print my.toml",
    )
    check.add_argument("file", help="the TOML file")
    check.add_argument(
        "--print",
        action="store_true",
        help="print the effective config (defaults filled in) as TOML, credentials masked",
    )

    tail = _command(
        commands,
        "tail",
        "print the live event stream",
        "Follow the event stream (SSE), resuming after drops. Pretty lines on a terminal, one "
        "CloudEvent JSON object per line when piped. Says on stderr where it starts.",
        "pbx-bridge tail",
        "pbx-bridge tail --type 'call.*' --after 0",
        "pbx-bridge tail --limit 1 | jq .data",
    )
    tail.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="PATTERN",
        help="type pattern, e.g. call.* (repeatable)",
    )
    tail.add_argument(
        "--after", type=int, metavar="SEQ", help="start after this seq (default: only new events)"
    )
    tail.add_argument("--limit", type=int, metavar="N", help="stop after this many events")
    _api_args(tail)

    quarantine = _command(
        commands,
        "quarantine",
        "payloads that could not be read",
        "Pushes the bridge could not read are kept, not lost: list them, show one as received, "
        "or reprocess them (after a fix) to commit what now reads.\n\n"
        "  list               held entries: source, field, error, times seen\n"
        "  show ID            one entry's payload as received\n"
        "  reprocess IDS...   commit what now reads (or --all); the rest stays held",
        "pbx-bridge quarantine list",
        "pbx-bridge quarantine show 12",
        "pbx-bridge quarantine reprocess 12 13",
        "pbx-bridge quarantine reprocess --all",
    )
    quarantine.add_argument("action", choices=("list", "show", "reprocess"), help="what to do")
    quarantine.add_argument("ids", nargs="*", type=int, help="entry ids (show, reprocess)")
    quarantine.add_argument("--all", action="store_true", help="reprocess every held entry")
    quarantine.add_argument(
        "--state", default="held", choices=("held", "reprocessed", "all"), help="list these"
    )
    quarantine.add_argument("--source", help="list only this source's entries")
    _api_args(quarantine)

    sinks = _command(
        commands,
        "sinks",
        "the sinks' cursors, lag and health",
        "One line per sink: its cursor (the last seq it has settled), lag behind the newest "
        "event, dead letters, breaker state and last error.",
        "pbx-bridge sinks",
        f"{URL_ENV}=http://bridge.example:8480 {TOKEN_ENV}=... pbx-bridge sinks",
    )
    _api_args(sinks)

    dlq = _command(
        commands,
        "dlq",
        "a sink's dead letters",
        "Events a webhook sink gave up on (a 4xx, or retries exhausted).\n\n"
        "  list              the sink's dead letters with attempts and last error\n"
        "  retry SEQS...     re-drive them (or --all), max_in_memory at a time\n"
        "  purge SEQS...     forget them (or --all)",
        "pbx-bridge dlq list --sink crm",
        "pbx-bridge dlq retry --sink crm --all",
        "pbx-bridge dlq purge --sink crm 1042 1043",
    )
    dlq.add_argument("action", choices=("list", "retry", "purge"), help="what to do")
    dlq.add_argument("seqs", nargs="*", type=int, help="event seqs (retry, purge)")
    dlq.add_argument("--sink", required=True, help="the sink's name (see `pbx-bridge sinks`)")
    dlq.add_argument("--all", action="store_true", help="every dead letter of the sink")
    _api_args(dlq)

    replay = _command(
        commands,
        "replay",
        "send a sink's history again",
        "Move a sink's cursor back so it sends every matching event from --from-seq on again "
        "(this also re-enables a sink a receiver disabled with 410). Prints how many events "
        "that is; with --wait, shows progress until the sink has caught up.",
        "pbx-bridge replay --sink crm --from-seq 1",
        "pbx-bridge replay --sink crm --from-seq 1042 --wait",
    )
    replay.add_argument("--sink", required=True, help="the sink's name (see `pbx-bridge sinks`)")
    replay.add_argument(
        "--from-seq", type=int, required=True, metavar="SEQ", help="the first seq to send again"
    )
    replay.add_argument(
        "--wait", action="store_true", help="wait until the sink's cursor reaches the head"
    )
    replay.add_argument(
        "--interval-s", type=float, default=1.0, help="with --wait: how often to look"
    )
    _api_args(replay)

    calls = _command(
        commands,
        "calls",
        "the folded call records (call log, missed calls)",
        "The bridge folds each call's events into one record: parties, state, disposition and "
        "whether it was missed. Newest activity first.",
        "pbx-bridge calls",
        "pbx-bridge calls --missed --since 2024-05-01T00:00:00Z",
        "pbx-bridge calls --state active --json",
    )
    calls.add_argument("--missed", action="store_true", help="only calls reported missed")
    calls.add_argument("--source", help="only this source's calls")
    calls.add_argument(
        "--state",
        choices=("active", "ended", "ringing", "answered", "initiated"),
        help="only calls in this state",
    )
    calls.add_argument("--since", help="active since (RFC 3339 or epoch seconds)")
    calls.add_argument("--limit", type=int, default=50, help="at most this many")
    calls.add_argument("--json", action="store_true", help="one JSON record per line")
    _api_args(calls)

    from bridge import cli_commands

    cli_commands.add_parsers(commands, _command, _api_args)
    _simulators(commands)
    return parser


def _simulators(commands: Any) -> None:
    base = _env(URL_ENV) or DEFAULT_URL
    simulate = _command(
        commands,
        "simulate",
        "play a vendor PBX against the bridge",
        "Play realistic calls the way a vendor's PBX sends them (its retransmissions and "
        "duplicates included), to loopback only. The default --url is the default config's "
        f"source for that vendor, on ${URL_ENV} when set.",
        "pbx-bridge simulate coocenter --calls 20 --rate 2",
        "pbx-bridge simulate coocenter --help",
    )
    vendors = simulate.add_subparsers(dest="vendor", required=True, metavar="<vendor>")
    coo = _command(
        vendors,
        "coocenter",
        "Zycoo CooCenter call lifecycles",
        "Zycoo CooCenter pushes: dialbegin, dialend, cdr and a cc_cdr per queue call.",
        "pbx-bridge simulate coocenter --calls 20 --rate 2",
        "pbx-bridge simulate coocenter --dialstatus asterisk --timezone Asia/Shanghai",
        'pbx-bridge simulate coocenter --webkey "$COOCENTER_WEBKEY" --url URL',
    )
    coo.add_argument("--url", default=f"{base}/ingest/coocenter", help="the source's ingest URL")
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
    coral = _command(
        vendors,
        "coral",
        "Coral IRIS IVDX HTTP pushes",
        "Coral IRIS IVDX HTTP pushes (CDR and call events) on the source's ingest URL.",
        "pbx-bridge simulate coral --calls 10",
        "pbx-bridge simulate coral --timezone Asia/Kolkata",
    )
    coral.add_argument("--url", default=f"{base}/ingest/coral", help="the source's ingest URL")
    _sim_common(coral)
    _sim_zone(coral)
    oncall = _command(
        vendors,
        "oncall",
        "OnCall/PortSIP Event URL and CDR pushes",
        "OnCall/PortSIP Event URL and CDR pushes, in order or (--reorder) as PortSIP may.",
        "pbx-bridge simulate oncall --reorder",
        "pbx-bridge simulate oncall --username pbx --password secret --digest",
    )
    oncall.add_argument("--url", default=f"{base}/ingest/oncall", help="the source's ingest URL")
    oncall.add_argument("--username", help="HTTP Basic (or, with --digest, Digest) user")
    oncall.add_argument("--password", help="its password")
    oncall.add_argument("--digest", action="store_true", help="authenticate with HTTP Digest")
    oncall.add_argument(
        "--reorder", action="store_true", help="deliver out of order, as PortSIP may"
    )
    _sim_common(oncall)
    realtime = _command(
        vendors,
        "coral-realtime",
        "a Coral STOMP-over-WebSocket server playing channel states",
        "A STOMP-over-WebSocket server standing in for Coral's realtime feed. The bridge "
        "connects to it, not the other way round: a source needs a [sources.realtime] section "
        "with this server's URL (printed at start; the default config has none).",
        "pbx-bridge simulate coral-realtime",
        "pbx-bridge simulate coral-realtime --listen 127.0.0.1:8989 --drop-every-s 30",
    )
    realtime.add_argument(
        "--listen", default="127.0.0.1:8989", metavar="HOST:PORT", help="HOST:PORT (loopback)"
    )
    realtime.add_argument("--calls", type=int, default=20, help="how many calls to play")
    realtime.add_argument("--rate", type=float, default=5.0, help="messages per second")
    realtime.add_argument(
        "--group", default="778", help="operator-console group: /topic/OC_<group>"
    )
    realtime.add_argument("--drop-every-s", type=float, help="drop every connection this often")
    realtime.add_argument("--seed", type=int, help="random seed (the same calls every run)")
    realtime.add_argument(
        "--idle-warn-s", type=float, default=30.0, help="say so if nobody subscribes this soon"
    )
    callog = _command(
        vendors,
        "callog",
        "cloud IVR call logs (one GET per call)",
        "A cloud IVR's call logs: one GET per call, the fields in the query string.",
        "pbx-bridge simulate callog",
        'pbx-bridge simulate callog --token "$CALLOG_TOKEN" --timezone Asia/Kolkata',
    )
    callog.add_argument("--url", default=f"{base}/ingest/callog", help="the source's ingest URL")
    callog.add_argument("--token", help="the source's shared token, sent as a query parameter")
    callog.add_argument("--token-param", default="token", help="the query parameter's name")
    _sim_common(callog)
    _sim_zone(callog)
    from bridge import cli_simulate_api

    cli_simulate_api.add_parsers(vendors, _command, base)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # set but empty: as if unset


def _api_args(parser: argparse.ArgumentParser) -> None:
    env = _env(URL_ENV)
    where = f"from ${URL_ENV}" if env else f"${URL_ENV} overrides it"
    url = env or DEFAULT_URL
    shown = redact.url(url)
    parser.add_argument("--url", default=url, help=f"the bridge's URL (default: {shown}, {where})")
    parser.add_argument(
        "--token",
        default=_env(TOKEN_ENV),
        help=f"API bearer token (default: ${TOKEN_ENV}, else none)",
    )


def _sim_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=10, help="how many calls to play")
    parser.add_argument("--rate", type=float, default=2.0, help="new calls per second")
    parser.add_argument("--seed", type=int, help="random seed (the same calls every run)")
    parser.add_argument(
        "--retransmit-s", type=float, default=2.0, help="resend an unacknowledged push this often"
    )
    parser.add_argument(
        "--duplicate-ratio", type=float, default=0.1, help="share of pushes sent twice"
    )


def _sim_zone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        default="UTC",
        help="the PBX's local zone: the source's timezone in the bridge's config",
    )


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def parse_args(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse a command line, options and positionals in any order.

    argparse cannot intermix arguments across subparsers, so the subcommand chain
    (``simulate coocenter``) is resolved first and the leaf parser reads the rest with
    ``parse_intermixed_args``. Anything else (no command, ``--help``, ``--version``, an unknown
    command) goes to the full parser, which answers as usual.
    """
    parser = parser if parser is not None else _parser()
    args = list(sys.argv[1:] if argv is None else argv)
    namespace = argparse.Namespace()
    current, rest = parser, args
    while (subcommands := _subcommands(current)) is not None:
        if not rest or rest[0] not in subcommands.choices:
            return parser.parse_args(args)
        setattr(namespace, subcommands.dest, rest[0])
        current, rest = subcommands.choices[rest[0]], rest[1:]
    return current.parse_intermixed_args(rest, namespace)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for where, problem in exc.problems:  # every mistake of the file, one per line
            print(
                f"config error: {where}: {problem}" if where else f"config error: {problem}",
                file=sys.stderr,
            )
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pbx-bridge calls | head -1`: the reader is done, so are we
        _quiet_stdout()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "check-config":
        loaded = config.load(args.file)
        if args.print:
            from bridge import config_show

            print(config_show.render(loaded), end="")
            return 0
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
    from bridge import cli_commands

    if args.command in cli_commands.NAMES:
        return cli_commands.main(args)
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
    return 2


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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

    def load() -> config.Config:  # at start, and again on each reload
        return config.override(config.load(args.config), listen=args.listen, data_dir=args.data_dir)

    loaded = load()
    logs.setup(loaded.logging)
    _install_uvloop()
    try:
        asyncio.run(app.serve(loaded, load=load if args.config else None))
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
            opscli.replay(
                url=args.url,
                token=args.token,
                sink=args.sink,
                from_seq=args.from_seq,
                wait=args.wait,
                interval_s=args.interval_s,
            )
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
    from bridge.tail import OutputClosed, StreamRefused, tail

    try:
        asyncio.run(
            tail(
                url=args.url,
                types=tuple(args.type),
                after=args.after,
                token=args.token,
                limit=args.limit,
            )
        )
    except OutputClosed:  # `pbx-bridge tail | head -1`
        _quiet_stdout()
    except StreamRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from bridge.simulate import callog, coocenter, coral, oncall

    if args.vendor.endswith("-api"):
        from bridge import cli_simulate_api

        return cli_simulate_api.run(args)
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
                idle_warn_s=args.idle_warn_s,
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
