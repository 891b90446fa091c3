"""A sans-I/O STOMP 1.2 codec: bytes in, frames out; frames in, bytes to send.

No sockets, no ``await``: the client feeds what it read to a :class:`Decoder` and writes
what :func:`encode` returns. Section names below are those of the STOMP 1.2 specification.

stomp.py supplies the parts it gets right: ``convert_frame`` lays out the wire bytes (it
neither escapes headers nor is order-preserving: it sorts header names, which keeps
repeated values of one name in order, so "first wins" still holds) and
``calculate_heartbeats`` does the "Heart-beating" arithmetic. Its ``parse_frame`` is not
used: it takes one already-split frame, and silently drops header lines without a colon,
keeps undefined escapes such as ``\\t``, un-escapes CONNECTED too, keeps only the first of
repeated headers, replaces invalid UTF-8, and leaves a ``\\r`` on the last header when CRLF
lines end in a bare-LF blank line. The decoder below splits the stream and parses strictly.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from typing import Final

# Importing stomp.utils otherwise resolves this host's name (a DNS lookup that can block
# start-up for seconds); the codec never needs stomp.py's list of local host names.
os.environ.setdefault("STOMP_SKIP_HOSTNAME_SCAN", "1")
import stomp.utils  # type: ignore[import-untyped]

from bridge.errors import BridgeError

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_BYTES",
    "Decoder",
    "Frame",
    "Heartbeat",
    "StompProtocolError",
    "connect",
    "disconnect",
    "encode",
    "negotiate",
    "subscribe",
]

# "Augmented BNF": client-command | server-command.
_COMMANDS: Final = frozenset(
    {"SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT", "ABORT", "ACK", "NACK"}
    | {"DISCONNECT", "CONNECT", "STOMP", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}
)
# "Value Encoding": these two stay unescaped for STOMP 1.0 compatibility.
_UNESCAPED: Final = frozenset({"CONNECT", "CONNECTED"})
_ESCAPES: Final = {ord("\\"): "\\\\", ord("\r"): "\\r", ord("\n"): "\\n", ord(":"): "\\c"}
_UNESCAPES: Final = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}
_ESCAPE_RE: Final = re.compile(r"\\(.?)", re.DOTALL)
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_HEART_BEAT_RE: Final = re.compile(r"([0-9]+),([0-9]+)")
_ACK_MODES: Final = frozenset({"auto", "client", "client-individual"})

HEARTBEAT_BYTES: Final = b"\n"


class StompProtocolError(BridgeError):
    """The peer sent bytes that are not STOMP 1.2; the connection must be closed."""


class Heartbeat(enum.Enum):
    """The type of :data:`HEARTBEAT`."""

    BEAT = "heartbeat"


HEARTBEAT: Final = Heartbeat.BEAT
"""Yielded by :meth:`Decoder.feed` for each bare EOL the peer sent between frames."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame; ``headers`` keep wire order and repeats, un-escaped."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name``; of repeated entries the first wins ("Repeated Header Entries")."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        try:
            return _UNESCAPES[match.group(1)]
        except KeyError:
            # "Value Encoding": undefined escape sequences MUST be a fatal protocol error.
            raise StompProtocolError(f"undefined escape {match.group(0)!r} in a header") from None

    return _ESCAPE_RE.sub(one, text) if "\\" in text else text


def _parse_head(head: bytes) -> tuple[str, tuple[tuple[str, str], ...], int | None]:
    """Command, headers and content-length from the bytes before the blank line."""
    try:
        text = head.decode("utf-8")  # "Value Encoding": commands and headers are UTF-8
    except UnicodeDecodeError as exc:
        raise StompProtocolError("frame headers are not UTF-8") from exc
    # "STOMP Frames": EOL is an optional CR then LF.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    command = lines[0]
    if command not in _COMMANDS:
        raise StompProtocolError(f"not a STOMP command: {command[:40]!r}")
    escaped = command not in _UNESCAPED
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # "Augmented BNF": header-name is 1*OCTET and no header octet is a bare CR.
        if not colon or not name or "\r" in line:
            raise StompProtocolError(f"malformed header line {line[:40]!r}")
        headers.append((_unescape(name), _unescape(value)) if escaped else (name, value))
    frame = Frame(command, tuple(headers))
    length = frame.header("content-length")
    if length is None:
        return command, frame.headers, None
    if not _DIGITS_RE.fullmatch(length):
        raise StompProtocolError(f"invalid content-length {length[:40]!r}")
    return command, frame.headers, int(length)


