"""Authlib clients configured for Navro: requests ``OAuth2Session`` and httpx ``OAuth2Client``s.

Usage::

    from navro_adapters.authlib import async_oauth2_client, oauth2_client, oauth2_session

    session = oauth2_session(credentials)              # authlib requests_client.OAuth2Session
    session.get(f"{credentials.base_url}/v1/ping")     # the first request fetches a token

Each factory returns a subclass of the Authlib class, configured as Navro documents it: token
endpoint ``credentials.token_url``, ``client_secret_basic``, ``scope=openid``,
``grant_type=client_credentials`` and ``X-API-Version: 1`` on token and API requests.

Out of the box, Authlib's clients neither fetch the first client-credentials token nor share
one between threads, and they refresh a fixed 60 s before expiry (a fifth of a Navro token's
life). So every client here is backed by a :class:`~navro_adapters.TokenProvider`, which owns
the policy (cache, singleflight, refresh-ahead with margins proportional to the lifetime,
retries); the client only attaches tokens, and Authlib only performs the token request:

* default: a private provider whose transport is this client's own ``fetch_token`` (Authlib's
  client authentication, on the client's session: its proxies, TLS and pool);
* ``shared=True``: one provider per set of credentials in the process (see
  :func:`shared_provider`), so many clients in many threads use ONE token; the client that
  happens to need the fetch performs it with its own ``fetch_token``;
* a :class:`~navro_adapters.TokenProvider` as ``source``: that provider, with its own
  transports, so one token serves these clients and every other adapter in the process.

Whatever the mode, ``client.token`` is kept in sync with the token last attached, the token is
sent only to the API's origin (and ``extra_origins``), a 401 from the API invalidates the token
that was sent and the request is resent once, and token endpoint failures are raised as
:class:`~navro_adapters.NavroAuthError` subclasses, never as Authlib or HTTP-library errors.

Authlib APIs relied on (all present since Authlib 1.2): the ``OAuth2Session``, ``OAuth2Client``
and ``AsyncOAuth2Client`` constructors with ``token_endpoint``/``grant_type`` metadata,
``fetch_token(url, headers=..., grant_type=..., **session_kwargs)``, the
``access_token_response`` compliance hook, the ``token`` setter, ``request(...,
withhold_token=..., auth=...)`` and ``ensure_active_token``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import threading
import weakref
from typing import (
    Any,
    AsyncGenerator,
    Callable,
    Dict,
    Generator,
    Iterable,
    Mapping,
    Optional,
    Tuple,
    Union,
)

try:
    import requests
    import requests.auth
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
    from authlib.integrations.requests_client import OAuth2Session
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "navro_adapters.authlib needs Authlib>=1.2 with requests and httpx: "
        "pip install 'navro-adapters[authlib]'"
    ) from exc

from ._adapter import API_VERSION_HEADER, AUTHORIZATION, AdapterCore, AuthSource
from ._log import logger
from .credentials import Credentials
from .errors import ConfigurationError, TokenTimeoutError, TransportError
from .protocol import API_VERSION, TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token

__all__ = [
    "NavroAsyncOAuth2Client",
    "NavroOAuth2Client",
    "NavroOAuth2Session",
    "async_oauth2_client",
    "oauth2_client",
    "oauth2_session",
    "shared_provider",
]

GRANT_TYPE = "client_credentials"
SCOPE = "openid"  # per Navro's document
TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"  # HTTP Basic, per Navro's document
_UNAUTHORIZED = 401

#: Constructor arguments the factories set from the Credentials; passing them is an error.
RESERVED_KWARGS = frozenset(
    {
        "client_id",
        "client_secret",
        "token_endpoint",
        "token_endpoint_auth_method",
        "scope",
        "grant_type",
        "token",
        "token_placement",
        "update_token",
    }
)


def _httpx_module() -> Any:
    """The httpx package Authlib's httpx clients are built on (``httpx``, or ``httpx2`` for
    recent Authlib releases that prefer it), so our auth classes match the client's."""
    for cls in AsyncOAuth2Client.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    raise ImportError("Authlib's AsyncOAuth2Client is not built on an httpx AsyncClient")


_httpx: Any = _httpx_module()
_HttpxSyncClient: Any = next(c for c in OAuth2Client.__mro__ if c.__name__ == "Client")
_HttpxAsyncClient: Any = next(c for c in AsyncOAuth2Client.__mro__ if c.__name__ == "AsyncClient")
_USE_CLIENT_DEFAULT: Any = _httpx.USE_CLIENT_DEFAULT
_TIMEOUTS = (requests.Timeout, _httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)


