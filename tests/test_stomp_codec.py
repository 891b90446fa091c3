"""The STOMP 1.2 codec, from literal bytes: no broker needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.stomp_codec import (
    HEARTBEAT,
    HEARTBEAT_BYTES,
    Decoder,
    Frame,
    Heartbeat,
    StompProtocolError,
    connect,
    disconnect,
    encode,
    negotiate,
    subscribe,
)

MESSAGE = b"MESSAGE\r\nsubscription:0\r\nmessage-id:a\\cb\r\n\r\nhello\x00"
RECEIPT = b"RECEIPT\nreceipt-id:77\n\n\x00"
TWO = MESSAGE + RECEIPT
TWO_FRAMES = [
    Frame("MESSAGE", (("subscription", "0"), ("message-id", "a:b")), b"hello"),
    Frame("RECEIPT", (("receipt-id", "77"),)),
]
BINARY = b"MESSAGE\ncontent-length:5\n\na\x00b\x00c\x00"


def decode(*chunks: bytes | str, max_frame_bytes: int = 1 << 20) -> list[Frame | Heartbeat]:
    decoder = Decoder(max_frame_bytes=max_frame_bytes)
    return [item for chunk in chunks for item in decoder.feed(chunk)]


def test_escaping_round_trips() -> None:
    """Colon, LF, CR and backslash in names and values are escaped and come back intact."""
    frame = Frame("SEND", (("k:\\", "a:b\nc\rd\\e"),))
    wire = encode(frame)
    assert wire == b"SEND\nk\\c\\\\:a\\cb\\nc\\rd\\\\e\n\n\x00"
    assert decode(wire) == [frame]


def test_escapes_are_undone_once() -> None:
    """An escaped backslash before a c is a backslash and a c, not a colon."""
    assert decode(b"MESSAGE\nk:\\\\c\n\n\x00") == [Frame("MESSAGE", (("k", "\\c"),))]


def test_connect_is_not_escaped() -> None:
    """CONNECT headers go out raw (a colon in a passcode stays a colon)."""
    frame = connect(host="pbx", login="u", passcode="p:w\\x", heartbeat=(0, 0))
    assert b"\npasscode:p:w\\x\n" in encode(frame)


def test_connected_is_not_unescaped() -> None:
    """CONNECTED values are taken as sent, backslashes and colons included."""
    (frame,) = decode(b"CONNECTED\nversion:1.2\nsession:ID:a\\tb\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("session") == "ID:a\\tb"


def test_frames_concatenated_in_one_chunk() -> None:
    """Two frames in one chunk come out as two frames, in order."""
    assert decode(TWO) == TWO_FRAMES


@pytest.mark.parametrize("cut", range(len(TWO) + 1))
def test_every_split_point_gives_the_same_frames(cut: int) -> None:
    """Cutting the stream anywhere, even inside CRLF or an escape, changes nothing."""
    assert decode(TWO[:cut], TWO[cut:]) == TWO_FRAMES


def test_byte_by_byte() -> None:
    """Feeding one byte at a time yields the same frames."""
    assert decode(*(TWO[i : i + 1] for i in range(len(TWO)))) == TWO_FRAMES


def test_content_length_body_may_hold_nul() -> None:
    """With content-length the body is read by count, NULs included."""
    (frame,) = decode(BINARY)
    assert isinstance(frame, Frame)
    assert frame.body == b"a\x00b\x00c"


@pytest.mark.parametrize("cut", range(len(BINARY) + 1))
def test_content_length_body_split_anywhere(cut: int) -> None:
    """A counted body split at any byte still decodes whole."""
    assert decode(BINARY[:cut], BINARY[cut:]) == decode(BINARY)


def test_heartbeats_between_frames() -> None:
    """Bare LF and CRLF between frames are heart-beats, in stream order."""
    items = decode(RECEIPT + b"\n" + b"\r\n" + RECEIPT)
    assert items == [TWO_FRAMES[1], HEARTBEAT, HEARTBEAT, TWO_FRAMES[1]]


def test_crlf_heartbeat_split_between_chunks() -> None:
    """A CRLF heart-beat cut between its CR and LF is one heart-beat."""
    assert decode(b"\r", b"\n") == [HEARTBEAT]


def test_leading_eols_before_a_command_are_heartbeats() -> None:
    """EOLs before the first command are heart-beats, not part of the frame."""
    assert decode(b"\n\n" + RECEIPT) == [HEARTBEAT, HEARTBEAT, TWO_FRAMES[1]]


def test_repeated_header_first_wins() -> None:
    """Of repeated entries the first is the value; the rest are kept as history."""
    (frame,) = decode(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("foo") == "World"
    assert frame.headers == (("foo", "World"), ("foo", "Hello"))


def test_text_chunks_are_utf8() -> None:
    """A str chunk is taken as its UTF-8 bytes, so non-ASCII headers survive."""
    assert decode("MESSAGE\ncaller:Zoë\n\n\x00") == [Frame("MESSAGE", (("caller", "Zoë"),))]


def test_missing_header_uses_default() -> None:
    """header() returns the default for an absent name."""
    assert Frame("RECEIPT").header("receipt-id", "none") == "none"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"MESSAGE\nk:a\\tb\n\n\x00", id="undefined-escape"),
        pytest.param(b"MESSAGE\nk:ab\\\n\n\x00", id="trailing-backslash"),
        pytest.param(b"k:v\n\n\x00", id="no-command"),
        pytest.param(b"HELLO\n\n\x00", id="unknown-command"),
        pytest.param(b"MESSAGE\nnocolon\n\n\x00", id="header-without-colon"),
        pytest.param(b"MESSAGE\n:v\n\n\x00", id="empty-header-name"),
        pytest.param(b"MESSAGE\nk:a\rb\n\n\x00", id="bare-cr-in-header"),
        pytest.param(b"MESSAGE\nk:\xff\n\n\x00", id="headers-not-utf8"),
        pytest.param(b"MESSAGE\nk:v\x00", id="nul-before-blank-line"),
        pytest.param(b"MESSAGE\ncontent-length:9\n\nab\x00MESSAGE\n\n\x00", id="cl-wrong-end"),
        pytest.param(b"MESSAGE\ncontent-length:2\n\nabc\x00", id="cl-too-short"),
        pytest.param(b"MESSAGE\ncontent-length:x1\n\n\x00", id="cl-not-a-number"),
        pytest.param(b"MESSAGE\ncontent-length:-1\n\n\x00", id="cl-negative"),
    ],
)
def test_malformed_input_is_a_protocol_error(wire: bytes) -> None:
    """Bytes that are not STOMP 1.2 raise StompProtocolError."""
    with pytest.raises(StompProtocolError):
        decode(wire)


def test_oversize_frame_is_refused_before_it_ends() -> None:
    """A frame growing past max_frame_bytes fails without waiting for its NULL."""
    with pytest.raises(StompProtocolError, match="exceeds"):
        decode(b"MESSAGE\n\n" + b"x" * 64, max_frame_bytes=64)


def test_endless_headers_are_refused_at_the_limit() -> None:
    """Header lines that never reach a blank line cannot grow the buffer past the limit."""
    decoder = Decoder(max_frame_bytes=64)
    assert decoder.feed(b"MESSAGE\n" + b"k:v\n" * 13) == []  # 60 bytes: may still end in time
    with pytest.raises(StompProtocolError, match="exceeds"):
        decoder.feed(b"k:v\n")


def test_oversize_content_length_is_refused_up_front() -> None:
    """A content-length beyond the limit fails as soon as the headers are read."""
    with pytest.raises(StompProtocolError, match="exceeds"):
        decode(b"MESSAGE\ncontent-length:1000000\n\n", max_frame_bytes=1000)


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    """max_frame_bytes counts the whole frame, NULL included, and is inclusive."""
    wire = encode(Frame("SEND", (), b"x" * 10))
    assert decode(*(wire[i : i + 1] for i in range(len(wire))), max_frame_bytes=len(wire))
    with pytest.raises(StompProtocolError):
        decode(wire, max_frame_bytes=len(wire) - 1)


def test_heartbeats_do_not_count_towards_the_limit() -> None:
    """Many heart-beats in a row are consumed, not buffered as one big frame."""
    assert decode(b"\n" * 100, max_frame_bytes=8) == [HEARTBEAT] * 100


def test_encode_adds_content_length_to_bodies() -> None:
    """A non-empty body gets a computed content-length, replacing a wrong one."""
    wire = encode(Frame("SEND", (("destination", "/q"), ("content-length", "99")), b"a\x00b"))
    assert wire == b"SEND\ncontent-length:3\ndestination:/q\n\na\x00b\x00"


def test_encode_without_body_has_no_content_length() -> None:
    """An empty body needs no content-length."""
    assert encode(disconnect(receipt="77")) == b"DISCONNECT\nreceipt:77\n\n\x00"


def test_encode_rejects_what_cannot_be_framed() -> None:
    """A raw EOL in a CONNECT value, a NULL or a lone surrogate in a header: caller errors."""
    with pytest.raises(ValueError, match="passcode"):
        encode(connect(host="h", login="u", passcode="a\nb", heartbeat=(0, 0)))
    with pytest.raises(ValueError, match="k"):
        encode(Frame("SEND", (("k", "a\x00"),)))
    with pytest.raises(ValueError, match="surrogate"):
        encode(Frame("SEND", (("k", "\ud800"),)))


def test_connect_frame_bytes() -> None:
    """connect() builds the CONNECT frame the spec shows, plus login and heart-beat."""
    frame = connect(host="pbx.example", login="u", passcode="p", heartbeat=(10000, 5000))
    assert encode(frame) == (
        b"CONNECT\naccept-version:1.2\nheart-beat:10000,5000\nhost:pbx.example\n"
        b"login:u\npasscode:p\n\n\x00"
    )
    assert connect(host="h", login=None, passcode=None, heartbeat=(0, 0)).header("login") is None


def test_subscribe_frame_bytes() -> None:
    """subscribe() carries id, destination and ack."""
    wire = encode(subscribe(id="0", destination="/topic/calls", ack="client-individual"))
    assert wire == b"SUBSCRIBE\nack:client-individual\ndestination:/topic/calls\nid:0\n\n\x00"


def test_subscribe_rejects_unknown_ack_mode() -> None:
    """Only the spec's three ack modes are accepted."""
    with pytest.raises(ValueError, match="ack"):
        subscribe(id="0", destination="/q", ack="sometimes")


