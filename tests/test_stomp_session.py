"""The STOMP 1.2 client session, from literal inputs and a fake clock: no socket, no server."""

from __future__ import annotations

import pytest

from bridge.sources.stomp_codec import Frame
from bridge.sources.stomp_session import (
    Closed,
    Connected,
    Ended,
    MessageReceived,
    Session,
    SessionEvent,
    State,
)

CONNECT = (
    "CONNECT\naccept-version:1.2\nheart-beat:100,200\nhost:pbx\nlogin:op\npasscode:secret\n\n\0"
)
SUBSCRIBES = [
    "SUBSCRIBE\nack:auto\ndestination:/topic/OC_778\nid:sub-0\n\n\0",
    "SUBSCRIBE\nack:auto\ndestination:/topic/STATE_UPDATE\nid:sub-1\n\n\0",
]
DISCONNECT = "DISCONNECT\nreceipt:disconnect\n\n\0"
RECEIPT = "RECEIPT\nreceipt-id:disconnect\n\n\0"
MESSAGE = (
    b"MESSAGE\ndestination:/topic/OC_778\nsubscription:sub-0\nmessage-id:7\n"
    b'content-type:application/json\ncontent-length:9\n\n{"a": 1}\n\0'
)
MESSAGE_FRAME = Frame(
    "MESSAGE",
    (
        ("destination", "/topic/OC_778"),
        ("subscription", "sub-0"),
        ("message-id", "7"),
        ("content-type", "application/json"),
        ("content-length", "9"),
    ),
    b'{"a": 1}\n',
)


def connected(server_heart_beat: str = "300,50", *, at: float = 1.0, **options: object) -> Session:
    """A session past CONNECTED at ``at`` (CONNECT sent at 0), its outputs so far taken."""
    session = started(**options)
    session.received(f"CONNECTED\nversion:1.2\nheart-beat:{server_heart_beat}\n\n\0", at)
    session.data_to_send()
    session.events_received()
    return session


def started(**options: object) -> Session:
    """A session that has sent CONNECT at 0 (already taken)."""
    settings: dict[str, object] = {
        "host": "pbx",
        "login": "op",
        "passcode": "secret",
        "heartbeat_ms": (100, 200),
        "destinations": ("/topic/OC_778", "/topic/STATE_UPDATE"),
        "connect_timeout_s": 5.0,
        "receipt_timeout_s": 0.5,
        **options,
    }
    session = Session(**settings)  # type: ignore[arg-type]
    session.start(0.0)
    session.data_to_send()  # the CONNECT
    return session


def ended(events: list[SessionEvent]) -> Ended:
    (event,) = events
    assert isinstance(event, Ended)
    return event


def test_start_sends_connect_with_our_heart_beats() -> None:
    """start() sends CONNECT (STOMP 1.2, credentials, our cx,cy) and nothing else happens yet."""
    session = Session(
        host="pbx", login="op", passcode="secret", heartbeat_ms=(100, 200), connect_timeout_s=5
    )
    session.start(0.0)
    assert session.data_to_send() == [CONNECT]
    assert session.events_received() == []
    assert session.state is State.CONNECTING
    assert session.next_deadline() == 5.0  # the connect timeout


def test_connected_negotiates_heart_beats_and_subscribes() -> None:
    """CONNECTED: send every max(cx, sy), expect every max(sx, cy); then one SUBSCRIBE each."""
    session = started()
    session.received("CONNECTED\nversion:1.2\nserver:coral\nheart-beat:300,50\n\n\0", 1.0)
    assert session.events_received() == [
        Connected(send_ms=100, expect_ms=300, version="1.2", server="coral")
    ]
    assert session.data_to_send() == SUBSCRIBES
    assert session.next_deadline() == pytest.approx(1.1)  # our heart-beat, before 2 x 300 ms


def test_the_server_asking_for_more_sets_our_rate() -> None:
    """The server's larger numbers win both ways ("Heart-beating": the MAX of the two)."""
    session = started()
    session.received("CONNECTED\nheart-beat:1000,400\n\n\0", 0.0)
    (event,) = session.events_received()
    assert event == Connected(send_ms=400, expect_ms=1000, version=None, server=None)


