"""A private RabbitMQ node with STOMP and Web-STOMP on loopback, for interop tests.

The broker is a real third-party STOMP implementation: tests connect the bridge to its
Web-STOMP endpoint and publish with stomp.py over plain TCP, so neither end of the wire is
code we wrote. Everything the node owns lives under one temporary directory: node name,
cookie, config, enabled-plugins file, data, logs, and its own epmd on a private port; nothing
touches the system-wide ``rabbitmq-server`` service, /etc/rabbitmq or /var/lib/rabbitmq.

Usage: register the session fixture (``from tests.rabbit import rabbit`` in conftest) and
take ``rabbit: Rabbit`` in a test. ``.ci/run`` installs the Debian ``rabbitmq-server``
package; without it the fixture fails (it never skips, so CI cannot go green by accident).
"""

from __future__ import annotations

import os

# stomp.py resolves the machine's hostname at import time unless this is set; set it before
# anything can import stomp so a host with slow or broken name resolution can't stall tests.
os.environ.setdefault("STOMP_SKIP_HOSTNAME_SCAN", "1")

import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio

# The Debian package's /usr/sbin wrappers `su` to the rabbitmq user and `cd /var/lib/rabbitmq`,
# which would swap our HOME (and so the Erlang cookie) for the system one. The real scripts
# live here and run fine as root or as any user with our private directories.
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
INSTALL_HINT = (
    "RabbitMQ is not installed ({what} missing). The interop tests need the Debian package "
    "`rabbitmq-server` (which also brings Erlang and epmd); `.ci/run` installs it — run "
    "`bash .ci/run`, or `apt-get update && apt-get install -y rabbitmq-server`."
)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, all held open until chosen so none repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def _port_accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class RabbitError(RuntimeError):
    pass