def test_heartbeat_bytes_decode_as_a_heartbeat() -> None:
    """What we send as a heart-beat is what we read as one."""
    assert decode(HEARTBEAT_BYTES) == [HEARTBEAT]


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ((10000, 10000), "5000,0", (0, 10000)),
        ((10000, 10000), "5000,20000", (20000, 10000)),
        ((0, 10000), "5000,5000", (0, 10000)),
        ((10000, 0), "0,5000", (10000, 0)),
        ((10000, 10000), "00,0", (0, 0)),
        ((10000, 10000), None, (0, 0)),
    ],
)
def test_negotiate(client: tuple[int, int], server: str | None, expected: tuple[int, int]) -> None:
    """Send every MAX(cx, sy), expect every MAX(sx, cy), 0 on either side means off."""
    assert negotiate(client, server) == expected


@pytest.mark.parametrize("server", ["5000", "a,b", "-1,0", "1, 2", "1,2,3", ""])
def test_negotiate_rejects_malformed_heart_beat(server: str) -> None:
    """A heart-beat header that is not two integers is a protocol error."""
    with pytest.raises(StompProtocolError):
        negotiate((1000, 1000), server)


# Property: any frames and heart-beats, encoded, concatenated and cut anywhere, decode back.

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_RAW_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n:"), max_size=12)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    command = draw(st.sampled_from(["SEND", "MESSAGE", "ERROR", "ACK", "CONNECT", "CONNECTED"]))
    text = _RAW_TEXT if command in ("CONNECT", "CONNECTED") else _TEXT
    names = text.filter(lambda n: n != "" and n != "content-length")
    headers = draw(st.lists(st.tuples(names, text), max_size=5))
    return Frame(command, tuple(headers), draw(st.binary(max_size=40)))


def by_name(item: Frame | Heartbeat, *, add_length: bool = False) -> Frame | Heartbeat:
    """The frame with headers stably sorted by name (encode groups them; repeats keep order)."""
    if not isinstance(item, Frame):
        return item
    headers = item.headers
    if add_length and item.body:
        headers += (("content-length", str(len(item.body))),)
    return Frame(item.command, tuple(sorted(headers, key=lambda h: h[0])), item.body)


@given(
    items=st.lists(st.one_of(frames(), st.just(HEARTBEAT)), max_size=6),
    crlf=st.booleans(),
    data=st.data(),
)
def test_any_frames_round_trip_in_any_chunking(
    items: list[Frame | Heartbeat], crlf: bool, data: st.DataObject
) -> None:
    """Encoded, concatenated and cut anywhere, frames and heart-beats decode back the same."""
    beat = b"\r\n" if crlf else HEARTBEAT_BYTES
    wire = b"".join(encode(item) if isinstance(item, Frame) else beat for item in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    expected = [by_name(item, add_length=True) for item in items]
    assert [by_name(item) for item in decode(*chunks)] == expected
