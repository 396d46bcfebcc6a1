"""Tests specific to the httpx/httpx2 adapter; what every adapter does is in tests/compliance.

Here: how the rule meets httpx's auth flow (headers, parsed-URL scope, which bodies can be
resent, a 401 after a redirect), which client sends the token requests (the named one, else a
private one of the request's flavour), the token transports, and which flavours are found.
Most tests run against an in-memory Navro (``MockTransport``) for every installed flavour; the
ones about private clients, proxies and event loops use the real sandbox. Import-time
behaviour (which flavour is installed) is checked in subprocesses.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterator, List, Optional

import pytest

from navro_adapters import (
    ConfigurationError,
    Credentials,
    InvalidClientError,
    TokenEndpointError,
    TokenProvider,
    TokenRequest,
    TokenTimeoutError,
    TransportError,
    TransportResponse,
    build_token_request,
)

try:
    from navro_adapters import httpx as navro_httpx
except ImportError:  # neither httpx nor httpx2: tests/test_packaging.py checks the message
    pytest.skip("the httpx adapter needs httpx or httpx2", allow_module_level=True)
from navro_adapters.httpx import AsyncHttpxTransport, HttpxTransport, NavroAuth
from navro_adapters.sandbox import Sandbox
from tests.compliance.drivers import httpx_proxy

from .support import (
    BASE,
    CREDS,
    ROOT,
    SECRET,
    UNREACHABLE_BASE,
    assert_repr_is_safe,
    behind_proxy,
)

TOKEN_PATH = "/authentication/acme/token"


def _installed(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


FLAVOURS = [name for name in ("httpx", "httpx2") if _installed(name)]


@pytest.fixture(params=FLAVOURS)
def mod(request: pytest.FixtureRequest) -> Any:
    return importlib.import_module(request.param)


class Seen:
    """A snapshot of a request as it was sent (the adapter resends the same Request object)."""

    def __init__(self, request: Any) -> None:
        self.method = request.method
        self.url = request.url
        self.headers = type(request.headers)(request.headers)
        module = sys.modules[type(request).__module__.split(".")[0]]
        replayable = isinstance(request.stream, module.ByteStream)
        self.body = request.read() if replayable else b"<stream>"


class FakeNavro:
    """An in-memory Navro for MockTransport: issues tok-1, tok-2, ... and checks bearers."""

    def __init__(self) -> None:
        self.issued = 0
        self.valid: set = set()
        self.token_requests: List[Any] = []
        self.api_requests: List[Any] = []
        self.api_bodies: List[bytes] = []
        self.always_401 = False
        self.revoke_after_use = False  # the next accepted API call revokes its token afterwards
        self.token_status: Optional[int] = None
        self.token_error: Optional[BaseException] = None

    def __call__(self, request: Any) -> Any:
        module = sys.modules[type(request).__module__.split(".")[0]]
        if request.url.host != "api.navro.test":
            if request.url.path == "/unauthorized":
                return module.Response(401)
            return module.Response(200, json={"elsewhere": True})
        if request.url.path == TOKEN_PATH:
            self.token_requests.append(Seen(request))
            if self.token_error is not None:
                raise self.token_error
            if self.token_status is not None:
                return module.Response(self.token_status, json={"error": "invalid_client"})
            self.issued += 1
            token = f"tok-{self.issued}"
            self.valid.add(token)
            return module.Response(
                200, json={"access_token": token, "token_type": "Bearer", "expires_in": 300}
            )
        seen = Seen(request)
        self.api_requests.append(seen)
        self.api_bodies.append(seen.body)
        if request.url.path == "/v1/redirect-away":
            return module.Response(302, headers={"Location": "https://other.test/unauthorized"})
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if self.always_401 or token not in self.valid:
            return module.Response(401)
        if self.revoke_after_use:
            self.revoke_after_use = False
            self.valid.discard(token)
        return module.Response(200, json={"token": token})


def sync_pair(mod: Any, fake: FakeNavro, **kwargs: Any) -> Any:
    transport = mod.MockTransport(fake)
    auth = NavroAuth(CREDS, client=mod.Client(transport=transport), **kwargs)
    return auth, mod.Client(transport=transport, auth=auth)


def async_pair(mod: Any, fake: FakeNavro, **kwargs: Any) -> Any:
    transport = mod.MockTransport(fake)
    auth = NavroAuth(CREDS, async_client=mod.AsyncClient(transport=transport), **kwargs)
    return auth, mod.AsyncClient(transport=transport, auth=auth)


def streaming_client(mod: Any, fake: FakeNavro, auth: NavroAuth, *, asynchronous: bool) -> Any:
    """A client whose transport consumes a streaming body as a network transport does.

    ``MockTransport`` calls ``request.read()``, which turns a generator body into a replayable
    one; a real transport only iterates it.
    """

    class Consuming(mod.BaseTransport):  # type: ignore[misc, name-defined]
        def handle_request(self, request: Any) -> Any:
            for _ in request.stream:
                pass
            return fake(request)

    class AsyncConsuming(mod.AsyncBaseTransport):  # type: ignore[misc, name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            async for _ in request.stream:
                pass
            return fake(request)

    if asynchronous:
        return mod.AsyncClient(transport=AsyncConsuming(), auth=auth)
    return mod.Client(transport=Consuming(), auth=auth)


# -- construction, flavours, repr -------------------------------------------------------------


def test_navro_auth_is_an_auth_of_every_installed_flavour() -> None:
    assert navro_httpx.installed_flavours() == tuple(FLAVOURS)
    for name in FLAVOURS:
        module = importlib.import_module(name)
        assert isinstance(NavroAuth(CREDS), module.Auth)


def test_repr_shows_neither_secret_nor_token(mod: Any) -> None:
    fake = FakeNavro()
    auth, client = sync_pair(mod, fake)
    assert client.get(f"{BASE}/v1/ping").status_code == 200
    assert_repr_is_safe(repr(auth), auth.provider.token)
    assert repr(HttpxTransport(mod.Client())) == f"HttpxTransport({mod.__name__})"
    assert repr(AsyncHttpxTransport(mod.AsyncClient())) == f"AsyncHttpxTransport({mod.__name__})"


def test_a_provider_without_transport_fetches_through_the_named_client(mod: Any) -> None:
    fake = FakeNavro()
    transport = mod.MockTransport(fake)  # the only way to reach api.navro.test
    provider = TokenProvider(CREDS)
    auth = NavroAuth(provider, client=mod.Client(transport=transport))
    assert auth.provider is provider
    with mod.Client(transport=transport, auth=auth) as client:
        assert client.get(f"{BASE}/v1/ping").status_code == 200
    assert len(fake.token_requests) == 1


async def test_a_provider_without_transport_fetches_through_the_named_async_client(
    mod: Any,
) -> None:
    fake = FakeNavro()
    transport = mod.MockTransport(fake)
    auth = NavroAuth(TokenProvider(CREDS), async_client=mod.AsyncClient(transport=transport))
    async with mod.AsyncClient(transport=transport, auth=auth) as client:
        assert (await client.get(f"{BASE}/v1/ping")).status_code == 200
    assert len(fake.token_requests) == 1


def test_a_provider_with_its_own_transport_keeps_it(mod: Any) -> None:
    own: List[str] = []

    def transport(request: TokenRequest, *, timeout: float) -> TransportResponse:
        own.append(request.url)
        body = json.dumps({"access_token": "tok-1", "expires_in": 300}).encode()
        return TransportResponse.build(200, {"content-type": "application/json"}, body)

    fake = FakeNavro()
    fake.valid.add("tok-1")
    mock = mod.MockTransport(fake)
    auth = NavroAuth(TokenProvider(CREDS, transport=transport), client=mod.Client(transport=mock))
    with mod.Client(transport=mock, auth=auth) as client:
        assert client.get(f"{BASE}/v1/ping").status_code == 200
    assert own == [CREDS.token_url]
    assert fake.token_requests == []


def test_bad_source_and_bad_clients_are_rejected(mod: Any) -> None:
    with pytest.raises(ConfigurationError):
        NavroAuth("not credentials")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        NavroAuth(CREDS, client=mod.AsyncClient())  # an async client where a sync one goes
    with pytest.raises(ConfigurationError):
        NavroAuth(CREDS, async_client=mod.Client())


# -- headers and origin scope -----------------------------------------------------------------


def test_caller_authorization_is_replaced_and_duplicates_collapse(mod: Any) -> None:
    fake = FakeNavro()
    _, client = sync_pair(mod, fake)
    request = client.build_request("GET", f"{BASE}/v1/ping")
    request.headers = mod.Headers(
        [*request.headers.multi_items(), ("Authorization", "a"), ("authorization", "b")]
    )
    assert client.send(request).status_code == 200
    assert fake.api_requests[0].headers.get_list("Authorization") == ["Bearer tok-1"]
    client.get(f"{BASE}/v1/ping", headers={"Authorization": "Basic xyz"})
    assert fake.api_requests[1].headers.get_list("Authorization") == ["Bearer tok-1"]


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.test/v1/ping",
        "https://api.navro.test:8443/v1/ping",  # another port is another origin
        "http://127.0.0.1/v1/ping",
    ],
)
def test_other_origins_get_nothing(mod: Any, url: str) -> None:
    fake = FakeNavro()
    auth, client = sync_pair(mod, fake)
    request = client.build_request("GET", url)
    flow = auth.sync_auth_flow(request)
    assert next(flow) is request
    assert "Authorization" not in request.headers
    assert "X-API-Version" not in request.headers
    assert fake.token_requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://API.Navro.TEST/v1/ping",
        "https://api.navro.test:443/v1/ping",
        "https://api.navro.test",
        "https://api.navro.test?x=1",
    ],
)
def test_same_origin_spelled_differently_is_in_scope(mod: Any, url: str) -> None:
    auth, client = sync_pair(mod, FakeNavro())
    request = client.build_request("GET", url)
    next(auth.sync_auth_flow(request))
    assert request.headers["Authorization"] == "Bearer tok-1"


def test_extra_origins_are_in_scope(mod: Any) -> None:
    auth, client = sync_pair(mod, FakeNavro(), extra_origins=["https://files.navro.test:8443"])
    request = client.build_request("GET", "https://files.navro.test:8443/upload")
    next(auth.sync_auth_flow(request))
    assert request.headers["Authorization"] == "Bearer tok-1"
    request = client.build_request("GET", "https://files.navro.test/upload")
    next(auth.sync_auth_flow(request))
    assert "Authorization" not in request.headers


# -- the 401 rule -------------------------------------------------------------------------------


def test_a_401_resends_the_same_body_with_a_new_token(mod: Any) -> None:
    fake = FakeNavro()
    auth, client = sync_pair(mod, fake)
    assert client.get(f"{BASE}/v1/ping").status_code == 200
    fake.valid.clear()  # Navro revoked tok-1
    response = client.post(f"{BASE}/v1/ping", content=b'{"amount": 1}')
    assert response.status_code == 200
    assert response.json() == {"token": "tok-2"}
    assert [r.status_code for r in response.history] == [401]
    assert [r.headers["Authorization"] for r in fake.api_requests] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert fake.api_bodies[1:] == [b'{"amount": 1}', b'{"amount": 1}']
    assert auth.provider.stats.invalidations == 1


def test_a_generator_body_is_not_resent_but_its_token_is_dropped(mod: Any) -> None:
    fake = FakeNavro()
    auth, _ = sync_pair(mod, fake)
    client = streaming_client(mod, fake, auth, asynchronous=False)
    client.get(f"{BASE}/v1/ping")
    fake.valid.clear()

    def body() -> Iterator[bytes]:
        yield b"one-shot"

    response = client.post(f"{BASE}/v1/ping", content=body())
    assert response.status_code == 401
    assert len(fake.api_requests) == 2  # the warm-up and the single streaming attempt
    assert auth.provider.stats.invalidations == 1  # so the next request carries a new token
    assert client.get(f"{BASE}/v1/ping").json() == {"token": "tok-2"}


def test_401_from_another_origin_after_a_redirect_is_not_ours(mod: Any) -> None:
    fake = FakeNavro()
    _, client = sync_pair(mod, fake)
    response = client.get(f"{BASE}/v1/redirect-away", follow_redirects=True)
    assert response.status_code == 401
    assert str(response.url) == "https://other.test/unauthorized"
    assert len(fake.api_requests) == 1
    assert len(fake.token_requests) == 1


def test_secret_rejected_on_the_resend_raises(mod: Any) -> None:
    fake = FakeNavro()
    _, client = sync_pair(mod, fake)
    client.get(f"{BASE}/v1/ping")
    fake.valid.clear()
    fake.token_status = 401
    with pytest.raises(InvalidClientError) as caught:
        client.get(f"{BASE}/v1/ping")  # the token request is made inside the auth flow
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


# -- async ------------------------------------------------------------------------------------


async def test_async_flow_never_uses_the_blocking_get_token(mod: Any) -> None:
    class NoSync(TokenProvider):
        def get_token(self, **kwargs: Any) -> Any:
            raise AssertionError("the async flow called the blocking get_token")

    fake = FakeNavro()
    transport = mod.MockTransport(fake)
    provider = NoSync(
        CREDS, async_transport=AsyncHttpxTransport(mod.AsyncClient(transport=transport))
    )
    async with mod.AsyncClient(transport=transport, auth=NavroAuth(provider)) as client:
        assert (await client.get(f"{BASE}/v1/ping")).status_code == 200
        fake.valid.clear()
        assert (await client.get(f"{BASE}/v1/ping")).status_code == 200


# -- token transports -------------------------------------------------------------------------


def test_token_request_is_never_redirected(mod: Any) -> None:
    seen: List[str] = []

    def handler(request: Any) -> Any:
        seen.append(str(request.url))
        return mod.Response(302, headers={"Location": "https://evil.test/steal"})

    following = mod.Client(transport=mod.MockTransport(handler), follow_redirects=True)
    transport = HttpxTransport(following)
    response = transport(build_token_request(CREDS), timeout=5)
    assert response.status_code == 302
    assert seen == [CREDS.token_url]
    seen.clear()
    auth = NavroAuth(CREDS, client=following)  # the named client follows redirects itself
    with mod.Client(transport=mod.MockTransport(handler), auth=auth) as client:
        with pytest.raises(TokenEndpointError) as caught:
            client.get(f"{BASE}/v1/ping")
    assert caught.value.status_code == 302
    assert seen == [CREDS.token_url]


def test_token_request_does_not_recurse_into_the_clients_own_auth(mod: Any) -> None:
    fake = FakeNavro()
    client = mod.Client(transport=mod.MockTransport(fake))
    auth = NavroAuth(CREDS, client=client)
    client.auth = auth  # the very client the token requests go through
    assert client.get(f"{BASE}/v1/ping").status_code == 200
    assert fake.token_requests[0].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("error_name", "expected"),
    [("ConnectError", TransportError), ("ReadTimeout", TokenTimeoutError)],
)
def test_transport_failures_become_typed_errors(mod: Any, error_name: str, expected: type) -> None:
    def handler(request: Any) -> Any:
        raise getattr(mod, error_name)(f"boom {SECRET}", request=request)

    sync = HttpxTransport(mod.Client(transport=mod.MockTransport(handler)))
    with pytest.raises(expected) as caught:
        sync(build_token_request(CREDS), timeout=5)
    assert isinstance(caught.value.__cause__, getattr(mod, error_name))
    assert SECRET not in str(caught.value)

    async def run() -> None:
        transport = AsyncHttpxTransport(mod.AsyncClient(transport=mod.MockTransport(handler)))
        with pytest.raises(expected) as caught:
            await transport(build_token_request(CREDS), timeout=5)
        assert isinstance(caught.value.__cause__, getattr(mod, error_name))

    asyncio.run(run())


def test_named_client_connection_refused_is_a_transport_error(mod: Any) -> None:
    creds = Credentials("id", SECRET, "acme", base_url="http://127.0.0.1:9")  # discard port
    with mod.Client() as client, pytest.raises(TransportError):
        HttpxTransport(client)(build_token_request(creds), timeout=2)

    async def run() -> None:
        async with mod.AsyncClient() as client:
            with pytest.raises(TransportError):
                await AsyncHttpxTransport(client)(build_token_request(creds), timeout=2)

    asyncio.run(run())


# -- against the sandbox ------------------------------------------------------------------------


def test_token_requests_go_through_the_client_itself(mod: Any) -> None:
    fake = FakeNavro()
    auth = NavroAuth(CREDS)  # no client named: the client the auth is attached to sends
    with mod.Client(transport=mod.MockTransport(fake), auth=auth) as client:
        assert client.get(f"{BASE}/v1/ping").status_code == 200
        assert client.get(f"{BASE}/v1/ping").status_code == 200
    assert len(fake.token_requests) == 1 and len(fake.api_requests) == 2


async def test_async_token_requests_go_through_the_client_itself(mod: Any) -> None:
    fake = FakeNavro()
    auth = NavroAuth(CREDS)
    async with mod.AsyncClient(transport=mod.MockTransport(fake), auth=auth) as client:
        statuses = await asyncio.gather(*(client.get(f"{BASE}/v1/ping") for _ in range(50)))
    assert {r.status_code for r in statuses} == {200}
    assert len(fake.token_requests) == 1  # one fetch for 50 concurrent tasks, through the client


def test_token_requests_use_the_proxy_of_the_client_they_go_through(
    mod: Any, sandbox: Sandbox
) -> None:
    # The API is reachable only through the proxy, and no client is named: the token request
    # goes through the client the auth is attached to, proxy included.
    auth = NavroAuth(behind_proxy(sandbox))
    with mod.Client(**httpx_proxy(mod, sandbox.base_url), trust_env=False, auth=auth) as proxied:
        assert proxied.get(f"{UNREACHABLE_BASE}/v1/ping").status_code == 200
    assert sandbox.stats().token_requests == 1


async def test_async_token_requests_use_the_proxy_of_the_client_they_go_through(
    mod: Any, sandbox: Sandbox
) -> None:
    auth = NavroAuth(behind_proxy(sandbox))
    async with mod.AsyncClient(
        **httpx_proxy(mod, sandbox.base_url), trust_env=False, auth=auth
    ) as proxied:
        assert (await proxied.get(f"{UNREACHABLE_BASE}/v1/ping")).status_code == 200
    assert sandbox.stats().token_requests == 1


def test_each_event_loop_fetches_through_its_own_client(mod: Any, sandbox: Sandbox) -> None:
    auth = NavroAuth(sandbox.credentials())

    async def once() -> int:
        async with mod.AsyncClient(auth=auth) as client:
            return (await client.get(f"{sandbox.base_url}/v1/ping")).status_code

    assert asyncio.run(once()) == 200
    token = auth.provider.token
    assert token is not None
    auth.provider.invalidate(token)
    assert asyncio.run(once()) == 200  # a new loop and client: the token request goes with it
    assert sandbox.stats().token_requests == 2


def test_token_requests_use_the_named_clients_proxy(mod: Any, sandbox: Sandbox) -> None:
    # The API is reachable only through the proxy: so is the token endpoint.
    with mod.Client(**httpx_proxy(mod, sandbox.base_url), trust_env=False) as proxied:
        proxied.auth = NavroAuth(behind_proxy(sandbox), client=proxied)
        assert proxied.get(f"{UNREACHABLE_BASE}/v1/ping").status_code == 200
    assert sandbox.stats().token_requests == 1


async def test_async_token_requests_use_the_named_clients_proxy(mod: Any, sandbox: Sandbox) -> None:
    async with mod.AsyncClient(**httpx_proxy(mod, sandbox.base_url), trust_env=False) as proxied:
        proxied.auth = NavroAuth(behind_proxy(sandbox), async_client=proxied)
        assert (await proxied.get(f"{UNREACHABLE_BASE}/v1/ping")).status_code == 200
    assert sandbox.stats().token_requests == 1


# -- which flavours are installed (subprocesses, so this process keeps its imports) -------------


def _run(code: str) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_import_error_names_the_extras_when_neither_is_installed() -> None:
    result = _run(
        """
        import json, sys
        sys.modules["httpx"] = None
        sys.modules["httpx2"] = None
        try:
            import navro_adapters.httpx
        except ImportError as exc:
            print(json.dumps({"message": str(exc)}))
        """
    )
    assert "pip install 'navro-adapters[httpx]'" in result["message"]
    assert "[httpx2]" in result["message"]


_ONE_FLAVOUR = """
    import json, sys
    sys.modules[{hidden!r}] = None
    import {used} as lib
    from navro_adapters.httpx import NavroAuth, installed_flavours
    from navro_adapters.sandbox import Sandbox
    with Sandbox() as sb:
        auth = NavroAuth(sb.credentials())
        with lib.Client(auth=auth) as client:
            status = client.get(sb.base_url + "/v1/ping").status_code
        token_requests = sb.stats().token_requests
    print(json.dumps({{"flavours": installed_flavours(), "status": status,
                      "is_auth": isinstance(auth, lib.Auth), "token_requests": token_requests}}))