class Rabbit:
    """One private RabbitMQ node. Not loop-bound: any event loop may call its methods."""

    # stomp.py and websocket clients log in as guest, which RabbitMQ allows from loopback only.
    login = "guest"
    passcode = "guest"
    ws_path = "/ws"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.node = f"pbxtest-{secrets.token_hex(4)}@localhost"
        self.stomp_port, self.ws_port, self.dist_port, self.epmd_port = _free_ports(4)
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}{self.ws_path}"

    @property
    def server_log(self) -> Path:
        """The node's stdout/stderr (boot banner and crashes before its own logger is up)."""
        return self.base_dir / "server.out"

    @property
    def node_log(self) -> Path:
        return self.base_dir / "log" / f"{self.node}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # Drop inherited RABBITMQ_*/ERL_* settings: a developer's shell pointing at another
        # node must not leak into ours.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        b = self.base_dir
        # Erlang distribution (used by rabbitmqctl) binds 0.0.0.0 unless told otherwise.
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            {
                "HOME": str(b / "home"),  # where erl and rabbitmqctl find .erlang.cookie
                "RABBITMQ_NODENAME": self.node,
                # An empty env file, so /etc/rabbitmq/rabbitmq-env.conf is not sourced.
                "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
                "RABBITMQ_LOG_BASE": str(b / "log"),
                "RABBITMQ_PID_FILE": str(b / "rabbit.pid"),
                # Defaults are AMQP port + 20000 = 25672, which a system node would hold.
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback_dist,
                "RABBITMQ_CTL_ERL_ARGS": loopback_dist,
            }
        )
        return env

    def _write_files(self) -> None:
        b = self.base_dir
        (b / "home").mkdir(parents=True, exist_ok=True)
        (b / "mnesia").mkdir(exist_ok=True)
        (b / "log").mkdir(exist_ok=True)
        cookie = b / "home" / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        # Erlang refuses a cookie file that anyone but its owner can read.
        cookie.chmod(0o400)
        (b / "rabbitmq-env.conf").write_text("")
        # The plugins' own dependencies (web_dispatch, cowboy, ...) are started implicitly.
        (b / "enabled_plugins").write_text("[rabbitmq_stomp,rabbitmq_web_stomp].\n")
        (b / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    # No AMQP listener: tests speak STOMP only, and it is one less port.
                    "listeners.tcp = none",
                    f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}",
                    "web_stomp.tcp.ip = 127.0.0.1",
                    f"web_stomp.tcp.port = {self.ws_port}",
                    # The plugin's default path; pinned so ws_url can't drift from it.
                    f"web_stomp.ws_path = {self.ws_path}",
                    "",
                ]
            )
        )

    def _tail(self, path: Path, lines: int = 30) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"({path} not written)"
        return f"--- {path} ---\n" + "\n".join(text.splitlines()[-lines:])

    def _diagnostics(self) -> str:
        return self._tail(self.server_log) + "\n" + self._tail(self.node_log)

    def _spawn(self, epmd: str, server: Path) -> None:
        """Fork epmd and the node.

        Plain Popen rather than asyncio's subprocesses: these outlive any one event loop (the
        fixture's loop starts them, a test's loop may restart or stop them), and Popen objects
        belong to no loop. Forking doesn't block in any way that matters.
        """
        env = self._env()
        # Our own epmd, as a child we can reap: the one erl would otherwise start is a daemon
        # that outlives the tests, and the shared one on 4369 listens on every interface.
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.server_log.open("wb") as out:
            # A file, not a pipe: nobody has to drain it, and a stuck reader can't block the node.
            # Own session so stop() can kill the whole tree (sh wrapper, beam, its helpers).
            self._server = subprocess.Popen(
                [str(server)],
                env=env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout_s: float = 60.0) -> None:
        """Boot the node; returns once STOMP and Web-STOMP accept and boot has completed.

        Ports and node name are fixed at construction, so stop() then start() brings the
        broker back (with its data) on the same URLs.
        """
        server = RABBIT_BIN / "rabbitmq-server"
        if not server.exists():
            raise RabbitError(INSTALL_HINT.format(what=server))
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RabbitError(INSTALL_HINT.format(what="epmd"))
        self._write_files()
        t0 = time.monotonic()
        self._spawn(epmd, server)
        try:
            async with asyncio.timeout(timeout_s):
                await self._await_listeners()
                await self._ctl("await_startup")
        except BaseException as exc:
            diag = self._diagnostics()
            await self.stop()
            if isinstance(exc, TimeoutError):
                raise RabbitError(f"RabbitMQ did not start within {timeout_s}s\n{diag}") from exc
            if isinstance(exc, RabbitError):
                raise RabbitError(f"{exc}\n{diag}") from exc
            raise
        self.startup_seconds = time.monotonic() - t0

    async def _await_listeners(self) -> None:
        # Polling the sockets is the readiness signal the tests care about; the interval only
        # bounds how often we look, it doesn't stand in for the condition.
        while True:
            if self._server is not None and self._server.poll() is not None:
                raise RabbitError(f"rabbitmq-server exited with {self._server.returncode}")
            if await _port_accepts(self.stomp_port) and await _port_accepts(self.ws_port):
                return
            await asyncio.sleep(0.05)

    async def _ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """``rabbitmqctl -n NODE ARGS``; raises RabbitError on a non-zero exit."""
        proc = await asyncio.create_subprocess_exec(
            str(RABBIT_BIN / "rabbitmqctl"),
            "-n",
            self.node,
            *args,
            env=self._env(),
            cwd=self.base_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout_s):
                out, _ = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} exited {proc.returncode}: {text}")
        return text

    async def restart(self, timeout_s: float = 60.0) -> None:
        """Stop and start the broker application inside the running VM.

        Every STOMP and Web-STOMP connection is dropped, the listeners close, and they reopen
        on the same ports, so clients can reconnect to the same URL. Returns when both accept
        again.
        """
        async with asyncio.timeout(timeout_s):
            await self._ctl("stop_app")
            await self._ctl("start_app")
            await self._await_listeners()
            await self._ctl("await_startup")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the node down (SIGTERM: the wrapper script runs a clean broker stop)."""
        server, self._server = self._server, None
        epmd, self._epmd = self._epmd, None
        # The server first: epmd must outlive the node's deregistration.
        for proc in (server, epmd):
            if proc is None or proc.poll() is not None:
                continue
            # Only the leader (the sh wrapper, or epmd): the wrapper's TERM trap stops the broker
            # cleanly; signalling beam alongside it would race that.
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)

    # -- publishing with a client we did not write ----------------------------------------

    def publish(
        self,
        destination: str,
        body: str | bytes,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Send one message with stomp.py over TCP; returns once the broker has receipted it.

        Blocking (stomp.py is thread-based); from async code use ``apublish``.
        """
        import stomp  # deferred so the hostname-scan switch above is set first

        receipts: set[str] = set()
        errors: list[str] = []
        cond = threading.Condition()

        class Listener(stomp.ConnectionListener):
            def on_receipt(self, frame: stomp.utils.Frame) -> None:
                with cond:
                    receipts.add(frame.headers.get("receipt-id", ""))
                    cond.notify_all()

            def on_error(self, frame: stomp.utils.Frame) -> None:
                with cond:
                    errors.append(f"{frame.headers} {frame.body!r}")
                    cond.notify_all()

        def wait_for(receipt: str) -> None:
            with cond:
                if not cond.wait_for(lambda: receipt in receipts or errors, timeout_s):
                    raise RabbitError(f"no receipt {receipt} from broker within {timeout_s}s")
                if errors:
                    raise RabbitError(f"broker sent ERROR: {errors}")

        # vhost="/": stomp.py otherwise sends host:127.0.0.1, which RabbitMQ reads as a vhost.
        conn = stomp.Connection12(
            [("127.0.0.1", self.stomp_port)], vhost="/", timeout=timeout_s, auto_decode=False
        )
        conn.set_listener("publish", Listener())
        conn.connect(self.login, self.passcode, wait=True, headers={"heart-beat": "0,0"})
        try:
            receipt = secrets.token_hex(8)
            conn.send(destination, body, headers={**(headers or {}), "receipt": receipt})
            wait_for(receipt)
        finally:
            # With an explicit receipt stomp.py waits for it and joins its reader thread.
            conn.disconnect(receipt=secrets.token_hex(8))

    async def apublish(
        self,
        destination: str,
        body: str | bytes,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        await asyncio.to_thread(self.publish, destination, body, headers, timeout_s)


async def start_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Rabbit:
    """A started node in a new temporary directory; the caller stops it.

    The ports are picked free before the node binds them, so another process can take one in
    between; that race (and only that) is worth one retry with fresh ports.
    """
    for attempt in (1, 2):
        node = Rabbit(tmp_path_factory.mktemp("rabbitmq"))
        try:
            await node.start()
        except RabbitError as exc:
            if attempt == 1 and "eaddrinuse" in str(exc):
                continue
            raise
        return node
    raise AssertionError("unreachable")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def rabbit(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rabbit]:
    """A started private RabbitMQ, shared by the whole session (booting one takes seconds)."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail(INSTALL_HINT.format(what=RABBIT_BIN / "rabbitmq-server"), pytrace=False)
    try:
        node = await start_rabbit(tmp_path_factory)
    except RabbitError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield node
    finally:
        await node.stop()
