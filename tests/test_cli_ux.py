"""The command line explains itself: argument order, help, environment, banner, tail, progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shlex
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import __version__, banner, cli, config, opscli
from bridge.app import Daemon
from bridge.simulate import coocenter, coral_realtime
from tests.conftest import base_url, daemon_config, until, until_true
from tests.receiver import SECRET, Receiver, serve

TOKEN = "cli-ux-token-0123456789"


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            "dlq purge --sink crm 1042 1043",
            {"command": "dlq", "action": "purge", "sink": "crm", "seqs": [1042, 1043]},
        ),
        ("dlq retry --sink crm 7", {"action": "retry", "sink": "crm", "seqs": [7]}),
        ("dlq --sink crm retry 7 8", {"action": "retry", "sink": "crm", "seqs": [7, 8]}),
        (
            "quarantine reprocess --token T 1",
            {"command": "quarantine", "action": "reprocess", "token": "T", "ids": [1]},
        ),
        ("quarantine reprocess 1 --all 2", {"ids": [1, 2], "all": True}),
        (
            "simulate coocenter --calls 3 --timezone Asia/Kolkata",
            {"vendor": "coocenter", "calls": 3, "timezone": "Asia/Kolkata"},
        ),
        ("replay --from-seq 5 --sink crm --wait", {"from_seq": 5, "sink": "crm", "wait": True}),
    ],
)
def test_options_and_positionals_go_in_any_order(argv: str, expected: dict[str, Any]) -> None:
    """Flags before, between or after positional arguments parse to the same command."""
    args = vars(cli.parse_args(shlex.split(argv)))
    assert {key: args[key] for key in expected} == expected


@pytest.mark.parametrize(
    "argv",
    ["dlq purge --sink crm 1 --bogus", "dlq purge 1", "nosuchcommand", "simulate nosuchpbx", ""],
)
def test_wrong_command_lines_are_still_usage_errors(argv: str) -> None:
    """Intermixed parsing does not swallow unknown flags, missing options or unknown commands."""
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(shlex.split(argv))
    assert exit_info.value.code == 2


def test_version_is_answered_at_the_top(capsys: pytest.CaptureFixture[str]) -> None:
    """`pbx-bridge --version` still goes through the full parser."""
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    subcommands = cli._subcommands(parser)
    if subcommands is not None:
        for name, child in subcommands.choices.items():
            yield from _leaves(child, (*path, name))


COMMANDS = [path for path, _ in _leaves(cli._parser())]


def _examples(help_text: str) -> list[str]:
    _, _, tail = help_text.partition("\nexamples:\n")
    return [line.strip() for line in tail.splitlines() if line.startswith("  ")]


def _runnable(example: str) -> list[str] | None:
    """An example as argv for the parser: env assignments and pipes dropped; None for a
    placeholder such as ``<command>``."""
    words = shlex.split(example.partition(" | ")[0])
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)
    assert words[0] == "pbx-bridge", example
    if any(word.startswith("<") for word in words):
        return None
    return words[1:]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "pbx-bridge")
def test_every_command_has_a_description_examples_and_defaults(path: tuple[str, ...]) -> None:
    """Each (sub-)subcommand's --help has a description, runnable examples of it, defaults."""
    parser = dict(_leaves(cli._parser()))[path]
    text = parser.format_help()
    assert parser.description, path
    examples = _examples(text)
    assert any(example.startswith(" ".join(("pbx-bridge", *path))) for example in examples)
    for example in examples:
        argv = _runnable(example)
        if argv is not None and "--help" not in argv:
            cli.parse_args(argv)  # a usage error exits the test
    for action in parser._actions:
        shows_default = action.default not in (None, False, [], argparse.SUPPRESS)
        if shows_default and action.dest not in ("help", "version", "token"):
            assert "(default: " in (parser._get_formatter()._get_help_string(action) or ""), (
                path,
                action.dest,
            )


