"""Standard Webhooks signing, checked by a verifier we did not write (``standardwebhooks``)."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bridge.sinks.signing import Secret, headers, parse_secret, sign

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()
BODY = b'{"specversion":"1.0","id":"5b1f2c4e-0000-5000-8000-000000000001","type":"call.ringing"}'
MSG_ID = "5b1f2c4e-0000-5000-8000-000000000001"


def signed(*secrets: str, body: bytes = BODY, msg_id: str = MSG_ID) -> dict[str, str]:
    return headers(
        secrets=[parse_secret(s) for s in secrets],
        msg_id=msg_id,
        timestamp=int(time.time()),
        body=body,
    )


def test_reference_library_vector() -> None:
    """The reference libraries' shared test vector (standard-webhooks tests, ``test_sign``)."""
    assert (
        sign(
            secrets=[parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
            msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp=1614265330,
            body=b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_headers_are_the_three_spec_headers() -> None:
    """headers() gives exactly webhook-id, webhook-timestamp and webhook-signature."""
    h = headers(secrets=[parse_secret(NEW)], msg_id=MSG_ID, timestamp=1700000000, body=BODY)
    assert set(h) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert h["webhook-id"] == MSG_ID
    assert h["webhook-timestamp"] == "1700000000"
    assert h["webhook-signature"].startswith("v1,")


def test_library_accepts_our_signature() -> None:
    """A receiver using the reference library verifies what we sign."""
    assert Webhook(NEW).verify(BODY, signed(NEW)) == json.loads(BODY)


@pytest.mark.parametrize("receiver", [OLD, NEW])
def test_rotation_either_secret_verifies(receiver: str) -> None:
    """During a rotation both signatures are sent; a receiver knowing either one accepts."""
    h = signed(OLD, NEW)
    assert len(h["webhook-signature"].split(" ")) == 2
    Webhook(receiver).verify(BODY, h, json_parse=False)


def test_unknown_secret_refused() -> None:
    """A receiver with neither rotated secret refuses the delivery."""
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(BODY, signed(OLD, NEW), json_parse=False)


def test_tampered_body_refused() -> None:
    """A body changed after signing (even one byte) fails verification."""
    h = signed(NEW)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b"ringing", b"ringinG"), h, json_parse=False)


def test_tampered_id_refused() -> None:
    """The webhook-id is covered by the signature."""
    h = signed(NEW) | {"webhook-id": MSG_ID[:-1] + "2"}
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, h, json_parse=False)


def test_tampered_timestamp_refused() -> None:
    """The webhook-timestamp is covered by the signature (still within the tolerance)."""
    h = signed(NEW)
    h["webhook-timestamp"] = str(int(h["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, h, json_parse=False)


@given(body=st.text(max_size=256).map(str.encode))
def test_any_utf8_body_verifies(body: bytes) -> None:
    """Any UTF-8 body signs to something the reference library accepts."""
    Webhook(NEW).verify(body, signed(NEW, body=body), json_parse=False)


def test_unprefixed_secret_is_base64_like_the_reference_library() -> None:
    """Without ``whsec_`` the secret is still base64, so both ends derive the same key."""
    bare = NEW.removeprefix("whsec_")
    assert parse_secret(bare) == parse_secret(NEW) == b"n" * 32
    Webhook(bare).verify(BODY, signed(bare), json_parse=False)


def test_unpadded_secret_accepted() -> None:
    """Unpadded base64 decodes as the reference Python library decodes it."""
    text = "whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("=")
    assert parse_secret(text) == b"k" * 25
    Webhook(text).verify(BODY, signed(text), json_parse=False)


def test_surrounding_whitespace_ignored() -> None:
    """A trailing newline from an env var or a file does not change the key."""
    assert parse_secret(f"  {NEW}\n") == parse_secret(NEW)


@pytest.mark.parametrize("text", ["", "whsec_", "   "])
def test_empty_secret_rejected(text: str) -> None:
    """An empty secret is refused, saying so."""
    with pytest.raises(ValueError, match="empty"):
        parse_secret(text)


@pytest.mark.parametrize(
    "text", ["whsec_not base64!", "hunter2-hunter2-hunter2-hunter2", "whsec_a=b"]
)
def test_non_base64_secret_rejected(text: str) -> None:
    """A secret that is not base64 is refused, not silently used as UTF-8 bytes."""
    with pytest.raises(ValueError, match="base64"):
        parse_secret(text)


def test_bad_base64_length_rejected() -> None:
    """Base64 of an impossible length (one leftover character) is refused."""
    with pytest.raises(ValueError, match="base64"):
        parse_secret("whsec_" + "A" * 33)


def test_short_secret_rejected() -> None:
    """The spec asks for at least 24 random bytes; a shorter key is refused with its size."""
    with pytest.raises(ValueError, match="4 bytes"):
        parse_secret("whsec_" + base64.b64encode(b"test").decode())


def test_secret_parse_and_repr_hides_key() -> None:
    """Secret.parse keeps the key; its repr never shows it."""
    key = os.urandom(32)
    secret = Secret.parse("whsec_" + base64.b64encode(key).decode())
    assert secret.key == key
    assert base64.b64encode(key).decode() not in repr(secret)
    assert repr(key) not in repr(secret)


def test_secret_from_bytes_validated() -> None:
    """Secret(key) refuses an empty key."""
    with pytest.raises(ValueError, match="empty"):
        Secret(b"")


def test_sign_needs_a_secret() -> None:
    """Signing with no secret at all is an error, not an unsigned delivery."""
    with pytest.raises(ValueError, match="at least one"):
        sign(secrets=[], msg_id=MSG_ID, timestamp=1, body=BODY)


@pytest.mark.parametrize("msg_id", ["", "a.b", "a b", "a\r\nX-Evil: 1"])
def test_unsafe_id_rejected(msg_id: str) -> None:
    """The spec forbids '.' in the id; header-breaking characters are refused too."""
    with pytest.raises(ValueError, match="webhook id"):
        sign(secrets=[parse_secret(NEW)], msg_id=msg_id, timestamp=1, body=BODY)


def test_signature_changes_with_timestamp() -> None:
    """Each attempt's timestamp is signed, so a retry carries a fresh signature."""
    key = [parse_secret(NEW)]
    assert sign(secrets=key, msg_id=MSG_ID, timestamp=1, body=BODY) != sign(
        secrets=key, msg_id=MSG_ID, timestamp=2, body=BODY
    )
