"""Tests of the requests adapter: headers, origin scope, the 401 hook, the token transport.

Header and scope tests drive ``NavroAuth`` on prepared requests with an in-memory token
transport; the 401, redirect and body tests run against the real sandbox; the transport tests
use a recording connection adapter mounted on the session.
"""

from __future__ import annotations

import base64
import json
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

requests = pytest.importorskip("requests", reason="the requests adapter tests need requests")
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

import navro_adapters.requests as navro_requests
from navro_adapters import (
    ConfigurationError,
    Credentials,
    InvalidClientError,
    TokenProvider,
    TokenRequest,
    TokenTimeoutError,
    TransportError,
    TransportResponse,
    build_token_request,
)
from navro_adapters.requests import NavroAuth, RequestsTransport
from navro_adapters.sandbox import EchoServer, Fault, Sandbox

from .support import BASE, CREDS, SECRET, assert_repr_is_safe, import_error_message, ping


class FakeTokens:
    """A token transport handing out tok-1, tok-2, ... (no network)."""

    def __init__(self) -> None:
        self.issued = 0

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        self.issued += 1
        body = json.dumps({"access_token": f"tok-{self.issued}", "expires_in": 300}).encode()
        return TransportResponse.build(200, {"content-type": "application/json"}, body)


def prepared(url: str, headers: Optional[Dict[str, str]] = None) -> requests.PreparedRequest:
    return requests.Session().prepare_request(requests.Request("GET", url, headers=headers))


def offline_auth(**kwargs: Any) -> NavroAuth:
    return NavroAuth(TokenProvider(CREDS, transport=FakeTokens()), **kwargs)


# -- construction and repr ---------------------------------------------------------------------


def test_repr_shows_neither_secret_nor_token() -> None:
    auth = offline_auth()
    auth(prepared(f"{BASE}/v1/ping"))
    assert_repr_is_safe(repr(auth), auth.provider.token)
    assert SECRET not in repr(NavroAuth(CREDS))


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        NavroAuth(TokenProvider(CREDS), session=requests.Session())
    with pytest.raises(ConfigurationError):
        NavroAuth({"client_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RequestsTransport("not a session")  # type: ignore[arg-type]


def test_credentials_build_a_requests_transport() -> None:
    auth = NavroAuth(CREDS)
    assert isinstance(auth.provider.transport, RequestsTransport)
    assert auth.credentials is CREDS
    provider = TokenProvider(CREDS)
    assert NavroAuth(provider).provider is provider


# -- headers and scope --------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["fast-headers", "public-api"])
def header_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(navro_requests, "_FAST_HEADERS", request.param)
    return bool(request.param)


def test_in_scope_request_gets_bearer_version_and_hook(header_mode: bool) -> None:
    auth = offline_auth()
    request = auth(prepared(f"{BASE}/v1/ping"))
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["X-API-Version"] == "1"
    assert auth._on_response in request.hooks["response"]
    assert list(request.headers).count("Authorization") == 1


def test_caller_version_kept_and_authorization_replaced(header_mode: bool) -> None:
    auth = offline_auth()
    request = auth(prepared(f"{BASE}/v1/ping", {"x-api-version": "2", "authorization": "Basic x"}))
    assert request.headers["X-API-Version"] == "2"
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert [k.lower() for k in request.headers].count("authorization") == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.test/v1/ping",
        "https://api.navro.test:8443/v1/ping",
        "http://api.navro.test/",
    ],
)
def test_other_origins_are_untouched(url: str) -> None:
    auth = offline_auth()
    request = auth(prepared(url))
    assert "Authorization" not in request.headers
    assert "X-API-Version" not in request.headers
    assert request.hooks["response"] == []
    assert auth.provider.stats.token_requests == 0


@pytest.mark.parametrize(
    "url", ["https://API.NAVRO.TEST/v1/ping", "https://api.navro.test:443/v1/ping", BASE]
)
def test_same_origin_spelled_differently_is_in_scope(url: str) -> None:
    request = offline_auth()(prepared(url))
    assert request.headers["Authorization"] == "Bearer tok-1"


def test_extra_origins() -> None:
    auth = offline_auth(extra_origins=["https://files.navro.test"])
    assert "Authorization" in auth(prepared("https://files.navro.test/upload")).headers
    assert "Authorization" not in auth(prepared("https://files2.navro.test/upload")).headers


def test_store_layout_probe_passes_on_installed_requests() -> None:
    assert navro_requests._has_store_layout()