def test_the_environment_gives_url_and_token_and_flags_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PBX_BRIDGE_URL/PBX_BRIDGE_TOKEN fill --url/--token of every client command; flags win."""
    monkeypatch.setenv("PBX_BRIDGE_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("PBX_BRIDGE_TOKEN", "from-the-env")
    for argv in (["tail"], ["sinks"], ["calls"], ["dlq", "list", "--sink", "crm"]):
        args = cli.parse_args(argv)
        assert (args.url, args.token) == ("http://127.0.0.1:9999", "from-the-env"), argv
    args = cli.parse_args(["quarantine", "list", "--url", "http://127.0.0.1:1", "--token", "f"])
    assert (args.url, args.token) == ("http://127.0.0.1:1", "f")
    simulated = cli.parse_args(["simulate", "callog"])
    assert simulated.url == "http://127.0.0.1:9999/ingest/callog"
    assert simulated.token is None  # the ingest token is not the API token
    assert "from-the-env" not in cli._parser().format_help()
    assert all("from-the-env" not in p.format_help() for _, p in _leaves(cli._parser()))


# -- against a running daemon ------------------------------------------------------------------


async def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``python -m bridge ARGV`` as a process (this environment): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def play(daemon: Daemon, calls: int = 1, seed: int = 1) -> None:
    """Fast simulated CooCenter calls, so there are events."""
    report = await coocenter.run(
        url=base_url(daemon) + "/ingest/coocenter",
        calls=calls,
        rate=500,
        seed=seed,
        out=io.StringIO(),
        retransmit_s=0.05,
        duplicate_ratio=0.0,
        webkey=None,
    )
    assert report.failed == 0


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Daemon(daemon_config(tmp_path / "data", api={"tokens": [TOKEN]})) as running:
        yield running


async def test_client_commands_reach_the_bridge_named_in_the_environment(
    secured: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pbx-bridge sinks` with only PBX_BRIDGE_URL/TOKEN set works; a --token flag wins."""
    monkeypatch.setenv("PBX_BRIDGE_URL", base_url(secured))
    monkeypatch.setenv("PBX_BRIDGE_TOKEN", TOKEN)
    code, out, _ = await run_cli(["sinks"])
    assert (code, out) == (0, "no sinks configured\n")
    code, _, err = await run_cli(["sinks", "--token", "not-the-token-at-all"])
    assert code == 1
    assert "401" in err


async def test_quarantine_reprocess_intermixed_prints_its_counts(secured: Daemon) -> None:
    """`quarantine reprocess --token T 1` runs, and says how many were reprocessed."""
    async with aiohttp.ClientSession() as http:
        broken = {"event": "dialbegin", "uniqueid": "1534993030.626", "timestamp": "yesterday"}
        async with http.post(base_url(secured) + "/ingest/coocenter", json=broken) as response:
            entry = (await response.json())["quarantine_id"]
    argv = ["quarantine", "reprocess", "--url", base_url(secured), "--token", TOKEN, str(entry)]
    code, out, _ = await run_cli(argv)
    assert code == 1  # still unreadable: it stays held
    assert out.splitlines()[-1].startswith("0 of 1 entries reprocessed, 1 still held")


def dead_sink(receiver: Receiver) -> dict[str, Any]:
    return {
        "name": "crm",
        "type": "webhook",
        "url": receiver.url,
        "secrets": [SECRET],
        "retry_schedule_s": [0.0],
    }