# -- shared providers ------------------------------------------------------------------------

_shared_providers: weakref.WeakValueDictionary[Tuple[str, str], TokenProvider] = (
    weakref.WeakValueDictionary()
)
_shared_providers_lock = threading.Lock()  # taken only when a client is built, never per request


def shared_provider(credentials: Credentials) -> TokenProvider:
    """The process-wide provider ``shared=True`` clients with these credentials draw from.

    Kept while some client uses it. Its own transport is the standard-library default; clients
    pass their own ``fetch_token`` for the fetches they trigger.
    """
    key = (credentials.cache_key, credentials.base_url)
    with _shared_providers_lock:
        provider = _shared_providers.get(key)
        if provider is None:
            provider = TokenProvider(credentials)
            _shared_providers[key] = provider
        return provider


# -- token requests through Authlib's fetch_token ------------------------------------------------


class _Captured:
    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: Any = None


# The token response Authlib received, whatever fetch_token then made of it: the core parses
# it, so every error is one of ours. A context variable, so concurrent fetches never mix.
_capture_slot: contextvars.ContextVar[Optional[_Captured]] = contextvars.ContextVar(
    "navro_adapters_authlib_capture", default=None
)


def _capture_token_response(response: Any) -> Any:
    """Authlib ``access_token_response`` compliance hook: remember the raw response."""
    captured = _capture_slot.get()
    if captured is not None:
        captured.response = response
    return response


def _fetch_headers(request: TokenRequest) -> Dict[str, str]:
    # Authlib adds the Basic client authentication itself (client_secret_basic).
    return {k: v for k, v in request.headers.items() if k.lower() != "authorization"}


def _response_of(captured: _Captured, error: Optional[BaseException]) -> TransportResponse:
    response = captured.response
    if response is None:
        if error is None:
            raise TransportError("token request failed: Authlib returned no response")
        if isinstance(error, _TIMEOUTS):
            raise TokenTimeoutError("token request timed out") from error
        # The class name only: library messages can carry URLs and connection details.
        raise TransportError(f"token request failed: {type(error).__name__}") from error
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


def _fetch_sync(
    client: Any, redirect_kwarg: str, request: TokenRequest, timeout: float
) -> TransportResponse:
    captured = _Captured()
    reset = _capture_slot.set(captured)
    error: Optional[BaseException] = None
    try:
        client.fetch_token(
            request.url,
            headers=_fetch_headers(request),
            grant_type=GRANT_TYPE,
            timeout=timeout,
            **{redirect_kwarg: False},  # a redirect would carry the client secret elsewhere
        )
    except Exception as exc:  # Authlib's verdict is ignored: the core parses the response
        error = exc
    finally:
        _capture_slot.reset(reset)
    return _response_of(captured, error)


async def _fetch_async(client: Any, request: TokenRequest, timeout: float) -> TransportResponse:
    captured = _Captured()
    reset = _capture_slot.set(captured)
    error: Optional[BaseException] = None
    try:
        await client.fetch_token(
            request.url,
            headers=_fetch_headers(request),
            grant_type=GRANT_TYPE,
            timeout=timeout,
            follow_redirects=False,
        )
    except Exception as exc:
        error = exc
    finally:
        _capture_slot.reset(reset)
    return _response_of(captured, error)


def _token_dict(token: Token) -> Dict[str, Any]:
    """The token as Authlib keeps it (``client.token``)."""
    data: Dict[str, Any] = {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "expires_in": int(token.expires_in),
        "expires_at": int(token.expires_at_wall),
    }
    if token.scope is not None:
        data["scope"] = token.scope
    return data


# -- what every Navro-configured client shares ---------------------------------------------------


