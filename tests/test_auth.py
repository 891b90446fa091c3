"""Per-source authentication: tokens, Basic, CooCenter WEBKEY."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.config import AuthBasic, AuthToken, AuthWebkey
from bridge.errors import AuthError
from bridge.sources.auth import BasicAuth, TokenAuth, WebkeyAuth, webkey_for


class Req:
    def __init__(
        self, headers: dict[str, str] | None = None, query: dict[str, str] | None = None
    ) -> None:
        self.headers = headers or {}
        self.query = query or {}
        self.method = "POST"
        self.path_qs = "/ingest/x"


def test_webkey_matches_the_documented_formula() -> None:
    """md5(WEBKEY + 'YYYY-MM-DD'), lower-case hex."""
    # As `printf 'secret2024-05-01' | md5sum` prints it.
    assert webkey_for("secret", "2024-05-01") == "5bbf5d9796d6e08495b4550591b3186b"


@pytest.mark.parametrize("date", ["2024-04-30", "2024-05-01", "2024-05-02"])
def test_webkey_accepts_yesterday_today_tomorrow(date: str) -> None:
    """Around midnight and with clock skew, adjacent days' keys are accepted."""
    clock = lambda: datetime(2024, 5, 1, 12, tzinfo=UTC)  # noqa: E731
    auth = WebkeyAuth(AuthWebkey(webkey="k"), ZoneInfo("UTC"), clock)
    auth.check(Req({"Authorization": webkey_for("k", date)}))


def test_webkey_uses_the_source_time_zone() -> None:
    """The date is the PBX's local date: 20:00 UTC on 1 May is 2 May in Shanghai."""
    clock = lambda: datetime(2024, 5, 1, 20, tzinfo=UTC)  # noqa: E731
    auth = WebkeyAuth(AuthWebkey(webkey="k"), ZoneInfo("Asia/Shanghai"), clock)
    auth.check(Req({"Authorization": webkey_for("k", "2024-05-03")}))
    with pytest.raises(AuthError):
        auth.check(Req({"Authorization": webkey_for("k", "2024-04-30")}))


def test_webkey_refuses_two_days_off_and_missing() -> None:
    """An old key or no header is refused."""
    clock = lambda: datetime(2024, 5, 1, 12, tzinfo=UTC)  # noqa: E731
    auth = WebkeyAuth(AuthWebkey(webkey="k"), ZoneInfo("UTC"), clock)
    with pytest.raises(AuthError):
        auth.check(Req({"Authorization": webkey_for("k", "2024-04-29")}))
    with pytest.raises(AuthError):
        auth.check(Req())


def test_token_in_header_or_query() -> None:
    """A shared token is accepted in its header or its query parameter, nothing else."""
    auth = TokenAuth(AuthToken(token="0123456789"))
    auth.check(Req({"X-Bridge-Token": "0123456789"}))
    auth.check(Req(query={"token": "0123456789"}))
    with pytest.raises(AuthError):
        auth.check(Req({"X-Bridge-Token": "0123456780"}))


def test_basic_auth_challenges() -> None:
    """Wrong or missing Basic credentials raise with a WWW-Authenticate challenge."""
    auth = BasicAuth(AuthBasic(username="pbx", password="pw"))
    good = base64.b64encode(b"pbx:pw").decode()
    auth.check(Req({"Authorization": f"Basic {good}"}))
    for header in (
        {},
        {"Authorization": "Basic " + base64.b64encode(b"pbx:no").decode()},
        {"Authorization": "Basic !!"},
    ):
        with pytest.raises(AuthError) as caught:
            auth.check(Req(header))
        (challenge,) = caught.value.challenges
        assert challenge.startswith("Basic ")
