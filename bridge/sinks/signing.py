"""Standard Webhooks signing (https://www.standardwebhooks.com/, spec version 1.0.0).

The spec's symmetric scheme: ``webhook-signature`` is a space-delimited list of
``v1,<base64 HMAC-SHA256>`` over ``{msg_id}.{timestamp}.{body}``; a list so that, during a
secret rotation, the sender signs with the old and the new secret at once and the receiver
accepts whichever it knows ("Webhook headers").

Secrets are written the spec's way, ``whsec_<base64>`` ("Secret serialization"). Like the
reference libraries (``standardwebhooks`` for Python, JavaScript, Go), the prefix is optional
and the rest is always base64: the same string configured on the bridge and on the receiver
then yields the same key. A string that is not base64 is refused rather than used as UTF-8
bytes, because a receiver using a reference library would decode it differently and refuse
every delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

PREFIX: Final = "whsec_"
# Spec, "Signature scheme" table: "Random. At least 24 bytes".
MIN_KEY_BYTES: Final = 24

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Spec: the id must not contain "." (it delimits the signed content); and it is sent as a
# header value, so no whitespace or control characters either.
_BAD_ID = re.compile(r"[.\s\x00-\x1f\x7f]")


def _check_key(key: bytes) -> bytes:
    if not key:
        raise ValueError("webhook secret is empty")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"webhook secret is {len(key)} bytes; Standard Webhooks requires at least "
            f"{MIN_KEY_BYTES} random bytes (e.g. 'whsec_' + base64 of 32 random bytes)"
        )
    return key


def parse_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional).

    Raises ``ValueError`` naming the problem: empty, not base64, or shorter than 24 bytes.
    """
    encoded = text.strip()
    if encoded.startswith(PREFIX):
        encoded = encoded[len(PREFIX) :]
    if not encoded:
        raise ValueError("webhook secret is empty")
    if not _BASE64.fullmatch(encoded):
        raise ValueError(
            "webhook secret is not base64 (expected 'whsec_' followed by standard base64)"
        )
    # Accept unpadded base64 as the reference Python library does.
    bare = encoded.rstrip("=")
    padded = bare + "=" * (-len(bare) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"webhook secret is not valid base64: {exc}") from None
    return _check_key(key)


@dataclass(frozen=True, slots=True)
class Secret:
    """A signing key; its ``repr`` never shows the key."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_key(self.key)

    @classmethod
    def parse(cls, text: str) -> Secret:
        """A secret from its ``whsec_<base64>`` form; see :func:`parse_secret`."""
        return cls(parse_secret(text))


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    if not msg_id or _BAD_ID.search(msg_id):
        raise ValueError(f"webhook id {msg_id!r} must be non-empty, without '.' or whitespace")
    if timestamp < 0:
        raise ValueError(f"webhook timestamp {timestamp} is negative")
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(*, secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-delimited."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    content = _signed_content(msg_id, timestamp, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_check_key(key), content, hashlib.sha256)).decode()
        for key in secrets
    )


def headers(
    *, secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    ``msg_id`` stays the same across retries (the receiver's idempotency key); ``timestamp``
    is the attempt's time in Unix seconds, so every retry is signed afresh.
    """
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets=secrets, msg_id=msg_id, timestamp=timestamp, body=body),
    }
