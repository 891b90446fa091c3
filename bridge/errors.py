"""The bridge's one error tree.

::

    BridgeError
    ├── ConfigError          a config file or flag is wrong (names the key path)
    ├── PayloadError         a vendor payload cannot be read or mapped (names the field)
    │   └── UnsupportedMediaError   the body is not in the shape the vendor sends
    ├── AuthError            a request did not authenticate (nothing is stored)
    ├── TransportError       a request to a receiver got no response (refused, reset, TLS)
    ├── OutboxError          the outbox could not commit (the vendor will retry)
    │   ├── OverloadedError  too many events are waiting for the writer
    │   └── QuarantineFullError   a source's quarantine is at its cap: nothing new is kept
    └── CommandError         a command to a PBX did not succeed
        ├── CommandInvalid   the command is wrong: unknown source or action, a bad argument
        ├── CommandRefused   the PBX said no (bad key, unknown extension, busy): its message
        │   └── SessionExpired   the PBX's login expired: log in again once and resend
        ├── CommandNotSent   the PBX could not be reached: nothing was sent, safe to retry
        └── CommandUnknown   sent, but no answer in time: it may have happened; never re-sent
"""

from __future__ import annotations

from collections.abc import Sequence


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A config value is missing or wrong: one problem, or every problem of a file.

    ``path`` and ``problem`` are the first (often the only) one; ``path`` is the dotted key path
    with list indexes (``sources[1].auth.type``), stable for programs. ``problems`` holds every
    one as ``(where, problem)``: ``where`` is the key path as shown to people, a ``[[sources]]``
    or ``[[sinks]]`` entry also by its name (``sources[1] (office).auth.type``). ``str()`` is
    one ``where: problem`` line per problem.
    """

    def __init__(
        self, path: str, problem: str, *, problems: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.path = path
        self.problem = problem
        self.problems: list[tuple[str, str]] = list(problems) or [(path, problem)]
        super().__init__(
            "\n".join(f"{where}: {text}" if where else text for where, text in self.problems)
        )


class PayloadError(BridgeError):
    """A vendor payload is malformed; ``field`` names what was wrong (``""`` for the whole body)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class UnsupportedMediaError(PayloadError):
    """The body is not in the content type the vendor sends."""


class AuthError(BridgeError):
    """A request failed its source's authentication.

    ``challenges`` are the ``WWW-Authenticate`` values to answer with (one header each).
    """

    def __init__(self, reason: str, challenges: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.challenges = challenges


class TransportError(BridgeError):
    """A request to a receiver failed before any response arrived; worth retrying."""


class OutboxError(BridgeError):
    """The outbox could not commit; the request must not be acknowledged."""


class OverloadedError(OutboxError):
    """The writer's queue is full; answer 503 so the vendor retries later."""


class QuarantineFullError(OutboxError):
    """A source's quarantine is at its cap: the refused payload was not kept (answer 503).

    The numbers are the source's held entries and their body bytes, and the caps they reached.
    """

    def __init__(
        self, *, source: str, held_entries: int, held_bytes: int, max_entries: int, max_bytes: int
    ) -> None:
        super().__init__(
            f"source {source!r} holds {held_entries} entries / {held_bytes} bytes in quarantine"
            f" (cap {max_entries} entries / {max_bytes} bytes): nothing new is kept until"
            " entries are reprocessed or the cap is raised"
        )
        self.source = source
        self.held_entries = held_entries
        self.held_bytes = held_bytes
        self.max_entries = max_entries
        self.max_bytes = max_bytes


class CommandError(BridgeError):
    """A command to a PBX did not succeed; ``code`` is stable for programs."""

    code = "command_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CommandInvalid(CommandError):
    """The command cannot be sent: ``field`` names what is wrong (``""`` for the whole body);
    ``supported`` lists what the source can do, when the action was the problem."""

    code = "invalid_command"

    def __init__(self, field: str, problem: str, *, supported: Sequence[str] = ()) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self.supported = tuple(supported)


class CommandRefused(CommandError):
    """The PBX answered and refused: ``vendor_code`` and ``message`` are the vendor's own."""

    code = "refused"

    def __init__(self, message: str, *, vendor_code: str | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.vendor_code = vendor_code
        self.status = status


class SessionExpired(CommandRefused):
    """The PBX refused the login token (an HTTP 401, or its own code for it)."""

    code = "session_expired"


class CommandNotSent(CommandError):
    """No request reached the PBX (connection refused, name not found, connect timeout)."""

    code = "not_sent"


class CommandUnknown(CommandError):
    """The request was sent but no answer came in time: the PBX may have carried it out."""

    code = "unknown"