class _Binding:
    """One client's token source: its AdapterCore plus the per-call transports it passes.

    Every token lookup goes through the provider (lock-free when the token is fresh); the
    client's Authlib state (``token``, ``leeway``) is updated only when the token changes.
    """

    __slots__ = ("async_transport", "client", "core", "provider", "sync_transport", "synced")

    def __init__(
        self,
        client: Any,
        source: AuthSource,
        *,
        shared: bool,
        extra_origins: Iterable[str],
        sync_fetch: Optional[Callable[..., TransportResponse]],
        async_fetch: Optional[Callable[..., Any]],
    ) -> None:
        self.client = client
        self.sync_transport: Any = None
        self.async_transport: Any = None
        if isinstance(source, Credentials) and shared:
            # The shared provider fetches with whichever client needs the token first.
            source = shared_provider(source)
            self.sync_transport, self.async_transport = sync_fetch, async_fetch

        def make_provider(credentials: Credentials) -> TokenProvider:
            return TokenProvider(credentials, transport=sync_fetch, async_transport=async_fetch)

        self.core = AdapterCore(source, extra_origins=extra_origins, make_provider=make_provider)
        self.provider = self.core.provider
        self.synced: Optional[Token] = None

    def token(self) -> Token:
        token = self.provider.get_token(transport=self.sync_transport)
        if token is not self.synced:
            self._sync(token)
        return token

    async def atoken(self) -> Token:
        token = self.provider.fresh_token() or await self.provider.aget_token(
            transport=self.async_transport
        )
        if token is not self.synced:
            self._sync(token)
        return token

    def _sync(self, token: Token) -> None:
        self.synced = token
        self.client.token = _token_dict(token)
        # Authlib's own expiry checks, should anything call them, use the core's margin.
        self.client.leeway = int(self.provider.refresh_policy.margins(token.expires_in)[0])

    def owns(self, authorization: Optional[str]) -> bool:
        """Whether a header value is a bearer token this client attached."""
        if authorization is None:
            return False
        synced, current = self.synced, self.provider.token
        return any(t is not None and t.authorization == authorization for t in (synced, current))

    def describe(self, name: str) -> str:
        token = self.synced
        shown = token.fingerprint if token is not None else None
        return (
            f"{name}(client_id={self.core.credentials.client_id!r}, token={shown!r}, "
            f"scope={self.core.scope!r})"
        )


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise ConfigurationError(reserved[0], "is set from the Navro Credentials; do not pass it")


def _authlib_config(source: object) -> Dict[str, Any]:
    if isinstance(source, TokenProvider):
        credentials = source.credentials
    elif isinstance(source, Credentials):
        credentials = source
    else:
        raise ConfigurationError(
            "credentials",
            "must be navro_adapters.Credentials or navro_adapters.TokenProvider, "
            f"not {type(source).__name__}",
        )
    return {
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "token_endpoint": credentials.token_url,
        "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
        "scope": SCOPE,
        "grant_type": GRANT_TYPE,
    }


def _set_api_headers(headers: Any, token: Token) -> None:
    headers[AUTHORIZATION] = token.authorization
    if API_VERSION_HEADER not in headers:  # the caller's X-API-Version wins
        headers[API_VERSION_HEADER] = API_VERSION


# -- requests: OAuth2Session -------------------------------------------------------------------


def _replayable_body(body: object) -> bool:
    """Whether a prepared body can be sent again (a generator or file object is one-shot)."""
    return body is None or isinstance(body, (bytes, str))


class _RequestsBearer(requests.auth.AuthBase):
    """Attaches the token to in-scope requests; on a 401, resends once with a new token."""

    def __init__(self, binding: _Binding) -> None:
        self._binding = binding

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        binding = self._binding
        if request.url is None or not binding.core.applies_to(request.url):
            return request
        token = binding.token()
        _set_api_headers(request.headers, token)
        hook = functools.partial(self._after_response, token)
        request.register_hook("response", hook)  # type: ignore[no-untyped-call,unused-ignore]
        return request

    def _after_response(
        self, sent: Token, response: requests.Response, **send_kwargs: Any
    ) -> requests.Response:
        request = response.request
        # Session.send runs this hook for redirect hops too: act only on the request we signed.
        if (
            response.status_code != _UNAUTHORIZED
            or request.headers.get(AUTHORIZATION) != sent.authorization
        ):
            return response
        binding = self._binding
        binding.provider.invalidate(sent)
        if not _replayable_body(request.body):
            logger.debug("401 for token %s; one-shot body, not resent", sent.fingerprint)
            return response
        response.content  # noqa: B018 - read to the end so the connection is reused
        response.close()
        token = binding.token()
        logger.debug("API answered 401 for token %s; resending once", sent.fingerprint)
        retry = request.copy()
        retry.headers[AUTHORIZATION] = token.authorization
        # Straight to the adapter, as requests' digest auth does: hooks do not run again, so
        # there is no second resend.
        second: requests.Response = response.connection.send(retry, **send_kwargs)
        second.history.append(response)
        second.request = retry
        return second


