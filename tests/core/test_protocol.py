"""The sans-IO layer: building the token request and parsing every kind of answer."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from navro_adapters import (
    Credentials,
    InvalidClientError,
    TokenEndpointError,
    TokenResponseError,
    TransportResponse,
    build_token_request,
    parse_retry_after,
    parse_token_response,
)
from navro_adapters.token import MAX_TOKEN_LIFETIME

SECRET = "s3cr3t-value-never-logged"
WALL = 1_700_000_000.0


def creds() -> Credentials:
    return Credentials("client-1", SECRET, "Acme Ltd")


def parse(status: int, body: object, headers: dict | None = None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    return parse_token_response(
        TransportResponse.build(status, headers or {}, data),
        requested_at=100.0,
        requested_at_wall=WALL,
    )


def test_token_request_is_exactly_the_documented_one() -> None:
    request = build_token_request(creds())
    assert request.method == "POST"
    assert request.url == "https://api.sandbox.navro.cloud/authentication/Acme%20Ltd/token"
    assert request.headers["X-API-Version"] == "1"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"client-1:{SECRET}"
    assert request.body == b"grant_type=client_credentials&scope=openid"
    assert SECRET not in repr(request) and encoded not in repr(request)


def test_good_token() -> None:
    token = parse(
        200,
        {"access_token": "abc.def", "token_type": "bearer", "expires_in": 300, "scope": "openid"},
    )
    assert token.access_token == "abc.def"
    assert token.token_type == "Bearer"
    assert token.expires_in == 300
    assert token.requested_at == 100.0  # counted from the send, not the arrival
    assert token.expires_at == 400.0
    assert token.expires_at_wall == WALL + 300
    assert token.scope == "openid"
    assert token.authorization == "Bearer abc.def"
    assert "abc.def" not in repr(token) and "abc.def" not in str(token)
    assert token.fingerprint in repr(token)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 300.0), ("300", 300.0), (" 12.5 ", 12.5), (1, 1.0), (0.25, 0.25)]
)
def test_expires_in_forms(raw: object, expected: float) -> None:
    body: dict = {"access_token": "t", "token_type": "Bearer"}
    if raw is not None:
        body["expires_in"] = raw
    assert parse(200, body).expires_in == expected


def test_huge_expires_in_is_capped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    import navro_adapters.protocol as protocol

    protocol._capped_lifetime_logged = False
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        assert (
            parse(200, {"access_token": "t", "expires_in": 1e12}).expires_in == MAX_TOKEN_LIFETIME
        )
        assert (
            parse(200, {"access_token": "t", "expires_in": 10**400 if False else 1e300}).expires_in
            == MAX_TOKEN_LIFETIME
        )
    assert len([r for r in caplog.records if "capping" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("status", "body", "raw", "fragment"),
    [
        (200, None, b"not json", "not a JSON object"),
        (200, None, b"<html><body>Gateway</body></html>", "HTML page"),
        (200, None, b"", "empty body"),
        (200, [1, 2], None, "not a JSON object"),
        (200, {"token_type": "Bearer"}, None, "no access_token"),
        (200, {"access_token": ""}, None, "no access_token"),
        (200, {"access_token": None}, None, "no access_token"),
        (200, {"access_token": 12345}, None, "unusable access_token"),
        (200, {"access_token": "a b"}, None, "unusable access_token"),
        (200, {"access_token": "a\r\nX-Evil: 1"}, None, "unusable access_token"),
        (200, {"access_token": "t", "token_type": "mac"}, None, "only Bearer"),
        (200, {"access_token": "t", "token_type": 5}, None, "only Bearer"),
        (200, {"access_token": "t", "expires_in": "abc"}, None, "non-numeric"),
        (200, {"access_token": "t", "expires_in": True}, None, "non-numeric"),
        (200, {"access_token": "t", "expires_in": [300]}, None, "non-numeric"),
        (200, {"access_token": "t", "expires_in": 0}, None, "not a positive"),
        (200, {"access_token": "t", "expires_in": -5}, None, "not a positive"),
        (200, {"access_token": "t", "expires_in": "NaN"}, None, "not a positive"),
        (201, {"access_token": "t", "expires_in": "-1"}, None, "not a positive"),
    ],
)
def test_unusable_2xx_is_a_token_response_error(
    status: int, body: object, raw: bytes | None, fragment: str
) -> None:
    with pytest.raises(TokenResponseError) as info:
        parse(status, body, raw=raw)
    assert fragment in str(info.value)
    assert info.value.retryable is False
    assert info.value.status_code == status


def test_401_is_invalid_client_with_guidance() -> None:
    with pytest.raises(InvalidClientError) as info:
        parse(401, {"error": "invalid_client"})
    err = info.value
    assert err.status_code == 401 and err.error == "invalid_client" and not err.retryable
    text = str(err)
    assert "client id and secret" in text and "Navro Hub" in text and "reset" in text.lower()
    assert SECRET not in text


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (403, False), (404, False), (429, True), (500, True), (502, True), (503, True)],
)
def test_error_statuses(status: int, retryable: bool) -> None:
    with pytest.raises(TokenEndpointError) as info:
        parse(
            status,
            {"error": "invalid_scope", "error_description": "scope\x00 bad"},
            headers={"Retry-After": "7"},
        )
    err = info.value
    assert not isinstance(err, InvalidClientError)
    assert err.status_code == status and err.retryable is retryable
    assert err.error == "invalid_scope" and err.error_description == "scope? bad"
    assert err.retry_after == 7.0
    assert f"HTTP {status}" in str(err) and "invalid_scope" in str(err)


def test_redirect_from_token_endpoint_is_not_followed_or_retried() -> None:
    with pytest.raises(TokenEndpointError) as info:
        parse(302, None, raw=b"", headers={"Location": "https://elsewhere"})
    assert not info.value.retryable


def test_error_without_json_body() -> None:
    with pytest.raises(TokenEndpointError) as info:
        parse(503, None, raw=b"<html>down</html>")
    assert info.value.error is None and info.value.retryable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("99999999", 3600.0),
        ("inf", None),
        ("nan", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("Tue, 14 Nov 2023 22:13:30 GMT", 10.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    # WALL is 2023-11-14 22:13:20 UTC.
    assert parse_retry_after(value, now_wall=WALL) == expected