def test_hook_ignores_responses_that_did_not_carry_our_token() -> None:
    auth = offline_auth()
    response = requests.Response()
    response.status_code = 401
    response.request = prepared("https://elsewhere.test/", {"Authorization": "Basic abc"})
    assert auth._handle_401(response) is response
    response.request = prepared("https://elsewhere.test/")
    assert auth._handle_401(response) is response
    assert auth.provider.stats.invalidations == 0


# -- against the sandbox ------------------------------------------------------------------------


@pytest.fixture
def session(sandbox: Sandbox) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = NavroAuth(sandbox.credentials())
        yield s
        s.auth.close()


def test_first_request_fetches_one_token_through_requests(
    sandbox: Sandbox, session: requests.Session
) -> None:
    assert session.get(ping(sandbox)).json()["ok"] is True
    assert session.get(ping(sandbox)).status_code == 200
    token_requests = [r for r in sandbox.requests_seen() if r.kind == "token"]
    assert len(token_requests) == 1
    assert token_requests[0].headers["user-agent"].startswith("python-requests/")
    assert token_requests[0].headers["x-api-version"] == "1"


def test_one_401_resends_once_with_a_new_token(sandbox: Sandbox, session: requests.Session) -> None:
    first = session.get(ping(sandbox))
    sandbox.revoke_all_tokens()
    response = session.post(ping(sandbox), data=b'{"amount": 12}')
    assert response.status_code == 200
    assert response.json()["body_bytes"] == len(b'{"amount": 12}')
    assert [r.status_code for r in response.history] == [401]
    old = response.history[0].request.headers["Authorization"]
    assert old == first.request.headers["Authorization"]
    assert response.request.headers["Authorization"] != old
    assert response.request.headers["X-API-Version"] == "1"
    assert sandbox.stats().token_requests == 2
    assert sandbox.stats().api_requests == 3
    # the resent copy carries no 401 hook (one resend, whatever happens next)
    assert session.auth._on_response not in response.request.hooks["response"]  # type: ignore[union-attr]