class NavroOAuth2Session(OAuth2Session):  # type: ignore[misc,unused-ignore]
    """Authlib's requests ``OAuth2Session`` for Navro; build it with :func:`oauth2_session`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Validate before an instance exists: Authlib's __del__ fails on a half-built client.
        # (No arguments at all is copy/pickle re-creating an instance: nothing to check.)
        if args or kwargs:
            _check_kwargs(kwargs)
            _authlib_config(args[0] if args else kwargs.get("source"))
        return super().__new__(cls)

    def __init__(
        self,
        source: AuthSource,
        *,
        shared: bool = False,
        extra_origins: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**_authlib_config(source), **kwargs)
        self.register_compliance_hook("access_token_response", _capture_token_response)
        self._navro = _Binding(
            self,
            source,
            shared=shared,
            extra_origins=extra_origins,
            sync_fetch=self._navro_fetch,
            async_fetch=None,
        )
        self._navro_auth = _RequestsBearer(self._navro)

    def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return _fetch_sync(self, "allow_redirects", request, timeout)

    @property
    def navro_provider(self) -> TokenProvider:
        """The token provider this session draws from."""
        return self._navro.provider

    def request(  # type: ignore[override,unused-ignore]
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = None, **kwargs: Any
    ) -> requests.Response:
        if not withhold_token and auth is None:
            auth = self._navro_auth
        response: requests.Response = super().request(
            method, url, withhold_token=withhold_token, auth=auth, **kwargs
        )
        return response

    def ensure_active_token(self, token: Any = None) -> bool:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self._navro.token()
        return True

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        # requests keeps Authorization on an http -> https redirect to the same host; our
        # token still never leaves its origins.
        super().rebuild_auth(prepared_request, response)
        url = prepared_request.url
        if (
            url is not None
            and self._navro.owns(prepared_request.headers.get(AUTHORIZATION))
            and not self._navro.core.applies_to(url)
        ):
            del prepared_request.headers[AUTHORIZATION]

    def __repr__(self) -> str:
        return self._navro.describe(type(self).__name__)


# -- httpx: OAuth2Client and AsyncOAuth2Client --------------------------------------------------


def _replayable(request: Any) -> bool:
    """Whether an httpx request's body is in memory (a generator or stream is one-shot)."""
    try:
        request.content  # noqa: B018 - raises RequestNotRead for a streaming body
    except _httpx.RequestNotRead:
        return False
    return True


class _HttpxBearer(_httpx.Auth):  # type: ignore[misc]
    """httpx Auth flow: attach the token in scope; on a 401, resend once with a new token."""

    def __init__(self, binding: _Binding) -> None:
        self._binding = binding

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        binding = self._binding
        if not binding.core.applies_to(str(request.url)):
            yield request
            return
        sent = binding.token()
        _set_api_headers(request.headers, sent)
        response = yield request
        if response.status_code != _UNAUTHORIZED:
            return
        binding.provider.invalidate(sent)
        if not _replayable(request):
            return
        token = binding.token()
        request.headers[AUTHORIZATION] = token.authorization
        yield request

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        binding = self._binding
        if not binding.core.applies_to(str(request.url)):
            yield request
            return
        sent = await binding.atoken()
        _set_api_headers(request.headers, sent)
        response = yield request
        if response.status_code != _UNAUTHORIZED:
            return
        binding.provider.invalidate(sent)
        if not _replayable(request):
            return
        token = await binding.atoken()
        request.headers[AUTHORIZATION] = token.authorization
        yield request


def _is_default(auth: Any) -> bool:
    # Authlib treats both as "the client's own token" (older releases used None).
    return auth is None or auth is _USE_CLIENT_DEFAULT


def _add_request_hook(client: Any, hook: Callable[..., Any]) -> None:
    hooks = client.event_hooks
    hooks["request"] = [*hooks.get("request", []), hook]
    client.event_hooks = hooks


