"""Tests specific to the requests adapter; what every adapter does is in tests/compliance.

Here: how the rule meets requests' PreparedRequest and response hooks (headers, scope, the
HTTPDigestAuth-style resend, which bodies can be resent, redirects), which session sends the
token requests, and the token transport itself (prepared bare, never redirected, errors typed).
Header and scope tests run offline with an in-memory token transport; the rest against the
sandbox, or on a recording connection adapter mounted on the session.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

requests = pytest.importorskip("requests", reason="the requests adapter tests need requests")
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from navro_adapters import (
    ConfigurationError,
    Credentials,
    InvalidClientError,
    RetryPolicy,
    TokenProvider,
    TokenRequest,
    TokenTimeoutError,
    TransportError,
    TransportResponse,
    build_token_request,
)
from navro_adapters.requests import NavroAuth, RequestsTransport
from navro_adapters.sandbox import Sandbox

from .support import (
    BASE,
    CREDS,
    SECRET,
    UNREACHABLE_BASE,
    assert_repr_is_safe,
    behind_proxy,
    import_error_message,
    ping,
    recording_provider,
)


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


class Counting(HTTPAdapter):
    """A real connection adapter that records the URL of everything sent through it."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: List[Optional[str]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.urls.append(request.url)
        return super().send(request, **kwargs)


def counted_session() -> Tuple[requests.Session, Counting]:
    session = requests.Session()
    adapter = Counting()
    session.mount("http://", adapter)
    return session, adapter


# -- construction and repr -------------------------------------------------------------------------


def test_repr_shows_neither_secret_nor_token() -> None:
    auth = offline_auth()
    auth(prepared(f"{BASE}/v1/ping"))
    assert_repr_is_safe(repr(auth), auth.provider.token)
    assert SECRET not in repr(NavroAuth(CREDS))