async def test_dlq_purge_and_retry_intermixed_print_their_counts(tmp_path: Path) -> None:
    """`dlq purge --sink crm N M` and `dlq retry --sink crm N` say how many they touched."""
    rejecting = {"on": True}
    receiver = Receiver(script=lambda event, seen: (400, {}) if rejecting["on"] else (200, {}))
    async with serve(receiver):
        config_ = daemon_config(tmp_path / "data", sinks=[dead_sink(receiver)])
        async with Daemon(config_) as daemon:
            await play(daemon)
            head = daemon.writer.last_seq
            crm = daemon.sinks[0]

            async def all_dead() -> bool:
                return len(await crm.dead_letters()) == head

            await until_true(all_dead, what="every event dead-lettered")
            url = ["--url", base_url(daemon)]
            code, out, _ = await run_cli(["dlq", "purge", "--sink", "crm", "1", "2", *url])
            assert (code, out) == (0, "2 dead letters of crm purged\n")
            rejecting["on"] = False
            code, out, _ = await run_cli(["dlq", "retry", "--sink", "crm", "3", *url])
            assert (code, out) == (
                0,
                "1 dead letters of crm re-driven (they are delivered again)\n",
            )
            await until(lambda: len(receiver.delivered()) == 1, what="the re-driven letter")
            assert receiver.delivered()[0]["seq"] == 3


async def test_replay_wait_reports_progress_until_the_sink_caught_up(tmp_path: Path) -> None:
    """`replay --wait` says how many events, prints the cursor, returns once at the head."""
    async with serve(Receiver()) as receiver:
        sink = {**dead_sink(receiver), "retry_schedule_s": [0.0, 0.05]}
        async with Daemon(daemon_config(tmp_path / "data", sinks=[sink])) as daemon:
            await play(daemon, calls=2)
            head = daemon.writer.last_seq
            await until(lambda: len(receiver.delivered()) == head, what="first delivery")
            out = io.StringIO()
            common = {"url": base_url(daemon), "token": None, "sink": "crm", "out": out}
            code = await opscli.replay(from_seq=2, wait=True, interval_s=0.01, **common)
            assert code == 0
            lines = out.getvalue().splitlines()
            assert lines[0].startswith("crm: replaying ")
            assert f"(from seq 2, head {head})" in lines[0]
            assert lines[-1] == f"crm: caught up with seq {head}"
            assert f"cursor {head}/{head} (100%), lag 0" in lines[-2]
            # Caught up means delivered: every replayed event has arrived a second time.
            assert len(receiver.delivered()) == head + (head - 1)


# -- the banner --------------------------------------------------------------------------------


def test_banner_shows_each_url_on_its_own_line(tmp_path: Path) -> None:
    """Version, status page, events, SSE, readiness, metrics and every ingest URL, one a line."""
    loaded = config.override(config.default(), listen="127.0.0.1:0", data_dir=str(tmp_path))
    lines = [line.split() for line in banner.render(loaded, 8555).splitlines()]
    base = "http://127.0.0.1:8555"
    urls = [word for line in lines for word in line if word.startswith("http")]
    expected = [f"{base}/", f"{base}/v1/events", f"{base}/v1/events/stream", f"{base}/readyz"]
    expected += [f"{base}/metrics"] + [f"{base}/ingest/{s.name}" for s in loaded.sources]
    assert urls[: len(expected)] == expected
    assert all(sum(word.startswith("http") for word in line) <= 1 for line in lines[:-3])
    assert __version__ in lines[0]
    assert ["data", "dir", str(tmp_path.resolve())] in lines


def _next_commands(text: str) -> list[list[str]]:
    _, _, after = text.partition("Next, in other terminals:\n")
    return [shlex.split(line, comments=True) for line in after.splitlines() if line.strip()]


def test_banner_commands_need_no_flags_on_the_default_address(tmp_path: Path) -> None:
    """On 127.0.0.1:8480 the suggested commands are the bare ones the README shows."""
    loaded = config.override(config.default(), listen=None, data_dir=str(tmp_path))
    commands = _next_commands(banner.render(loaded, 8480, command=".venv/bin/pbx-bridge"))
    assert commands == [
        [".venv/bin/pbx-bridge", "tail"],
        [".venv/bin/pbx-bridge", "simulate", "coocenter", "--calls", "5"],
    ]