class NavroOAuth2Client(OAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``OAuth2Client`` for Navro; build it with :func:`oauth2_client`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Validate before an instance exists: Authlib's __del__ fails on a half-built client.
        # (No arguments at all is copy/pickle re-creating an instance: nothing to check.)
        if args or kwargs:
            _check_kwargs(kwargs)
            _authlib_config(args[0] if args else kwargs.get("source"))
        return super().__new__(cls)

    def __init__(
        self,
        source: AuthSource,
        *,
        shared: bool = False,
        extra_origins: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**_authlib_config(source), **kwargs)
        self.register_compliance_hook("access_token_response", _capture_token_response)
        self._navro = _Binding(
            self,
            source,
            shared=shared,
            extra_origins=extra_origins,
            sync_fetch=self._navro_fetch,
            async_fetch=None,
        )
        self._navro_auth = _HttpxBearer(self._navro)
        _add_request_hook(self, self._navro_strip_foreign)

    def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return _fetch_sync(self, "follow_redirects", request, timeout)

    def _navro_strip_foreign(self, request: Any) -> None:
        # Runs for every redirect hop: httpx keeps Authorization on an http -> https hop.
        if self._navro.owns(request.headers.get(AUTHORIZATION)) and not self._navro.core.applies_to(
            str(request.url)
        ):
            del request.headers[AUTHORIZATION]

    @property
    def navro_provider(self) -> TokenProvider:
        """The token provider this client draws from."""
        return self._navro.provider

    def request(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        if not withhold_token and _is_default(auth):
            auth = self._navro_auth
        return super().request(method, url, withhold_token=withhold_token, auth=auth, **kwargs)

    def stream(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        if not withhold_token and _is_default(auth):
            auth = self._navro_auth
        # httpx's own stream: Authlib's override (where there is one) adds nothing here.
        return _HttpxSyncClient.stream(self, method, url, auth=auth, **kwargs)

    def ensure_active_token(self, token: Any = None) -> bool:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self._navro.token()
        return True

    def __repr__(self) -> str:
        return self._navro.describe(type(self).__name__)


class NavroAsyncOAuth2Client(AsyncOAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``AsyncOAuth2Client`` for Navro; build it with
    :func:`async_oauth2_client`. Never blocks the event loop."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Validate before an instance exists: Authlib's __del__ fails on a half-built client.
        # (No arguments at all is copy/pickle re-creating an instance: nothing to check.)
        if args or kwargs:
            _check_kwargs(kwargs)
            _authlib_config(args[0] if args else kwargs.get("source"))
        return super().__new__(cls)

    def __init__(
        self,
        source: AuthSource,
        *,
        shared: bool = False,
        extra_origins: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**_authlib_config(source), **kwargs)
        self.register_compliance_hook("access_token_response", _capture_token_response)
        self._navro = _Binding(
            self,
            source,
            shared=shared,
            extra_origins=extra_origins,
            sync_fetch=None,
            async_fetch=self._navro_fetch,
        )
        self._navro_auth = _HttpxBearer(self._navro)
        _add_request_hook(self, self._navro_strip_foreign)

    async def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return await _fetch_async(self, request, timeout)

    async def _navro_strip_foreign(self, request: Any) -> None:
        # Runs for every redirect hop: httpx keeps Authorization on an http -> https hop.
        if self._navro.owns(request.headers.get(AUTHORIZATION)) and not self._navro.core.applies_to(
            str(request.url)
        ):
            del request.headers[AUTHORIZATION]

    @property
    def navro_provider(self) -> TokenProvider:
        """The token provider this client draws from."""
        return self._navro.provider

    async def request(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        if not withhold_token and _is_default(auth):
            auth = self._navro_auth
        return await super().request(
            method, url, withhold_token=withhold_token, auth=auth, **kwargs
        )

    def stream(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        if not withhold_token and _is_default(auth):
            auth = self._navro_auth
        # httpx's own stream (an async context manager); Authlib's override adds nothing here.
        return _HttpxAsyncClient.stream(self, method, url, auth=auth, **kwargs)

    async def ensure_active_token(self, token: Any = None) -> None:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        await self._navro.atoken()

    def __repr__(self) -> str:
        return self._navro.describe(type(self).__name__)


# -- the factories ---------------------------------------------------------------------------------


def oauth2_session(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroOAuth2Session:
    """An Authlib requests ``OAuth2Session`` configured for Navro.

    ``source`` is the Navro credentials or a shared provider; ``shared=True`` makes every
    client with the same credentials use one token; ``extra_origins`` are further origins the
    token may be sent to; other keyword arguments go to ``OAuth2Session`` (``default_timeout``,
    ``leeway`` is ignored: the provider's refresh policy decides).
    """
    return NavroOAuth2Session(source, shared=shared, extra_origins=extra_origins, **kwargs)


def oauth2_client(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroOAuth2Client:
    """An Authlib httpx ``OAuth2Client`` configured for Navro (see :func:`oauth2_session`);
    keyword arguments go to the client (``timeout``, ``verify``, ``proxy``, ``transport``...)."""
    return NavroOAuth2Client(source, shared=shared, extra_origins=extra_origins, **kwargs)


def async_oauth2_client(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroAsyncOAuth2Client:
    """An Authlib httpx ``AsyncOAuth2Client`` configured for Navro (see :func:`oauth2_session`).

    Create it on the event loop that will use it, like any httpx ``AsyncClient``.
    """
    return NavroAsyncOAuth2Client(source, shared=shared, extra_origins=extra_origins, **kwargs)