def test_bad_source_and_bad_session_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        NavroAuth({"client_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        NavroAuth(CREDS, session="not a session")  # type: ignore[arg-type]
    assert caught.value.field == "session"
    with pytest.raises(ConfigurationError):
        RequestsTransport("not a session")  # type: ignore[arg-type]


def test_credentials_build_a_provider_with_no_transport_of_its_own() -> None:
    auth = NavroAuth(CREDS)
    assert auth.credentials is CREDS
    assert auth.provider.transport is None  # the adapter's session sends the token requests
    provider = TokenProvider(CREDS)
    assert NavroAuth(provider, session=requests.Session()).provider is provider


# -- headers and scope (offline) -------------------------------------------------------------------


def test_in_scope_request_gets_bearer_version_and_one_response_hook() -> None:
    request = offline_auth()(prepared(f"{BASE}/v1/ping"))
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["X-API-Version"] == "1"
    assert len(request.hooks["response"]) == 1  # the 401 hook
    assert list(request.headers).count("Authorization") == 1


def test_callers_authorization_is_replaced_and_api_version_kept() -> None:
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
def test_other_origins_are_untouched_and_get_no_hook(url: str) -> None:
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


def test_extra_origins_get_the_token() -> None:
    auth = offline_auth(extra_origins=["https://files.navro.test"])
    assert "Authorization" in auth(prepared("https://files.navro.test/upload")).headers
    assert "Authorization" not in auth(prepared("https://files2.navro.test/upload")).headers


# -- the 401 hook, against the sandbox -------------------------------------------------------------


@pytest.fixture
def session(sandbox: Sandbox) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = NavroAuth(sandbox.credentials(), session=s)
        yield s


def test_a_401_is_resent_like_digest_auth_with_the_body_and_a_new_token(
    sandbox: Sandbox, session: requests.Session
) -> None:
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
    # the resent copy carries no 401 hook (one resend, whatever happens next)
    assert response.request.hooks["response"] == []
    assert sandbox.stats().api_requests == 3


def test_a_file_body_is_not_resent_but_its_token_is_dropped(
    sandbox: Sandbox, session: requests.Session
) -> None:
    session.get(ping(sandbox))
    sandbox.revoke_all_tokens()
    with tempfile.TemporaryFile() as handle:
        handle.write(b'{"amount": 3}')
        handle.seek(0)
        response = session.post(ping(sandbox), data=handle)
    assert response.status_code == 401
    assert sandbox.stats().api_requests == 2
    # the refused token was still invalidated: the next request goes out with a new one
    assert session.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().api_401s == 1
    assert sandbox.stats().token_requests == 2


def test_a_401_from_another_origin_after_a_redirect_is_not_ours(
    sandbox: Sandbox, session: requests.Session
) -> None:
    with Sandbox() as other:  # another origin that answers 401 to a request without its token
        response = session.get(
            f"{sandbox.base_url}/v1/redirect", params={"to": f"{other.base_url}/v1/ping"}
        )
        assert response.status_code == 401
        assert [r.status_code for r in response.history] == [302]
        assert other.stats().api_requests == 1  # not resent
        assert all("authorization" not in r.headers for r in other.requests_seen())
    assert session.auth.provider.stats.invalidations == 0  # type: ignore[union-attr]
    assert sandbox.stats().token_requests == 1


def test_secret_reset_then_401_raises_from_the_resend(
    sandbox: Sandbox, session: requests.Session
) -> None:
    session.get(ping(sandbox))
    sandbox.reset_secret("a-brand-new-secret")
    sandbox.revoke_all_tokens()
    with pytest.raises(InvalidClientError) as caught:
        session.get(ping(sandbox))  # the token request is made inside the response hook
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


# -- which session sends the token requests --------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["credentials", "provider-without-transport"])
def test_token_requests_go_through_the_session_given(sandbox: Sandbox, shared: bool) -> None:
    s, adapter = counted_session()
    source = TokenProvider(sandbox.credentials()) if shared else sandbox.credentials()
    with s:
        s.auth = NavroAuth(source, session=s)
        assert s.get(ping(sandbox)).status_code == 200
    assert adapter.urls == [sandbox.token_url, ping(sandbox)]


def test_without_a_session_token_requests_go_through_a_private_requests_session(
    sandbox: Sandbox,
) -> None:
    s, adapter = counted_session()
    with s:
        s.auth = auth = NavroAuth(sandbox.credentials())
        assert s.get(ping(sandbox)).status_code == 200
        auth.close()
    assert adapter.urls == [ping(sandbox)]
    (token_request,) = [r for r in sandbox.requests_seen() if r.kind == "token"]
    assert token_request.headers["user-agent"].startswith("python-requests/")


def test_a_provider_with_its_own_transport_keeps_it(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    s, adapter = counted_session()
    with s:
        s.auth = NavroAuth(provider, session=s)
        assert s.get(ping(sandbox)).status_code == 200
    assert calls == [sandbox.token_url]
    assert adapter.urls == [ping(sandbox)]


def test_token_requests_use_the_sessions_proxies(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with requests.Session() as s:
        s.proxies = {"http": sandbox.base_url}  # the API is reachable only through this proxy
        s.auth = NavroAuth(behind_proxy(sandbox), session=s)
        assert s.get(f"{UNREACHABLE_BASE}/v1/ping").status_code == 200
    assert sandbox.stats().token_requests == 1


def test_users_session_carries_token_requests_without_recursion(sandbox: Sandbox) -> None:
    with requests.Session() as s:
        s.headers["X-Custom"] = "session-header"
        s.auth = NavroAuth(sandbox.credentials(), session=s)  # the same session, both roles
        assert s.get(ping(sandbox)).status_code == 200
    token_request = next(r for r in sandbox.requests_seen() if r.kind == "token")
    assert token_request.headers["authorization"].startswith("Basic ")
    assert token_request.headers["x-api-version"] == "1"
    assert "x-custom" not in token_request.headers  # prepared without the session's defaults


# -- the token transport ---------------------------------------------------------------------------


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
        response.raw = io.BytesIO(body)  # read through the public .content, as from a socket
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


def test_close_closes_only_a_private_session(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: List[str] = []

    class Tracking(requests.Session):
        def close(self) -> None:
            closed.append("caller's")
            super().close()

    NavroAuth(CREDS, session=Tracking()).close()
    assert closed == []
    auth = NavroAuth(CREDS)
    private = auth.rule.transport
    assert isinstance(private, RequestsTransport) and private.owns_session
    monkeypatch.setattr(private.session, "close", lambda: closed.append("private"))
    auth.close()
    assert closed == ["private"]


# -- import without requests -----------------------------------------------------------------------


def test_import_error_names_the_extra() -> None:
    out = import_error_message("requests", "requests")
    assert "pip install 'navro-adapters[requests]'" in out


# -- TLS: token requests use the session's verify, and say so when they cannot -----------------


@pytest.fixture
def no_ca_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these variables win over session.verify (for the API call too): TLS here
    # is configured in code only.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_ca_environment")
def test_token_requests_trust_the_ca_of_the_session_given() -> None:
    with Sandbox(tls=True) as sandbox, requests.Session() as session:
        assert sandbox.ca_file is not None
        session.verify = sandbox.ca_file  # configured in code only, no environment variable
        session.auth = NavroAuth(sandbox.credentials(), session=session)
        assert session.get(f"{sandbox.base_url}/v1/ping", timeout=10).status_code == 200
        assert sandbox.stats().token_requests == 1


@pytest.mark.usefixtures("no_ca_environment")
def test_without_session_a_tls_failure_says_to_pass_the_session() -> None:
    with Sandbox(tls=True) as sandbox, requests.Session() as session:
        session.verify = sandbox.ca_file  # the API call would trust the CA...
        session.auth = NavroAuth(sandbox.credentials())  # ...the private token session not
        with pytest.raises(TransportError) as caught:
            session.get(f"{sandbox.base_url}/v1/ping", timeout=10)
        message = caught.value.message
        assert "TLS certificate problem" in message and "session=" in message
        assert not caught.value.retryable
        assert sandbox.stats().token_requests == 0  # no handshake completed, nothing retried


def test_a_revocation_storm_releases_each_401_before_the_token_request(sandbox: Sandbox) -> None:
    # Thirty callers on one session answered 401 together: each must release its 401's
    # connection before it waits for (or sends) the new token's request. Held, they kept the
    # token request from going out until the waiters timed out (9 of 50 did, measured).
    import threading

    from navro_adapters.sandbox import Fault

    callers = 30
    session = requests.Session()
    session.auth = NavroAuth(
        sandbox.credentials(), session=session, retry_policy=RetryPolicy(deadline=3.0)
    )
    assert session.get(ping(sandbox)).status_code == 200
    sandbox.enqueue_api_faults(*[Fault.delay(1.0)] * callers)
    statuses: List[object] = []

    def call() -> None:
        try:
            statuses.append(session.get(ping(sandbox), timeout=30).status_code)
        except Exception as exc:  # reported in the assertion below
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    while sandbox.stats().api_requests < callers + 1:  # every caller is held by the sandbox
        threading.Event().wait(0.01)
    sandbox.revoke_all_tokens()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * callers
    assert sandbox.stats().token_requests == 2