"""


@pytest.mark.skipif("httpx2" not in FLAVOURS, reason="httpx2 is not installed")
def test_only_httpx2_installed() -> None:
    result = _run(_ONE_FLAVOUR.format(hidden="httpx", used="httpx2"))
    assert result["flavours"] == ["httpx2"]
    assert result["status"] == 200 and result["is_auth"]
    assert result["token_requests"] == 1


@pytest.mark.skipif("httpx" not in FLAVOURS, reason="httpx is not installed")
def test_only_httpx_installed() -> None:
    result = _run(_ONE_FLAVOUR.format(hidden="httpx2", used="httpx"))
    assert result["flavours"] == ["httpx"]
    assert result["status"] == 200 and result["is_auth"]
    assert result["token_requests"] == 1


@pytest.mark.skipif(
    "httpx2" not in FLAVOURS or not hasattr(importlib.import_module("httpx2"), "alias_httpx"),
    reason="needs httpx2 with alias_httpx() (httpx2 2.0.0 has none)",
)
def test_alias_httpx_makes_one_flavour() -> None:
    result = _run(
        """
        import json
        import httpx2
        httpx2.alias_httpx()
        import httpx
        from navro_adapters.httpx import NavroAuth, installed_flavours
        from navro_adapters.sandbox import Sandbox
        with Sandbox() as sb:
            with httpx.Client(auth=NavroAuth(sb.credentials())) as client:
                status = client.get(sb.base_url + "/v1/ping").status_code
        print(json.dumps({"flavours": installed_flavours(), "status": status,
                          "same": httpx is httpx2}))
        """
    )
    assert result == {"flavours": ["httpx"], "status": 200, "same": True}