@pytest.mark.parametrize(
    ("ours", "server", "negotiated"),
    [
        ((100, 200), "0,0", (0, 0)),
        ((0, 0), "300,50", (0, 0)),
        ((0, 200), "300,50", (0, 300)),
        ((100, 0), "300,50", (100, 0)),
    ],
)
def test_zero_turns_a_direction_off(
    ours: tuple[int, int], server: str, negotiated: tuple[int, int]
) -> None:
    """A 0 on either side turns that direction off: no beat sent, no silence watched."""
    session = started(heartbeat_ms=ours)
    session.received(f"CONNECTED\nheart-beat:{server}\n\n\0", 1.0)
    (event,) = session.events_received()
    assert isinstance(event, Connected)
    assert (event.send_ms, event.expect_ms) == negotiated
    if negotiated == (0, 0):
        assert session.next_deadline() is None
        session.tick(1e9)
        assert session.state is State.CONNECTED


def test_a_missing_heart_beat_header_is_0_0() -> None:
    """CONNECTED without heart-beat: no heart-beats at all, nothing to wait for."""
    session = started()
    session.received("CONNECTED\nversion:1.2\n\n\0", 1.0)
    assert session.next_deadline() is None


def test_heart_beat_is_sent_when_we_have_been_quiet_for_the_interval() -> None:
    """Nothing sent for send_ms: an EOL goes out, and the next is due send_ms later."""
    session = connected("300,50", at=1.0)  # we send every 100 ms
    session.tick(1.099)
    assert session.data_to_send() == []
    session.tick(1.1)
    assert session.data_to_send() == ["\n"]
    assert session.next_deadline() == pytest.approx(1.2)


def test_an_overdue_server_ends_the_session_at_exactly_twice_its_interval() -> None:
    """No data for 2 x 300 ms: the session ends (not a moment before), having been CONNECTED."""
    session = connected("300,0", at=1.0, heartbeat_ms=(0, 200))
    assert session.next_deadline() == pytest.approx(1.6)
    deadline = session.next_deadline()
    assert deadline is not None
    session.tick(deadline - 1e-9)
    assert session.events_received() == []
    session.tick(deadline)
    event = ended(session.events_received())
    assert event.connected
    assert event.reason == "no data or heart-beat from the server for 0.6 s"
    assert session.next_deadline() is None


def test_any_data_resets_the_servers_deadline() -> None:
    """A heart-beat EOL, or even part of a frame, shows the server is alive."""
    session = connected("300,0", at=1.0, heartbeat_ms=(0, 200))
    session.received("\n", 1.5)
    assert session.next_deadline() == pytest.approx(2.1)
    session.received(b"MESS", 2.0)
    assert session.next_deadline() == pytest.approx(2.6)
    session.tick(2.59)
    assert session.state is State.CONNECTED


def test_error_before_connected_ends_it_not_connected() -> None:
    """A refused login: ERROR instead of CONNECTED, with the server's message and detail."""
    session = started()
    session.received("ERROR\nmessage:access refused\n\nbad password\0", 0.2)
    event = ended(session.events_received())
    assert event == Ended(reason="ERROR frame: access refused (bad password)", connected=False)
    assert session.data_to_send() == []
    assert session.next_deadline() is None


def test_error_after_connected_ends_it_connected() -> None:
    """ERROR mid-session ends it ("ERROR": the server closes after it), having been CONNECTED."""
    session = connected()
    session.received("ERROR\nmessage:broker going down\n\n\0", 2.0)
    assert ended(session.events_received()) == Ended(
        reason="ERROR frame: broker going down", connected=True
    )


def test_frames_after_an_error_are_not_read() -> None:
    """Once ended, the rest of the data and any later input are ignored."""
    session = connected()
    session.received(b"ERROR\nmessage:bye\n\n\0" + MESSAGE, 2.0)
    ended(session.events_received())
    session.received(MESSAGE, 2.1)
    session.tick(99.0)
    assert session.events_received() == []
    assert session.data_to_send() == []


def test_a_message_split_across_websocket_messages_arrives_once_whole() -> None:
    """Three WebSocket messages, one frame: one MessageReceived, after the last piece."""
    session = connected()
    for piece in (MESSAGE[:20], MESSAGE[20:70]):
        session.received(piece, 2.0)
        assert session.events_received() == []
    session.received(MESSAGE[70:], 2.1)
    assert session.events_received() == [MessageReceived(MESSAGE_FRAME)]


def test_heart_beat_eols_between_frames_are_only_data() -> None:
    """EOLs before, between and after frames (LF and CRLF) are heart-beats, not events."""
    session = connected()
    session.received(b"\n\r\n" + MESSAGE + b"\n" + MESSAGE + b"\r\n\n", 2.0)
    assert session.events_received() == [MessageReceived(MESSAGE_FRAME)] * 2


