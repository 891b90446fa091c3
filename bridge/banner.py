"""The few lines a person sees when the daemon starts on a terminal: where to look, what to try.

Under systemd or any JSON log stream the structured ``listening`` line says the same to
machines; the banner is only for a console.
"""

from __future__ import annotations

import ipaddress
import shlex
import sys
from pathlib import Path
from typing import TextIO

from bridge import __version__, redact
from bridge.config import AuthNone, Config, LoggingConfig, SourceConfig

DEFAULT_URL = "http://127.0.0.1:8480"  # what the client commands assume without --url
# The vendors `pbx-bridge simulate <vendor>` can play over HTTP.
SIMULATED_VENDORS = ("coocenter", "coral", "oncall", "callog")


def render(config: Config, port: int, *, command: str | None = None) -> str:
    """The banner text: version, URLs (one a line), data directory, two commands to try next.

    ``command`` is how to invoke the CLI (default: however this process was started).
    """
    base = base_url(config.server.host, port)
    program = command if command is not None else command_name()
    lines = [
        f"pbx-bridge {__version__} is running",
        "",
        f"  status page   {base}/",
        f"  events        {base}/v1/events",
        f"  live (SSE)    {base}/v1/events/stream",
        f"  readiness     {base}/readyz",
        f"  metrics       {base}/metrics",
    ]
    label = "  ingest        "
    for source in config.sources:
        lines.append(f"{label}{base}/ingest/{source.name}   ({source.vendor})")
        label = " " * len(label)
        if source.realtime is not None:
            lines.append(f"{label}{redact.url(source.realtime.url)}   ({source.name}, realtime)")
    if not config.sources:
        lines.append(f"{label}(no sources configured)")
    lines.append(f"  data dir      {Path(config.storage.data_dir).resolve()}")
    lines.append("")
    lines.append("Next, in other terminals:")
    url_flag = [] if base == DEFAULT_URL else ["--url", base]
    token = "PBX_BRIDGE_TOKEN=<an api token> " if config.api.tokens else ""
    lines.append(f"  {token}{program} tail {_join(url_flag)}".rstrip() + "   # follow the events")
    simulate = _simulate_args(config, base)
    if simulate is not None:
        lines.append(f"  {program} {_join(simulate)}   # play a few calls at the bridge")
    return "\n".join(lines) + "\n"


def announce(
    config: Config, port: int, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> None:
    """Write the banner to stderr when the logs are for a person (console mode), else nothing.

    ``stdout`` is the stream the logs go to (bridge.logs writes them to stdout).
    """
    if not console_logging(config.logging, stdout if stdout is not None else sys.stdout):
        return
    out = stderr if stderr is not None else sys.stderr
    out.write(render(config, port))
    out.flush()


def console_logging(config: LoggingConfig, stream: TextIO) -> bool:
    """The rule bridge.logs.setup applies: console when asked, or on a TTY under ``auto``."""
    if config.format == "console":
        return True
    return config.format == "auto" and stream.isatty()


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: a wildcard listener is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def command_name() -> str:
    """How the user runs the CLI: the script this process was started as, else ``pbx-bridge``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    script: Path | None = None
    if argv0 is not None and argv0.name == "pbx-bridge":
        script = argv0
    else:  # python -m bridge: the entry point installed beside this interpreter, if any
        beside = Path(sys.executable).parent / "pbx-bridge"
        script = beside if beside.exists() else None
    if script is None:
        return "pbx-bridge"
    if "/" not in str(script):
        return str(script)  # found on PATH
    absolute = script.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return str(absolute)
    return str(relative)


def _simulate_args(config: Config, base: str) -> list[str] | None:
    """A simulator command that this config accepts: the first source it can play unaided."""
    for source in config.sources:
        if source.vendor in SIMULATED_VENDORS and _open(source):
            args = ["simulate", source.vendor, "--calls", "5"]
            if source.name != source.vendor or base != DEFAULT_URL:
                args += ["--url", f"{base}/ingest/{source.name}"]
            if source.timezone != "UTC" and source.vendor != "oncall":
                args += ["--timezone", source.timezone]
            return args
    return None


def _open(source: SourceConfig) -> bool:
    """No credentials to type, and loopback may push (the simulators only talk to loopback)."""
    if not isinstance(source.auth, AuthNone):
        return False
    if not source.allow_ips:
        return True
    loopback = ipaddress.ip_address("127.0.0.1")
    return any(loopback in network for network in source.networks)


def _join(args: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in args)