async def test_banner_commands_work_against_the_running_daemon(tmp_path: Path) -> None:
    """On another port the suggested tail and simulator target it, and the simulator's calls
    are committed (the first open source is used, by its name, in its time zone)."""
    sources = [
        {"name": "locked", "vendor": "coocenter", "auth": {"type": "webkey", "webkey": "k" * 8}},
        {"name": "desk", "vendor": "coral", "timezone": "Asia/Kolkata"},
    ]
    async with Daemon(daemon_config(tmp_path / "data", sources=sources)) as daemon:
        tail_cmd, simulate_cmd = _next_commands(
            banner.render(daemon.config, daemon.port, command="pbx-bridge")
        )
        assert cli.parse_args(tail_cmd[1:]).url == base_url(daemon)
        args = cli.parse_args(simulate_cmd[1:])
        assert (args.vendor, args.url) == ("coral", base_url(daemon) + "/ingest/desk")
        assert args.timezone == "Asia/Kolkata"
        quick = [*simulate_cmd[1:], "--calls", "1", "--rate", "100", "--retransmit-s", "0.05"]
        code, _, _ = await run_cli(quick)
        assert code == 0
        assert daemon.writer.last_seq > 0


def test_banner_asks_for_a_token_when_the_api_needs_one(tmp_path: Path) -> None:
    """With api.tokens the tail command carries PBX_BRIDGE_TOKEN (a placeholder, no secret)."""
    raw = {"api": {"tokens": [TOKEN]}, "storage": {"data_dir": str(tmp_path)}}
    text = banner.render(config.from_dict(raw), 8480, command="pbx-bridge")
    assert "PBX_BRIDGE_TOKEN=<an api token> pbx-bridge tail" in text
    assert TOKEN not in text
    assert "simulate" not in text  # no sources: nothing to play at


def test_banner_reaches_a_wildcard_listener_on_loopback_and_hides_credentials(
    tmp_path: Path,
) -> None:
    """0.0.0.0 is shown as 127.0.0.1; a realtime URL has its own line, without user info."""
    raw = {
        "server": {"listen": "0.0.0.0:8480"},
        "api": {"tokens": [TOKEN]},
        "storage": {"data_dir": str(tmp_path)},
        "sources": [
            {
                "name": "coral",
                "vendor": "coral",
                "allow_ips": ["127.0.0.1/32"],
                "realtime": {"url": "ws://op:hunter2@127.0.0.1:8989/realtime"},
            }
        ],
    }
    lines = banner.render(config.from_dict(raw), 8480, command="pbx-bridge").splitlines()
    assert "http://127.0.0.1:8480/ingest/coral" in lines[7].split()
    assert "ws://***@127.0.0.1:8989/realtime" in lines[8].split()
    assert not any("hunter2" in line or "0.0.0.0" in line for line in lines)


@pytest.mark.parametrize(
    ("fmt", "tty", "shown"),
    [("console", False, True), ("json", True, False), ("auto", False, False), ("auto", True, True)],
)
def test_banner_is_announced_only_to_a_console(
    tmp_path: Path, fmt: str, tty: bool, shown: bool
) -> None:
    """announce() writes to stderr in console mode (forced, or auto on a TTY), never for JSON."""
    raw = {"logging": {"format": fmt}, "storage": {"data_dir": str(tmp_path)}}
    loaded = config.from_dict(raw)
    err = io.StringIO()
    with _log_stream(tty) as stdout:
        banner.announce(loaded, 8480, stdout=stdout, stderr=err)
    assert bool(err.getvalue()) is shown
    if shown:
        assert err.getvalue() == banner.render(loaded, 8480)


@contextlib.contextmanager
def _log_stream(tty: bool) -> Iterator[Any]:
    if not tty:
        yield io.StringIO()
        return
    leader, follower = os.openpty()  # a real terminal
    with open(follower, "w") as stream:
        try:
            yield stream
        finally:
            os.close(leader)


# -- tail, as a real process -------------------------------------------------------------------