def test_close_sends_disconnect_and_the_receipt_ends_it_cleanly() -> None:
    """close(): DISCONNECT with a receipt; its RECEIPT is Closed, and the session is over."""
    session = connected()
    session.close(5.0)
    assert session.data_to_send() == [DISCONNECT]
    assert session.state is State.CLOSING
    session.received(RECEIPT, 5.1)
    assert session.events_received() == [Closed("disconnect")]
    assert session.ended
    assert session.next_deadline() is None


def test_messages_before_the_receipt_are_still_delivered() -> None:
    """The server may deliver until it reads our DISCONNECT: nothing it sent is dropped."""
    session = connected()
    session.close(5.0)
    session.received(MESSAGE + RECEIPT.encode(), 5.1)
    assert session.events_received() == [MessageReceived(MESSAGE_FRAME), Closed("disconnect")]


def test_a_receipt_for_something_else_does_not_end_it() -> None:
    """Only the RECEIPT naming our DISCONNECT's receipt id closes the session."""
    session = connected()
    session.close(5.0)
    session.received("RECEIPT\nreceipt-id:other\n\n\0", 5.1)
    assert session.events_received() == []
    assert session.state is State.CLOSING


def test_a_receipt_that_never_comes_ends_it_at_the_receipt_timeout() -> None:
    """No RECEIPT within receipt_timeout_s: the deadline says when, tick() ends it."""
    session = connected(at=5.0)
    session.received("\n", 5.0)
    session.close(5.0)
    assert session.next_deadline() == pytest.approx(5.1)  # our heart-beat comes first
    session.tick(5.1)
    assert session.data_to_send() == [DISCONNECT, "\n"]
    session.received("\n", 5.2)
    session.tick(5.2)
    session.data_to_send()
    assert session.next_deadline() == pytest.approx(5.3)
    session.tick(5.4999)
    session.data_to_send()
    assert session.events_received() == []
    session.tick(5.5)
    assert ended(session.events_received()) == Ended(
        reason="no RECEIPT for DISCONNECT within 0.5 s", connected=True
    )


def test_no_connected_within_the_connect_timeout_ends_it() -> None:
    """A server that accepts the socket but never answers CONNECT is given up on."""
    session = started(connect_timeout_s=5.0)
    session.received("\n", 4.0)  # heart-beats do not count before CONNECTED
    session.tick(4.999)
    assert session.events_received() == []
    session.tick(5.0)
    assert ended(session.events_received()) == Ended(
        reason="no CONNECTED frame within 5 s", connected=False
    )


def test_close_before_connected_ends_it_without_a_disconnect() -> None:
    """Closing while CONNECT is unanswered sends nothing more: there is no session to end."""
    session = started()
    session.close(1.0)
    assert session.data_to_send() == []
    assert ended(session.events_received()).connected is False


@pytest.mark.parametrize(
    "garbage",
    [b"HELLO\n\n\0", b"\x00\x01\x02", "MESSAGE\nbad header line\n\n\0", b"GET / HTTP/1.1\r\n\r\n"],
)
def test_garbage_is_a_protocol_error(garbage: bytes | str) -> None:
    """Bytes that are not STOMP end the session with a protocol error, CONNECTED or not."""
    before = started()
    before.received(garbage, 1.0)
    event = ended(before.events_received())
    assert event.reason.startswith("protocol error:")
    assert not event.connected
    after = connected()
    after.received(garbage, 2.0)
    assert ended(after.events_received()).connected


@pytest.mark.parametrize(
    "frame",
    [
        "MESSAGE\ndestination:/topic/OC_778\n\n\0",  # before CONNECTED
        "CONNECTED\nheart-beat:soon\n\n\0",
    ],
)
def test_a_wrong_frame_before_connected_is_a_protocol_error(frame: str) -> None:
    """Only CONNECTED (with a valid heart-beat) or ERROR may answer CONNECT."""
    session = started()
    session.received(frame, 1.0)
    assert ended(session.events_received()).reason.startswith("protocol error:")


def test_a_second_connected_is_a_protocol_error() -> None:
    """A client command or another CONNECTED mid-session is not STOMP we can follow."""
    session = connected()
    session.received("CONNECTED\n\n\0", 2.0)
    assert ended(session.events_received()).reason == "protocol error: unexpected CONNECTED frame"


def test_a_lost_connection_ends_it_with_the_reason() -> None:
    """The driver reports the socket gone: the session ends with that reason."""
    session = connected()
    session.lost("connection closed: no close frame received or sent")
    assert ended(session.events_received()) == Ended(
        reason="connection closed: no close frame received or sent", connected=True
    )
    session.lost("again")
    assert session.events_received() == []


def test_start_twice_is_a_bug() -> None:
    """A session is used once; the driver makes a new one per connection."""
    session = started()
    with pytest.raises(RuntimeError):
        session.start(1.0)