def test_api_always_401_is_tried_exactly_twice(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.set_api_always_401(True)
    response = session.get(ping(sandbox))
    assert response.status_code == 401
    assert len(response.history) == 1
    assert sandbox.stats().api_requests == 2
    assert sandbox.stats().token_requests == 2


def test_generator_body_is_not_resent(sandbox: Sandbox, session: requests.Session) -> None:
    session.get(ping(sandbox))
    sandbox.revoke_all_tokens()

    def body() -> Iterator[bytes]:
        yield b"one-shot"

    response = session.post(ping(sandbox), data=body())
    assert response.status_code == 401
    assert sandbox.stats().api_requests == 2
    # the refused token was still invalidated: the next request goes out with a new one
    assert session.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().api_401s == 1
    assert sandbox.stats().token_requests == 2


def test_file_body_is_not_resent(sandbox: Sandbox, session: requests.Session) -> None:
    session.get(ping(sandbox))
    sandbox.revoke_all_tokens()
    with tempfile.TemporaryFile() as handle:
        handle.write(b'{"amount": 3}')
        handle.seek(0)
        response = session.post(ping(sandbox), data=handle)
    assert response.status_code == 401
    assert sandbox.stats().api_requests == 2


def test_single_api_fault_401_is_absorbed(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.enqueue_api_faults(Fault.status(401))
    response = session.put(ping(sandbox), json={"a": 1})
    assert response.status_code == 200
    assert response.json()["method"] == "PUT"


def test_cross_origin_redirect_never_carries_the_token(
    sandbox: Sandbox, session: requests.Session
) -> None:
    with EchoServer() as other:
        target = f"{other.base_url}/landing"
        response = session.get(f"{sandbox.base_url}/v1/redirect", params={"to": target})
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [302]
        assert "Authorization" in response.history[0].request.headers
        assert "Authorization" not in response.request.headers
        seen = other.requests_seen()
        assert seen and all("authorization" not in r.headers for r in seen)


def test_absolute_url_to_another_origin_gets_nothing(
    sandbox: Sandbox, session: requests.Session
) -> None:
    with EchoServer() as other:
        assert session.get(f"{other.base_url}/x").status_code == 200
        assert all("authorization" not in r.headers for r in other.requests_seen())
    assert sandbox.stats().token_requests == 0


def test_secret_reset_raises_invalid_client(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.reset_secret("a-brand-new-secret")
    with pytest.raises(InvalidClientError) as caught:
        session.get(ping(sandbox))
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_secret_reset_then_401_raises_from_the_resend(
    sandbox: Sandbox, session: requests.Session
) -> None:
    session.get(ping(sandbox))
    sandbox.reset_secret("a-brand-new-secret")
    sandbox.revoke_all_tokens()
    with pytest.raises(InvalidClientError):
        session.get(ping(sandbox))


def test_users_session_carries_token_requests_without_recursion(sandbox: Sandbox) -> None:
    with requests.Session() as s:
        s.headers["X-Custom"] = "session-header"
        s.auth = NavroAuth(sandbox.credentials(), session=s)  # the same session, both roles
        assert s.get(ping(sandbox)).status_code == 200
    token_request = next(r for r in sandbox.requests_seen() if r.kind == "token")
    assert token_request.headers["authorization"].startswith("Basic ")
    assert "x-custom" not in token_request.headers  # prepared without the session's defaults


def test_shared_provider_is_used_as_is(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials())
    with requests.Session() as s:
        s.auth = NavroAuth(provider)
        assert s.get(ping(sandbox)).status_code == 200
    assert provider.stats.token_requests == 1


# -- the token transport --------------------------------------------------------------------------


class Recorder(HTTPAdapter):
    """A connection adapter that records what it is asked to send and answers from a function."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], requests.Response]) -> None:
        super().__init__()
        self.answer = answer
        self.sent: List[Tuple[requests.PreparedRequest, Dict[str, Any]]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append((request, kwargs))
        return self.answer(request)


def canned(status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> Any:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]
        response.headers = CaseInsensitiveDict(headers or {})
        response.request = request
        response.url = request.url or ""
        return response

    return answer


def session_with(adapter: HTTPAdapter) -> requests.Session:
    s = requests.Session()
    s.mount("https://", adapter)
    return s


def test_token_request_is_prepared_bare_and_never_redirected() -> None:
    recorder = Recorder(canned(302, headers={"Location": "https://evil.test/"}))
    s = session_with(recorder)
    s.auth = ("user", "password")  # must not replace the client's Basic credentials
    s.headers["X-Custom"] = "nope"
    s.hooks["response"].append(lambda r, **kw: pytest.fail("session hook ran"))
    response = RequestsTransport(s)(build_token_request(CREDS), timeout=7.5)
    assert response.status_code == 302
    assert len(recorder.sent) == 1
    request, kwargs = recorder.sent[0]
    assert request.url == CREDS.token_url
    expected = base64.b64encode(f"client-id:{SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["X-API-Version"] == "1"
    assert "X-Custom" not in request.headers
    assert request.body == b"grant_type=client_credentials&scope=openid"
    assert kwargs["timeout"] == 7.5


def test_token_response_is_translated() -> None:
    body = json.dumps({"access_token": "abc", "expires_in": 300}).encode()
    recorder = Recorder(canned(200, body, {"Content-Type": "application/json"}))
    response = RequestsTransport(session_with(recorder))(build_token_request(CREDS), timeout=1)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == body


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (requests.ConnectTimeout, TokenTimeoutError),
        (requests.ReadTimeout, TokenTimeoutError),
        (requests.ConnectionError, TransportError),
        (requests.exceptions.SSLError, TransportError),
    ],
)
def test_transport_failures_become_typed_errors(raised: type, expected: type) -> None:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        raise raised(f"failed talking to {request.url} with {SECRET}")

    transport = RequestsTransport(session_with(Recorder(answer)))
    with pytest.raises(expected) as caught:
        transport(build_token_request(CREDS), timeout=1)
    assert isinstance(caught.value.__cause__, raised)
    assert SECRET not in str(caught.value)


def test_connection_refused_is_a_transport_error() -> None:
    creds = Credentials("id", SECRET, "acme", base_url="http://127.0.0.1:9")
    transport = RequestsTransport()
    with pytest.raises(TransportError):
        transport(build_token_request(creds), timeout=2)
    transport.close()


def test_close_closes_only_a_private_session() -> None:
    closed: List[str] = []

    class Tracking(requests.Session):
        def close(self) -> None:
            closed.append("closed")
            super().close()

    NavroAuth(CREDS, session=Tracking()).close()
    assert closed == []
    auth = NavroAuth(CREDS)
    assert isinstance(auth.provider.transport, RequestsTransport)
    auth.provider.transport.session = Tracking()
    auth.close()
    assert closed == ["closed"]


# -- import without requests ----------------------------------------------------------------------


def test_import_error_names_the_extra() -> None:
    out = import_error_message("requests", "requests")
    assert "pip install 'navro-adapters[requests]'" in out