class Decoder:
    """Splits a byte stream into frames and heart-beats ("STOMP Frames", "Heart-beating").

    After a :class:`StompProtocolError` the stream is lost: close the connection.
    """

    def __init__(self, *, max_frame_bytes: int = 1 << 20) -> None:
        self._max = max_frame_bytes
        self._buf = bytearray()
        self._scan = 0  # where the search for the current frame's next delimiter resumes
        self._head: tuple[str, tuple[tuple[str, str], ...], int | None] | None = None
        self._body_at = 0

    def feed(self, data: bytes | str) -> list[Frame | Heartbeat]:
        """The frames and heart-beats that ``data`` completes, in order (str is sent as UTF-8)."""
        self._buf += data.encode("utf-8") if isinstance(data, str) else data
        out: list[Frame | Heartbeat] = []
        pos = 0
        while (step := self._next(pos)) is not None:
            item, pos = step
            out.append(item)
        # Compact once per chunk, not per frame: many small frames in one chunk stay linear.
        del self._buf[:pos]
        self._scan = max(self._scan - pos, 0)
        self._body_at -= pos
        return out

    def _too_big(self, size: int) -> None:
        # "Size Limits": implementations may bound frames to guard their memory.
        if size > self._max:
            raise StompProtocolError(f"frame exceeds {self._max} bytes")

    def _next(self, pos: int) -> tuple[Frame | Heartbeat, int] | None:
        """The next item starting at ``pos`` and the position after it, or None: need more."""
        buf = self._buf
        if self._head is None:
            # "Heart-beating": a bare EOL; the "Augmented BNF" also lets EOLs follow a NULL.
            if buf[pos : pos + 1] == b"\n":
                return HEARTBEAT, pos + 1
            if buf[pos : pos + 2] == b"\r\n":
                return HEARTBEAT, pos + 2
            # "STOMP Frames": a blank line ends the headers: LF then [CR] LF. (A lone CR here
            # just waits: next time it is a CRLF heart-beat or the start of a bad command.)
            start = end = max(self._scan, pos)
            # Walk the LFs of this frame only: a search for "\n\r\n" over the whole buffer
            # would cost the rest of a many-frame chunk for every frame in it.
            while (end := buf.find(b"\n", end)) >= 0:
                if buf.startswith(b"\n", end + 1) or buf.startswith(b"\r\n", end + 1):
                    break
                end += 1
            if buf.find(b"\0", start, len(buf) if end < 0 else end) >= 0:
                raise StompProtocolError("frame ended before its blank line")
            if end < 0:
                self._scan = max(len(buf) - 2, pos)  # a delimiter may straddle chunks
                self._too_big(len(buf) - pos + 1)  # it needs at least a NULL more
                return None
            self._body_at = end + (2 if buf[end + 1] == 0x0A else 3)
            self._too_big(self._body_at - pos + 1)
            self._head = _parse_head(bytes(buf[pos:end]))
            self._scan = self._body_at
        command, headers, length = self._head
        if length is not None:
            # "Header content-length": read exactly that many octets, NULs included, then NULL.
            nul = self._body_at + length
            self._too_big(nul + 1 - pos)
            if len(buf) <= nul:
                return None
            if buf[nul] != 0:
                raise StompProtocolError("body is not followed by NULL after content-length")
        else:
            nul = buf.find(b"\0", self._scan)
            if nul < 0:
                self._scan = len(buf)
                self._too_big(len(buf) - pos + 1)
                return None
            self._too_big(nul + 1 - pos)
        frame = Frame(command, headers, bytes(buf[self._body_at : nul]))
        self._head = None
        self._scan = nul + 1
        return frame, nul + 1