async def _tail_process(daemon: Daemon, *extra: str, stdout: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "tail",
        "--url",
        base_url(daemon),
        *extra,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_tail_says_where_it_starts_and_follows_from_there(daemon: Daemon) -> None:
    """Started after some events, tail says "after seq N" (the head) and prints N+1 next."""
    await play(daemon, seed=1)
    head = daemon.writer.last_seq
    proc = await _tail_process(daemon, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            first = (await proc.stderr.readline()).decode()
        assert first == f"following events after seq {head}; waiting...\n"
        await until(lambda: daemon.hub.subscribers > 0, what="tail subscribed")
        await play(daemon, seed=2)
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert _json(line)["seq"] == head + 1
    finally:
        proc.kill()
        await proc.wait()


def _json(line: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(line)
    return decoded


async def test_tail_refused_exits_1_saying_why(secured: Daemon) -> None:
    """A stream the bridge refuses (no token) ends tail with status 1 and the answer."""
    proc = await _tail_process(secured, stdout=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        err = (await proc.stderr.read()).decode()
        code = await proc.wait()
    assert code == 1
    assert err.startswith("error: 401 ")
    assert "following" not in err


def _read_one_line_and_close(fd: int) -> bytes:
    """What `head -1` does: one line, then the pipe's read end is closed."""
    with open(fd, "rb") as reader:
        return reader.readline()


async def test_tail_exits_quietly_when_its_reader_goes(daemon: Daemon) -> None:
    """`pbx-bridge tail | head -1`: once the reader has gone, exit 0, no traceback, no retry."""
    await play(daemon, seed=1)
    read_end, write_end = os.pipe()
    proc = await _tail_process(daemon, "--after", "0", stdout=write_end)
    os.close(write_end)
    try:
        first = await asyncio.to_thread(_read_one_line_and_close, read_end)
        assert _json(first)["seq"] == 1
        await play(daemon, seed=2)  # more output for a reader that is gone
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            err = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert err == "following events after seq 0; waiting...\n"


# -- simulate coral-realtime -------------------------------------------------------------------


async def _realtime(out: io.StringIO, err: io.StringIO, idle_warn_s: float) -> asyncio.Task[None]:
    return asyncio.create_task(
        coral_realtime.serve_forever(
            host="127.0.0.1",
            port=0,
            calls=1,
            rate=200.0,
            group="778",
            drop_every_s=None,
            seed=1,
            idle_warn_s=idle_warn_s,
            out=out,
            err=err,
        )
    )


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_realtime_simulator_says_when_nobody_connects() -> None:
    """Nobody subscribing within idle_warn_s is said on stderr, naming the URL to configure."""
    out, err = io.StringIO(), io.StringIO()
    task = await _realtime(out, err, idle_warn_s=0.05)
    try:
        await until(lambda: "nobody has subscribed" in err.getvalue(), what="the warning")
    finally:
        await _stopped(task)
    url = out.getvalue().split()[2]
    assert url.startswith("ws://127.0.0.1:")
    assert url.endswith("/realtime")
    assert url in err.getvalue()


async def test_realtime_simulators_config_snippet_makes_a_bridge_subscribe(
    tmp_path: Path,
) -> None:
    """The printed config, as it is, makes a bridge connect and commit the played calls."""
    out, err = io.StringIO(), io.StringIO()
    task = await _realtime(out, err, idle_warn_s=60.0)
    try:
        await until(lambda: "[sources.realtime]" in out.getvalue(), what="the snippet")
        indented = [line[4:] for line in out.getvalue().splitlines() if line.startswith("    ")]
        snippet = "\n".join(line for line in indented if " run --config " not in line)
        sources = tomllib.loads(snippet)["sources"]
        async with Daemon(daemon_config(tmp_path / "data", sources=sources)) as daemon:
            await until(lambda: "a subscriber connected" in out.getvalue(), what="subscriber")
            await until(lambda: daemon.writer.last_seq > 0, what="committed channel states")
    finally:
        await _stopped(task)
    assert "nobody" not in err.getvalue()