def encode(frame: Frame) -> bytes:
    """The wire bytes of ``frame``, ending in NULL.

    Headers are escaped except in CONNECT and CONNECTED ("Value Encoding"). A non-empty
    body always gets a computed ``content-length`` (any given one is replaced): the spec
    says SHOULD, and MUST when the body holds a NULL ("Header content-length").
    """
    if frame.command not in _COMMANDS:
        raise ValueError(f"not a STOMP command: {frame.command!r}")
    escaped = frame.command not in _UNESCAPED
    grouped: dict[str, list[str]] = {}
    for name, value in frame.headers:
        if name == "content-length":
            continue
        # A NULL would end the frame early; unescaped frames cannot carry EOLs, nor a colon in
        # a name, and "Augmented BNF" wants a name of at least one octet.
        text = name + value
        text.encode("utf-8")  # a lone surrogate raises (a ValueError), not becomes "?"
        if (
            not name
            or "\0" in text
            or (not escaped and (":" in name or "\r" in text or "\n" in text))
        ):
            raise ValueError(f"header {name!r} cannot be sent in a {frame.command} frame")
        key = name.translate(_ESCAPES) if escaped else name
        grouped.setdefault(key, []).append(value.translate(_ESCAPES) if escaped else value)
    headers: dict[str, object] = {key: tuple(values) for key, values in grouped.items()}
    if frame.body:
        headers["content-length"] = ""  # convert_frame fills in len(body)
    lines: list[bytes] = stomp.utils.convert_frame(
        stomp.utils.Frame(frame.command, headers, frame.body)
    )
    return b"".join(lines)


def connect(
    *,
    host: str,
    login: str | None,
    passcode: str | None,
    heartbeat: tuple[int, int],
    accept_version: str = "1.2",
) -> Frame:
    """A CONNECT frame ("CONNECT or STOMP Frame"); ``heartbeat`` is (cx, cy) in ms, 0 = off."""
    if min(heartbeat) < 0:
        raise ValueError(f"heart-beat values must be >= 0, not {heartbeat}")
    headers = [("accept-version", accept_version), ("host", host)]
    if login is not None:
        headers.append(("login", login))
    if passcode is not None:
        headers.append(("passcode", passcode))
    headers.append(("heart-beat", f"{heartbeat[0]},{heartbeat[1]}"))
    return Frame("CONNECT", tuple(headers))


def subscribe(*, id: str, destination: str, ack: str = "auto") -> Frame:
    """A SUBSCRIBE frame ("SUBSCRIBE"); ``ack`` is auto, client or client-individual."""
    if ack not in _ACK_MODES:
        raise ValueError(f"ack must be one of {sorted(_ACK_MODES)}, not {ack!r}")
    return Frame("SUBSCRIBE", (("id", id), ("destination", destination), ("ack", ack)))


def disconnect(*, receipt: str | None = None) -> Frame:
    """A DISCONNECT frame, asking for a RECEIPT when ``receipt`` is given ("DISCONNECT")."""
    return Frame("DISCONNECT", () if receipt is None else (("receipt", receipt),))


def negotiate(client: tuple[int, int], server_heart_beat: str | None) -> tuple[int, int]:
    """(send_every_ms, expect_every_ms), 0 = off, from our (cx, cy) and CONNECTED's header.

    "Heart-beating": a missing header counts as ``0,0``; we send every MAX(cx, sy) unless
    either is 0, and expect the server's every MAX(sx, cy) unless either is 0.
    """
    match = _HEART_BEAT_RE.fullmatch("0,0" if server_heart_beat is None else server_heart_beat)
    if match is None:
        raise StompProtocolError(f"invalid heart-beat header {server_heart_beat!r}")
    # stomp.py compares the server's numbers with the string "0", so "00" would count as
    # non-zero there: hand it canonical digits.
    server = (str(int(match.group(1))), str(int(match.group(2))))
    send_ms, expect_ms = stomp.utils.calculate_heartbeats(server, client)
    return int(send_ms), int(expect_ms)
